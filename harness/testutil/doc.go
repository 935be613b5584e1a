// Package testutil holds the small helpers every package's tests share:
// the TCP listeners this process holds, a scrape of a Prometheus text
// endpoint, a slog handler that keeps each message's attributes, the rule
// for privileged tests (skip with the reason, or fail under
// VIPKEEPER_REQUIRE_PRIVILEGED=1), a network namespace per test,
// removed when it ends (built on harness/netns), and a stand-in process
// under a chosen name (StartStandIn: a "keepalived" that survives
// SIGHUP). Only tests import it.
package testutil
