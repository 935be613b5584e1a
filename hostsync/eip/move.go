package eip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ErrNeedApply is returned by Mover.Move when the backend cannot re-point
// the mapping on its own — it has not applied a set yet, it does not know
// the mapping's EIP ↔ VIP pair, or it needs the whole set to recover from
// an earlier failure — and the caller must Apply the complete set instead.
var ErrNeedApply = errors.New("eip: the complete set must be applied")

// Mover is implemented by backends that can follow a move without the
// complete set. A move changes only a mapping's owner and next hop — its
// EIP ↔ VIP pair is fixed when the EIP is associated — so Move writes at
// most the VIP's route and never the NAT: its cost does not depend on how
// many mappings the backend holds. The mapping's pair must be the one the
// backend last applied; otherwise, and whenever the backend cannot tell
// what is programmed, Move returns ErrNeedApply and changes nothing.
type Mover interface {
	Move(ctx context.Context, m Mapping) error
}

var (
	_ Mover = (*Maps)(nil)
	_ Mover = (*NFT)(nil)
)

// Move re-points one mapping's VIP route toward m.NextHop (removes it when
// m has no next hop: the VIP is on a directly connected segment) with at
// most one route write and no NAT write. The next hop is judged as Apply
// judges it: an unusable one leaves the NAT and removes the route.
func (m *Maps) Move(ctx context.Context, mp Mapping) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("eip: move: %w", err)
	}
	e, v, via := mp.EIP.Unmap(), mp.VIP.Unmap(), mp.NextHop.Unmap()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.applied || !m.natSynced || !m.routesSynced || !e.IsValid() || m.want[e] != v {
		return ErrNeedApply
	}
	if via.IsValid() && (!via.Is4() || !unicast(via)) {
		m.log.Warn("eip: mapping skipped", "group", mp.Group, "eip", e, "vip", v,
			"reason", fmt.Sprintf("next hop %s unusable, NAT kept without route", via))
		via = netip.Addr{}
	}
	have, installed := m.rts[v]
	if via.IsValid() {
		m.wantRoutes[v] = via
		if installed && have == via {
			return nil
		}
		m.routeWrites.Add(1)
		if err := m.routes.RouteReplace(m.route(v, via)); err != nil {
			// As Apply: a stale next hop would send the VIP's traffic to
			// its previous owner, so the old route goes too; the next
			// Apply reads the kernel again.
			m.routesSynced = false
			err = fmt.Errorf("eip: route %s/32 via %s: %w", v, via, err)
			if installed {
				m.routeWrites.Add(1)
				if derr := m.routes.RouteDel(m.route(v, have)); derr != nil && !errors.Is(derr, unix.ESRCH) {
					err = errors.Join(err, fmt.Errorf("eip: remove route %s/32: %w", v, derr))
				} else {
					delete(m.rts, v)
				}
			}
			return err
		}
		m.rts[v] = via
		m.log.Debug("eip: moved", "group", mp.Group, "vip", v, "via", via, "owner", mp.Owner)
		return nil
	}
	delete(m.wantRoutes, v)
	if !installed {
		return nil
	}
	m.routeWrites.Add(1)
	if err := m.routes.RouteDel(m.route(v, have)); err != nil && !errors.Is(err, unix.ESRCH) {
		m.routesSynced = false
		return fmt.Errorf("eip: remove route %s/32: %w", v, err)
	}
	delete(m.rts, v)
	m.log.Debug("eip: moved", "group", mp.Group, "vip", v, "via", "directly connected", "owner", mp.Owner)
	return nil
}

// Move follows a move through the Maps backend when NFT is backed by it;
// the nft -f script backend rewrites everything on each Apply, so it
// returns ErrNeedApply.
func (n *NFT) Move(ctx context.Context, m Mapping) error {
	if n.maps == nil {
		return ErrNeedApply
	}
	return n.maps.Move(ctx, m)
}
