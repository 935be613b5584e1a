package ownership

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// announce starts the GARP burst for a group's new owner, cancelling the
// group's previous burst (ownership changed again, so the old MAC must not
// be announced any more). The announcer writes the first round before
// Start returns, so it is on the wire before the data plane is re-pointed,
// and owns the later rounds; the burst is stopped by the next move, by
// stopAnnounce or by Close, which waits for it.
func (s *Engine) announce(group string, vip netip.Addr, macText string) {
	if s.announcer == nil {
		return
	}
	mac, err := net.ParseMAC(macText)
	if err != nil {
		s.log.Error("garp: owner has no usable MAC", "group", group, "vip", vip, "mac", macText)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if prev := s.announcing[group]; prev != nil {
		prev.cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.announceLimit)
	a := &announcement{cancel: cancel}
	s.announcing[group] = a
	s.announces.Add(1)
	s.mu.Unlock()

	done := func() {
		cancel()
		s.mu.Lock()
		if s.announcing[group] == a {
			delete(s.announcing, group)
		}
		s.mu.Unlock()
		s.announces.Done()
	}
	p, err := s.announcer.Start(ctx, vip, mac)
	s.metrics.garpSent(p.Sent)
	switch {
	case ctx.Err() != nil:
		s.log.Debug("garp: burst superseded", "group", group, "vip", vip, "mac", macText, "sent", p.Sent)
	case err != nil:
		// The later rounds exist for exactly this: the burst goes on.
		s.log.Warn("garp: first round failed", "group", group, "vip", vip, "mac", macText, "sent", p.Sent, "err", err)
	}
	if p.Done == nil {
		done()
		return
	}
	go func() {
		defer done()
		b := <-p.Done
		s.metrics.garpSent(b.Sent - p.Sent)
	}()
}

// stopAnnounce cancels a group's burst (its VIP or owner went away).
func (s *Engine) stopAnnounce(group string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.announcing[group]; a != nil {
		a.cancel()
		delete(s.announcing, group)
	}
}

// Mappings returns the desired data plane: one mapping per group with an
// EIP (and so a VIP), sorted by group id.
func (s *Engine) Mappings(ctx context.Context) ([]eip.Mapping, error) {
	var out []eip.Mapping
	err := s.store.View(ctx, func(tx registry.Tx) error {
		var err error
		out, err = s.mappings(tx)
		return err
	})
	return out, err
}

func (s *Engine) mappings(tx registry.Tx) ([]eip.Mapping, error) {
	groups, err := registry.List[registry.Group](tx, "")
	if err != nil {
		return nil, err
	}
	out := []eip.Mapping{}
	for _, g := range groups {
		if g.EIP == nil || g.VIP == nil {
			continue
		}
		m := eip.Mapping{Group: g.ID, EIP: g.EIP.Address, VIP: g.VIP.Address}
		o, err := inventory.Owner(tx, g.ID)
		if err != nil {
			return nil, err
		}
		if o.GuestID != "" {
			gu, err := registry.Get[registry.Guest](tx, o.GuestID)
			if err != nil {
				return nil, fmt.Errorf("hostsync: owner %s of group %s: %w", o.GuestID, g.Name, err)
			}
			m.Owner, m.OwnerMAC, m.OwnerHost = gu.Name, gu.MAC, gu.Host
			m.NextHop = s.hosts[gu.Host]
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b eip.Mapping) int { return cmp.Compare(a.Group, b.Group) })
	return out, nil
}

// applyDataPlane applies the complete desired set, read fresh, under
// applyMu (so a later apply never carries older state than an earlier
// one). The first apply, and the first after FollowWatch saw its watch
// re-established, is followed by the backend's Reconcile when it has one
// (eip.Reconciler); a held apply (dpguard.go) reconciles nothing. A
// failure is logged, kept for the status and retried by Run's reconcile
// loop; the registry stays the truth.
func (s *Engine) applyDataPlane(ctx context.Context) error {
	if s.backend == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.applyLimit)
	defer cancel()
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	// Taken before the registry is read: a watch gap signalled after
	// this point sets it again, for the next apply, which reads later.
	reconcile := s.reconcileDue.Swap(false)
	ms, err := s.Mappings(ctx)
	if err == nil {
		held := s.holdEmpty(ctx, ms)
		s.recordHold(held)
		if held != "" {
			// Nothing is written while held, not even a repair toward
			// the last set: the next apply that goes ahead reconciles.
			if reconcile {
				s.reconcileDue.Store(true)
			}
			return nil
		}
	}
	if err == nil {
		start := time.Now()
		err = s.backend.Apply(ctx, ms)
		s.metrics.applyTook(time.Since(start))
	}
	if err == nil && reconcile {
		err = s.reconcileBackend(ctx)
	}
	if err != nil && reconcile {
		s.reconcileDue.Store(true) // retried with the apply
	}
	s.mu.Lock()
	s.stats.lastApply = s.nowUTC()
	s.stats.lastApplyErr = ""
	if err != nil {
		s.stats.lastApplyErr = err.Error()
	}
	s.mu.Unlock()
	if s.metrics != nil {
		s.metrics.applied(err)
	}
	if err != nil {
		s.log.Error("data plane apply failed", "op", "apply", "mappings", len(ms), "err", err)
		return fmt.Errorf("hostsync: apply data plane: %w", err)
	}
	s.log.Debug("data plane applied", "op", "apply", "mappings", len(ms))
	return nil
}

// reconcileBackend asks a backend that writes only differences
// (eip.Reconciler) to read what is programmed and repair it toward the
// set just applied; other backends have nothing to do. Called with
// applyMu, right after a successful Apply.
func (s *Engine) reconcileBackend(ctx context.Context) error {
	r, ok := s.backend.(eip.Reconciler)
	if !ok {
		return nil
	}
	start := time.Now()
	if err := r.Reconcile(ctx); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	s.log.Info("data plane read back and reconciled", "op", "reconcile", "took", time.Since(start))
	return nil
}

// needReconcile makes the next data-plane apply reconcile (FollowWatch
// calls it when the registry watch is re-established).
func (s *Engine) needReconcile() { s.reconcileDue.Store(true) }

// Reapply applies the data plane from the registry (at start and
// periodically; idempotent).
func (s *Engine) Reapply(ctx context.Context) error { return s.applyDataPlane(ctx) }

// WatchVIP reports whether a is a group's VIP (the passive GARP listener
// asks it for every frame). Safe for concurrent use.
func (s *Engine) WatchVIP(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.vips[a.Unmap()]
	return ok
}

func (s *Engine) refreshVIPs(ctx context.Context) error {
	vips := map[netip.Addr]string{}
	pairs := map[netip.Addr]netip.Addr{} // a dual-stack group's VIPs, each to the other (pairs.go)
	err := s.store.View(ctx, func(tx registry.Tx) error {
		groups, err := registry.List[registry.Group](tx, "")
		for _, g := range groups {
			if g.VIP != nil {
				vips[g.VIP.Address] = g.ID
				if a6 := g.VIP.Address6; a6.IsValid() {
					vips[a6] = g.ID
					pairs[g.VIP.Address], pairs[a6] = a6, g.VIP.Address
				}
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.vips = vips
	s.pairs = pairs
	s.mu.Unlock()
	return nil
}
