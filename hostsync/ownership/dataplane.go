package ownership

import (
	"cmp"
	"context"
	"errors"
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
		m, ok, err := s.mappingOf(tx, g)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b eip.Mapping) int { return cmp.Compare(a.Group, b.Group) })
	return out, nil
}

// mappingOf returns group g's mapping; ok is false when g has no EIP (or
// no VIP) and so nothing in the data plane.
func (s *Engine) mappingOf(tx registry.Tx, g registry.Group) (m eip.Mapping, ok bool, err error) {
	if g.EIP == nil || g.VIP == nil {
		return eip.Mapping{}, false, nil
	}
	m = eip.Mapping{Group: g.ID, EIP: g.EIP.Address, VIP: g.VIP.Address}
	if m.Bandwidth, err = eipBandwidth(tx, g.EIP.EIPID); err != nil {
		return eip.Mapping{}, false, err
	}
	o, err := inventory.Owner(tx, g.ID)
	if err != nil {
		return eip.Mapping{}, false, err
	}
	if o.GuestID != "" {
		gu, err := registry.Get[registry.Guest](tx, o.GuestID)
		if err != nil {
			return eip.Mapping{}, false, fmt.Errorf("hostsync: owner %s of group %s: %w", o.GuestID, g.Name, err)
		}
		m.Owner, m.OwnerMAC, m.OwnerHost = gu.Name, gu.MAC, gu.Host
		m.NextHop = s.hosts[gu.Host]
	}
	return m, true, nil
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
	return s.applyLocked(ctx)
}

// applyLocked is applyDataPlane's work, called with applyMu.
func (s *Engine) applyLocked(ctx context.Context) error {
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
	s.recordApply(err)
	if err != nil {
		s.log.Error("data plane apply failed", "op", "apply", "mappings", len(ms), "err", err)
		return fmt.Errorf("hostsync: apply data plane: %w", err)
	}
	s.log.Debug("data plane applied", "op", "apply", "mappings", len(ms))
	return nil
}

// recordApply keeps an apply's (or a move's) outcome for the status and
// the metrics.
func (s *Engine) recordApply(err error) {
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
}

// moveDataPlane brings the data plane in step with a move of group's VIP.
// A move changes only the owner, so with a backend that can follow one
// mapping (eip.Mover) it reads that group's mapping alone and writes at
// most its route: no scan of the other groups, no NAT change, the same
// cost at one EIP as at 10,000. It falls back to the complete apply when
// the backend cannot (no Mover, eip.ErrNeedApply: nothing applied yet, a
// changed pair, an earlier failure) or a reconcile is due. Serialised
// with applies under applyMu, and reading the registry under it, so a
// later apply or move never carries older state than an earlier one.
func (s *Engine) moveDataPlane(ctx context.Context, group string) error {
	mv, ok := s.backend.(eip.Mover)
	if s.backend == nil || !ok || s.reconcileDue.Load() {
		return s.applyDataPlane(ctx)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.applyLimit)
	defer cancel()
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	var m eip.Mapping
	has := false
	err := s.store.View(ctx, func(tx registry.Tx) error {
		g, err := registry.Get[registry.Group](tx, group)
		if errors.Is(err, registry.ErrNotFound) {
			return nil // deleted meanwhile: the admin change applies
		}
		if err != nil {
			return err
		}
		m, has, err = s.mappingOf(tx, g)
		return err
	})
	if err == nil && !has {
		return nil // no EIP: nothing in the data plane follows the VIP
	}
	if err == nil {
		start := time.Now()
		err = mv.Move(ctx, m)
		if errors.Is(err, eip.ErrNeedApply) {
			return s.applyLocked(ctx)
		}
		s.metrics.applyTook(time.Since(start))
	}
	s.recordApply(err)
	if err != nil {
		s.log.Error("data plane move failed", "op", "move", "group", group, "err", err)
		return fmt.Errorf("hostsync: data plane move: %w", err)
	}
	s.log.Debug("data plane moved", "op", "move", "group", group, "vip", m.VIP, "next_hop", m.NextHop)
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
