package hostsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/neigh"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// ErrForgedObservation is returned (wrapped) by Observe for ARP that did
// not come from the bridge port its MAC is pinned to (a guest sending
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
func (s *Service) checkPort(ctx context.Context, o garp.Observation) error {
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
	kind := "gratuitous ARP"
	if o.Reply {
		kind = "ARP reply"
	}
	s.log.Warn(msgObservationRefused, "op", "observe", "group", group, "vip", vip, "iface", o.Port,
		"mac", o.MAC.String(), "pinned", o.Pinned, "kind", kind, "result", result)
	s.metrics.observationRefused(result)
	return fmt.Errorf("%w: %s for %s came in on port %s, but %s", ErrForgedObservation, kind, vip, o.Port, why)
}

// pinRefresh is how often the bridge's FDB is read into the pin table.
// A member's own traffic (DHCP, ARP, VRRP) pins its MAC within one period
// of its first frame; a GARP from a MAC not pinned yet is refused, so the
// period is short.
const pinRefresh = time.Second

// bridgeListen is the ListenFunc for a Linux bridge: observations carry the
// port the frame came in on and the port its MAC is pinned to, and the
// pin table is refreshed from the bridge's FDB every pinRefresh while it
// runs (and once before the first frame is read).
func bridgeListen(b *neigh.Bridge, log *slog.Logger) ListenFunc {
	return func(ctx context.Context, watch func(netip.Addr) bool, report func(garp.Observation)) error {
		if err := b.Refresh(); err != nil {
			return fmt.Errorf("hostsync: %w", err)
		}
		l, c, err := garp.OpenPortListener(b.Name(), b.Port, watch, garp.ListenerOptions{Logger: log})
		if err != nil {
			return fmt.Errorf("hostsync: %w", err)
		}
		defer c.Close()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		refreshed := make(chan struct{})
		go func() {
			defer close(refreshed)
			t := time.NewTicker(pinRefresh)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := b.Refresh(); err != nil {
						log.Warn("garp: refresh bridge port pins", "iface", b.Name(), "err", err)
					}
				}
			}
		}()
		defer func() { cancel(); <-refreshed }()
		return l.Run(ctx, func(o garp.Observation) {
			o.Pinned, _ = b.Pinned(o.MAC)
			report(o)
		})
	}
}

// openListen returns the passive GARP ListenFunc for iface: attributed to
// bridge ports when iface is a Linux bridge, else by MAC only (an
// interface with a single peer, or one behind a switch that enforces port
// security), which is logged once at start.
func openListen(iface string, log *slog.Logger) (ListenFunc, error) {
	b, err := neigh.NewBridge(nil, iface)
	switch {
	case err == nil:
		return bridgeListen(b, log), nil
	case !errors.Is(err, neigh.ErrNotBridge):
		return nil, fmt.Errorf("hostsync: garp interface: %w", err)
	}
	log.Warn("garp: interface is not a Linux bridge: passive GARP is believed by MAC only, without a port check", "iface", iface)
	return func(ctx context.Context, watch func(netip.Addr) bool, report func(garp.Observation)) error {
		l, c, err := garp.OpenListener(iface, watch, garp.ListenerOptions{Logger: log})
		if err != nil {
			return err
		}
		defer c.Close()
		return l.Run(ctx, report)
	}, nil
}
