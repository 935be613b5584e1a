// Package sdlab is vipkeeper's systemd lab: Debian containers booted by
// systemd-nspawn with systemd as their PID 1, each in a network namespace
// of its own, so that the packages can be tested the way users meet them:
// `dpkg -i` and apt, the maintainer scripts, `systemctl status`, the
// journal, keepalived reloaded through systemd's D-Bus API, the watchdog.
//
// It owns:
//   - the root file system: scripts/rootfs.sh builds a debootstrap minbase
//     tree with cloud-init once into a cache directory (EnsureRootfs);
//     every container boots from an overlay whose lower layer is that
//     tree, so it is never written to and a container costs one mount;
//   - the lab (New): network namespaces, veth pairs and bridges (made
//     through harness/netns, which tests also use for listeners and
//     clients inside a namespace), containers (Lab.Boot), and Close, which powers every container off (killing it
//     by PID when it does not stop), unmounts the overlays, removes each
//     container's cgroups and deletes the namespaces, also after a
//     failure;
//   - a container's view (Container): commands run inside with nsenter,
//     files written, units and the journal read;
//   - cloud-init's seed (BootOptions.UserData): a VM container boots with
//     a NoCloud seed whose user-data is one of vipkeeper's cloud-init
//     examples, and Debian's cloud-init runs it during the boot, so the
//     examples themselves are what the tests run; Container.CloudInit
//     reports how it went (status, errors, schema, warnings).
//
// Everything needs root; Available says why it cannot run here. The
// privileged tests skip with that reason and run in CI as root.
package sdlab
