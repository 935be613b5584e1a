// Package hostsync is vipkeeper-hostsync, the daemon on each hypervisor
// host: its configuration, Run and the wiring of the host side (Platform:
// the GARP sender and listener, the data-plane backend, the neighbour
// table), the host's etcd lease, and the guest and admin HTTP APIs.
// Run(ctx, cfg, log) has the agent's shape: it opens the Platform itself;
// the configuration loads through internal/config (unknown keys refused,
// errors are *config.Error) and the daemon plumbing (admin socket,
// sd_notify and the watchdog, metrics registry, serving) is
// internal/daemon's, shared with the agent.
//
// The work is done in its sub-packages, each owning one thing:
// hostsync/inventory holds the registry's networks, guests, instance
// groups, VIPs and EIPs with the platform's rules and admin operations;
// hostsync/ownership is the engine that, when a VIP moves, records the new
// owner with a compare-and-swap, starts the GARP burst for it and
// re-points the EIP mapping; hostsync/registry is the storage (bbolt on
// one host, etcd shared by several hosts and gateways), hostsync/garp the
// ARP frames and hostsync/eip the data plane. Imports point only down:
// hostsync → ownership → inventory → registry.
package hostsync
