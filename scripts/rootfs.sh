#!/usr/bin/env bash
# Builds (once) the Debian root file system that harness/sdlab boots as
# systemd containers: a debootstrap minbase of bookworm with systemd as
# init, D-Bus, iproute2, keepalived, nftables, nginx and cloud-init,
# prepared to boot quickly under systemd-nspawn. Prints the path of the
# finished tree.
#
#   scripts/rootfs.sh          build unless cached, print the tree's path
#   scripts/rootfs.sh --path   print the path the tree has (or would have)
#
# The tree is a cache: $VIPKEEPER_SDLAB_CACHE/rootfs-SUITE-KEY, where KEY
# is a hash of this script (edit the script, get a new tree). Containers
# never write to it: harness/sdlab mounts an overlay per container with the
# tree as the read-only lower layer. Concurrent runs wait for each other on
# a lock; a half-built tree is never visible under the final name.
#
# Environment:
#   VIPKEEPER_SDLAB_CACHE  cache directory (/var/cache/vipkeeper-sdlab)
#   SUITE                  Debian suite (bookworm)
#   MIRROR                 Debian mirror (the one apt uses here, else
#                          http://deb.debian.org/debian)
# The network is needed only while debootstrap and apt download packages;
# the downloaded .debs stay in CACHE/debs so a rebuild downloads nothing
# new.
# Needs root, debootstrap (apt-get install debootstrap systemd-container).
set -euo pipefail

cache=${VIPKEEPER_SDLAB_CACHE:-/var/cache/vipkeeper-sdlab}
suite=${SUITE:-bookworm}
script="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
key=$(sha256sum "$script" | cut -c1-12)
tree="$cache/rootfs-$suite-$key"

# Everything the guests and hosts of the lab run, besides our packages:
# systemd as PID 1, D-Bus (the agent reloads keepalived through it),
# keepalived (the agent package depends on it), nftables (hostsync's EIP
# data plane), nginx-light (the seed's service and its health check),
# curl and ca-certificates (the cloud-init examples fetch the package with
# curl), procps, and init-system-helpers (deb-systemd-helper for the
# maintainer scripts).
packages=systemd,systemd-sysv,dbus,iproute2,keepalived,nftables,nginx-light,curl,ca-certificates,procps,init-system-helpers

# cloud-init, as a cloud image has it: the lab's guests are set up by the
# repository's cloud-init examples, run by cloud-init itself from a
# NoCloud seed (harness/sdlab writes it into each guest). Installed with
# apt in the tree after debootstrap (debootstrap resolves no alternatives
# nor versions), without recommends (cloud-guest-utils, sudo).
apt_packages=(cloud-init)

# Units that only slow a container's boot down or wake it up later:
# consoles nobody logs in on, apt and maintenance timers.
mask_units=(
	console-getty.service
	container-getty@.service
	getty.target
	apt-daily.timer
	apt-daily-upgrade.timer
	dpkg-db-backup.timer
	fstrim.timer
	e2scrub_all.timer
	systemd-tmpfiles-clean.timer
)

if [[ ${1:-} == --path ]]; then
	echo "$tree"
	exit 0
fi
[[ $# -eq 0 ]] || { echo "usage: $0 [--path]" >&2; exit 2; }

# mirror prints the Debian archive apt uses for $suite: the first URI of a
# deb822 stanza or one-line entry whose suites include it exactly.
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -r $f ]] || continue
		awk -v suite="$suite" '
			function flush() { if (uri != "" && ok && !done) { print uri; done = 1 } uri = ""; ok = 0 }
			/^[ \t]*$/ { flush(); next }
			/^[ \t]*#/ { next }
			tolower($1) == "uris:" { uri = $2 }
			tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
			END { flush() }' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -r $f ]] || continue
		awk -v suite="$suite" '
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == suite) print $i
			}' "$f"
	done
}

if [[ -f $tree/.vipkeeper-sdlab ]]; then
	echo "$tree"
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "rootfs: needs root" >&2
	exit 1
fi
command -v debootstrap >/dev/null || {
	echo "rootfs: debootstrap is missing (apt-get install debootstrap systemd-container)" >&2
	exit 1
}
mkdir -p "$cache/debs"
exec 9>"$cache/.lock"
flock 9
# Another run may have finished it while this one waited.
if [[ -f $tree/.vipkeeper-sdlab ]]; then
	echo "$tree"
	exit 0
fi

MIRROR=${MIRROR:-$(mirror | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# debootstrap downloads with wget, which reads http_proxy, not apt's
# configuration: pass apt's proxy on when it has one.
if [[ -z ${http_proxy:-} ]] && command -v apt-config >/dev/null; then
	eval "$(apt-config shell http_proxy Acquire::http::Proxy)"
	[[ -n ${http_proxy:-} ]] && export http_proxy
fi

tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
start=$(date +%s)
echo "rootfs: debootstrap $suite from $MIRROR into $tree" >&2
if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
	"$suite" "$tmp" "$MIRROR" >"$cache/debootstrap.log" 2>&1; then
	tail -n 30 "$cache/debootstrap.log" >&2
	[[ -f $tmp/debootstrap/debootstrap.log ]] && tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2
	echo "rootfs: debootstrap failed (full log: $cache/debootstrap.log)" >&2
	exit 1
fi

debootstrapped=$(date +%s)
# apt inside the tree, from the sources.list debootstrap wrote, with the
# .debs of earlier builds; no service starts in the chroot.
cp -l "$cache/debs/"*.deb "$tmp/var/cache/apt/archives/" 2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 0755 "$tmp/usr/sbin/policy-rc.d"
apt_in() {
	chroot "$tmp" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 \
		${http_proxy:+http_proxy=$http_proxy} apt-get --quiet --assume-yes "$@"
}
if ! { apt_in update && apt_in install --no-install-recommends "${apt_packages[@]}"; } >"$cache/apt.log" 2>&1; then
	tail -n 30 "$cache/apt.log" >&2
	echo "rootfs: apt-get install ${apt_packages[*]} failed (full log: $cache/apt.log)" >&2
	exit 1
fi
cp -n "$tmp/var/cache/apt/archives/"*.deb "$cache/debs/" 2>/dev/null || true
rm -f "$tmp/usr/sbin/policy-rc.d"
installed=$(date +%s)
# cloud-init runs only where harness/sdlab boots a container with a seed
# (and its configuration, /etc/cloud/cloud.cfg.d/99-lab.cfg); it writes
# /etc/cloud/cloud-init.disabled into every other container.
chroot "$tmp" systemctl mask --quiet "${mask_units[@]}"
# The journal in memory: the lab's containers live for minutes.
mkdir -p "$tmp/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' >"$tmp/etc/systemd/journald.conf.d/sdlab.conf"
# The hostname is the container's machine name (debootstrap copied this
# machine's), and every container gets a machine id of its own at boot.
rm -f "$tmp/etc/hostname"
: >"$tmp/etc/machine-id"
rm -f "$tmp/var/lib/dbus/machine-id"
# The containers reach no Debian mirror: no sources (apt-get update reads
# only what a test adds), no package lists, no cache.
rm -f "$tmp/etc/apt/sources.list"
find "$tmp/var/cache/apt/archives" "$tmp/var/lib/apt/lists" -maxdepth 1 -type f -delete
rm -f "$tmp/var/cache/apt/"*.bin
# Nor any name server: debootstrap copied this machine's, which no
# container may send to (nspawn --resolv-conf=off leaves the file as is).
: >"$tmp/etc/resolv.conf"
rm -rf "$tmp/debootstrap"
printf 'suite=%s\nmirror=%s\npackages=%s %s\nbuilt=%s\nseconds=%s\n' \
	"$suite" "$MIRROR" "$packages" "${apt_packages[*]}" "$(date -u +%FT%TZ)" "$(($(date +%s) - start))" >"$tmp/.vipkeeper-sdlab"
mv "$tmp" "$tree"
trap - EXIT
# Trees of older versions of this script go, unless a lab still boots
# from one (it is the lower layer of a mounted overlay).
for old in "$cache"/rootfs-"$suite"-*; do
	[[ $old != "$tree" && -d $old ]] || continue
	grep -qF "lowerdir=$old," /proc/self/mountinfo || rm -rf "$old"
done
echo "rootfs: ready in $(($(date +%s) - start)) s (debootstrap $((debootstrapped - start)) s, apt-get install ${apt_packages[*]} $((installed - debootstrapped)) s), $(du -sm "$tree" | cut -f1) MB" >&2
echo "$tree"
