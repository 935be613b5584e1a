package ownership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/neigh"
)

// ListenFunc runs passive GARP detection until ctx ends: it calls report
// for each gratuitous ARP seen for an address watch accepts.
type ListenFunc func(ctx context.Context, watch func(netip.Addr) bool, report func(garp.Observation)) error

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

// OpenListen returns the passive GARP ListenFunc for iface: attributed to
// bridge ports when iface is a Linux bridge, else by MAC only (an
// interface with a single peer, or one behind a switch that enforces port
// security), which is logged once at start.
func OpenListen(iface string, log *slog.Logger) (ListenFunc, error) {
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
