package ownership

import (
	"context"
	"fmt"

	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// ErrForgedObservation is returned (wrapped) by Observe for ARP (or a
// neighbour advertisement) that did not come from the bridge port its MAC
// is pinned to (a guest sending
// another guest's MAC), or whose MAC the bridge never learnt before the
// frame. It wraps inventory.ErrForbidden: nothing is recorded or announced.
var ErrForgedObservation = fmt.Errorf("%w: ARP from the wrong bridge port", inventory.ErrForbidden)

// Observation results counted in garp_observations_total when the port
// check refuses one.
const (
	observationForged     = "forged"
	observationUnverified = "unverified"
)

const msgObservationRefused = "garp: observation refused: the frame came in on another bridge port than the MAC it names"

// checkPort refuses an observation whose frame did not come in on the
// port its MAC is pinned to: on a plain Linux bridge any guest can send
// any source MAC, and only the ingress port tells guests apart. An
// observation without a port (a platform that cannot attribute ports)
// passes. A refusal is logged with the group, VIP and port and
// counted; it runs before the claim queue, so a refused observation is
// never queued either.
func (s *Engine) checkPort(ctx context.Context, o garp.Observation) error {
	if o.Port == "" || (o.Pinned != "" && o.Port == o.Pinned) {
		return nil
	}
	result, why := observationForged, fmt.Sprintf("MAC %s is pinned to port %s", o.MAC, o.Pinned)
	if o.Pinned == "" {
		result, why = observationUnverified, fmt.Sprintf("the bridge had not learnt MAC %s on any port before", o.MAC)
	}
	vip := o.VIP.Unmap()
	group := ""
	// Best effort, for the log only: the refusal does not depend on it.
	_ = s.store.View(ctx, func(tx registry.Tx) error {
		g, err := inventory.GroupByVIP(tx, vip)
		group = g.Name
		return err
	})
	kind := observationKind(o)
	s.log.Warn(msgObservationRefused, "op", "observe", "group", group, "vip", vip, "iface", o.Port,
		"mac", o.MAC.String(), "pinned", o.Pinned, "kind", kind, "result", result)
	s.metrics.observationRefused(result)
	return fmt.Errorf("%w: %s for %s came in on port %s, but %s", ErrForgedObservation, kind, vip, o.Port, why)
}
