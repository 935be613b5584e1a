#!/usr/bin/env bash
# Installs what vipkeeper's tests and demo use from Debian when it is missing:
# keepalived (the VRRP daemon the agent drives), nftables (the EIP data plane),
# iproute2 (network namespaces for the lab), nginx (the lab's web service),
# plus any package names given as arguments (make deps passes the Makefile's
# TEST_DEPS). Needs root and apt-get; without them it says what is missing
# and the privileged tests skip with a reason (or fail, with
# VIPKEEPER_REQUIRE_PRIVILEGED=1 as in CI).
# Services of the installed packages are not started on this machine.
set -euo pipefail
need=()
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing ${need[*]} (install them as root with apt-get); privileged tests will skip" >&2
  exit 0
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep the packages' own services (keepalived.service, nginx.service) from
# starting here: the lab runs its own instances inside namespaces.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
