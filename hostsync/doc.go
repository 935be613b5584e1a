// Package hostsync is vipkeeper-hostsync, the daemon on each hypervisor
// host. It owns the registry of networks, guests, instance groups, VIPs and
// EIPs with the platform's rules (package hostsync/inventory), the admin API vipctl drives
// over a unix socket, the guest API that serves each member its group's
// metadata and takes its ownership claims, and the engine that, when a VIP
// moves, records the new owner with a compare-and-swap, sends gratuitous
// ARP for it and re-points the EIP mapping in the data plane.
//
// Storage is package hostsync/registry (bbolt on one host, etcd shared by
// several hosts and gateways, which follow it with a watch: store.go), GARP is hostsync/garp and
// the data plane is hostsync/eip; Service reaches them through the small
// interfaces Announcer and eip.Backend, so tests use recording fakes.
package hostsync
