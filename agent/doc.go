// Package agent is vipkeeper-agent, the daemon inside each VM of an
// instance group. It owns, on its VM:
//
//   - the apply loop: fetch the group's VIP metadata (hostsync's guest API
//     with ETag, or a file written by cloud-init; package agent/metadata),
//     render keepalived.conf and scripts (package render), validate them with
//     `keepalived --config-test` in a staging directory, install them
//     atomically and reload keepalived (systemd D-Bus or SIGHUP, package
//     agent/keepalived) only when
//     the content changed. A failure keeps the last good files.
//   - ownership tracking: keepalived's notify hook (`vipctl notify`) hands
//     state changes over the control socket, or through the spool directory
//     while the agent is down; netlink tells whether the VIP is on the
//     interface (the ground truth); both are reconciled, and a VIP left
//     behind by a dead keepalived is removed.
//   - the state database (bbolt, package agent/state): role and since
//     when, the applied hash, a bounded transition history and a durable
//     outbox of transitions, reported to hostsync with retries (idempotent
//     by member + sequence).
//   - the control socket (status, history, refresh) and systemd
//     notification (READY=1, STATUS=, WATCHDOG=1).
//   - Prometheus metrics (Metrics), served on metrics_listen when it is
//     set (off by default).
//
// Files it owns: keepalived.conf, the scripts directory, state_dir
// (agent.db, stage/), the spool directory and the control socket.
package agent
