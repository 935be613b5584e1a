// Package packaging holds how vipkeeper is installed: the nfpm specs of the
// vipkeeper-agent and vipkeeper-hostsync .deb and .rpm packages (nfpm/),
// their systemd units and the keepalived.service drop-in (systemd/), the
// maintainer scripts per format (scripts/deb, scripts/rpm), the default
// configuration files (etc/) and cloud-init examples (cloud-init/).
// scripts/packages.sh (`make packages`) builds the packages.
//
// It has no Go API. Its tests build the packages and check their contents,
// modes, dependencies and scripts; run the maintainer scripts against fake
// systemctl and deb-systemd-helper; install, upgrade, remove and purge the
// .deb in a throwaway dpkg root; verify the units with systemd-analyze; and
// check the default configuration files and cloud-init examples against
// the daemons' own parsers and cloud-init's schema.
package packaging
