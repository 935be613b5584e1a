package hostsync

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// SourceGARP is the claim source of a passive observation: the gratuitous
// ARP keepalived sent for a VIP, attributed to the member by its MAC.
const SourceGARP = "garp"

// SourceARP is the claim source of an ARP reply for a VIP (an answer to a
// probe): the member with that MAC holds the VIP.
const SourceARP = "arp"

// maxCASAttempts bounds the read-decide-swap loop of one claim; each
// failed attempt means another claim moved the owner in between.
const maxCASAttempts = 8

// claimIn is a claim after the caller has been identified.
type claimIn struct {
	role vrrp.Role
	seq  uint64 // 0 for a passive observation
	// epoch is the agent database the seq comes from ("" unknown: an
	// agent before epochs); a new epoch starts a new seq stream.
	epoch  string
	source string
	at     time.Time // as stamped by the guest (zero: unknown)
	// replayed: the claim waited in the claim queue while the registry
	// was unreachable; received is then when it was queued.
	replayed bool
	received time.Time
}

// MaxClockSkew bounds how far a guest's stamp (transition.at) may be ahead
// of hostsync's clock when the claim is received (or queued). Claims are
// ordered by the guests' event times where hostsync's own order of
// arrival says nothing (claims replayed from a queue after the registry
// was away, each host replaying its own): stamps of different guests are
// then compared as they are, which is right as far as the guests' clocks
// agree (NTP keeps them within milliseconds). A stamp further ahead than
// MaxClockSkew is counted as the time hostsync received the claim (an
// event is never later than its report), so a guest whose clock runs
// ahead can neither win every comparison nor escape the stale-claim rule.
const MaxClockSkew = time.Second

// eventTime is when the claim's event counts as having happened: the
// guest's stamp bounded by MaxClockSkew (see there), or when hostsync
// received the claim if it carries none. note is set when the stamp was
// bounded, for the answer and the log.
func (in claimIn) eventTime(now time.Time) (at time.Time, note string) {
	received := in.received
	if received.IsZero() {
		received = now
	}
	switch {
	case in.at.IsZero():
		return received, ""
	case in.at.After(received.Add(MaxClockSkew)):
		return received, fmt.Sprintf("transition.at %s is %s ahead of hostsync's clock (more than %s): counted as received at %s; check the guest's clock (NTP)",
			in.at.Format(time.RFC3339Nano), in.at.Sub(received).Round(time.Millisecond), MaxClockSkew, received.Format(time.RFC3339Nano))
	}
	return in.at, ""
}

// decision is what a claim does, decided on one snapshot.
type decision struct {
	duplicate bool
	move      bool
	accepted  bool
	message   string
	split     *api.SplitBrain
	// reannounce is set when a split brain is resolved for the current
	// owner: its GARP is sent again to repair caches the loser poisoned.
	reannounce bool
	// restamp: the owner re-claimed MASTER with a later event time; its
	// owner record keeps that time (registry.RestampOwner).
	restamp bool
}

// claimState is the snapshot a decision is made on.
type claimState struct {
	guest  registry.Guest
	group  registry.Group
	owner  registry.Owner
	self   registry.RoleState // zero when the member never reported
	other  registry.RoleState // the current owner's role (when not self)
	guests map[string]registry.Guest
}

// Claim records a transition reported by the caller (identified by c, not
// by the transition's member field). A MASTER claim from a member that is
// not the owner moves the owner with a compare-and-swap, then sends GARP
// for the VIP with the new owner's MAC, then re-points the EIP mapping.
// Claims are idempotent by (member, seq). inventory.ErrForbidden (wrapped) when the
// caller is not a member of a group with a VIP; nothing is recorded then.
//
// With a claim queue (Options.Queue), a claim that finds the registry
// unreachable (registry.ErrUnavailable), or finds older claims still
// queued, is queued and answered with Queued set; the replayer (see
// ReplayQueue) runs it later through this same path.
func (s *Service) Claim(ctx context.Context, c inventory.Caller, t vrrp.Transition) (api.ClaimResult, error) {
	return s.ClaimEpoch(ctx, c, "", t)
}

// ClaimEpoch is Claim for a transition numbered in the agent database
// epoch (api.Claim.Epoch; "" when the agent sent none): claims are
// idempotent by (member, epoch, seq), and a new epoch restarts the seq.
func (s *Service) ClaimEpoch(ctx context.Context, c inventory.Caller, epoch string, t vrrp.Transition) (api.ClaimResult, error) {
	if t.Seq == 0 {
		return api.ClaimResult{}, inventory.Invalid("transition.seq", "must be at least 1")
	}
	if _, err := vrrp.ParseRole(string(t.To)); err != nil {
		return api.ClaimResult{}, inventory.Invalid("transition.to", "%q is not one of MASTER, BACKUP, FAULT, STOP", t.To)
	}
	queued := func() queuedClaim {
		q := queuedClaim{Kind: queuedClaimKind, Addr: c.Addr, Transition: &t, Epoch: epoch}
		if c.MAC != nil {
			q.MAC = c.MAC.String()
		}
		return q
	}
	if s.queue != nil && s.queue.Len() > 0 {
		return s.enqueue(queued(), nil)
	}
	var res api.ClaimResult
	err := s.bounded(ctx, func(ctx context.Context) error {
		var err error
		res, err = s.claimNow(ctx, c, epoch, t, time.Time{})
		return err
	})
	if s.queue != nil && errors.Is(err, registry.ErrUnavailable) {
		return s.enqueue(queued(), err)
	}
	return res, err
}

// claimNow runs a claim against the registry; queued is when it was
// queued for a replayed claim, zero for a live one.
func (s *Service) claimNow(ctx context.Context, c inventory.Caller, epoch string, t vrrp.Transition, queued time.Time) (api.ClaimResult, error) {
	res, err := s.claim(ctx, func(tx registry.Tx) (registry.Guest, registry.Group, error) {
		gu, g, err := inventory.Identify(tx, c)
		if err != nil {
			return gu, g, err
		}
		if t.Member != "" && t.Member != gu.Name && t.Member != gu.ID {
			return gu, g, fmt.Errorf("%w: the claim names member %q but comes from guest %s (%s)", inventory.ErrForbidden, t.Member, gu.Name, c.Addr)
		}
		if t.Group != "" && t.Group != g.Name && t.Group != g.ID {
			return gu, g, fmt.Errorf("%w: the claim names group %q but guest %s is in group %s", inventory.ErrForbidden, t.Group, gu.Name, g.Name)
		}
		return gu, g, nil
	}, claimIn{role: t.To, seq: t.Seq, epoch: epoch, source: t.Source, at: t.At, replayed: !queued.IsZero(), received: queued})
	s.count(err, res)
	return res, err
}

// Observe treats a gratuitous ARP for a known VIP (or an ARP reply, with
// o.Reply) as a MASTER claim of the member with that MAC (source "garp",
// "arp"), so a move is learnt even when
// the member's agent is down. An observation of the current owner changes
// nothing and writes nothing; one whose MAC is no member's is ignored
// (inventory.ErrForbidden).
//
// With a claim queue, an observation that finds the registry unreachable
// (or older claims queued) is queued like a claim.
func (s *Service) Observe(ctx context.Context, o garp.Observation) (api.ClaimResult, error) {
	if err := s.checkPort(ctx, o); err != nil {
		return api.ClaimResult{}, err
	}
	queued := func() queuedClaim {
		return queuedClaim{Kind: queuedObservationKind, VIP: o.VIP, MAC: o.MAC.String(), Reply: o.Reply, At: o.At}
	}
	if s.queue != nil && s.queue.Len() > 0 {
		return s.enqueue(queued(), nil)
	}
	var res api.ClaimResult
	err := s.bounded(ctx, func(ctx context.Context) error {
		var err error
		res, err = s.observeNow(ctx, o, time.Time{})
		return err
	})
	if s.queue != nil && errors.Is(err, registry.ErrUnavailable) {
		return s.enqueue(queued(), err)
	}
	return res, err
}

// observeNow runs an observation against the registry; queued is when
// it was queued for a replayed one, zero for a live one.
func (s *Service) observeNow(ctx context.Context, o garp.Observation, queued time.Time) (api.ClaimResult, error) {
	replayed := !queued.IsZero()
	mac := o.MAC.String()
	vip := o.VIP.Unmap()
	source := SourceGARP
	if o.Reply {
		source = SourceARP
		// Only members' answers count: a stranger answering for the VIP
		// (a misconfigured or rogue guest, proxy ARP) neither makes nor
		// ends a split brain; the claim path below refuses it.
		member, err := s.isMemberMAC(ctx, vip, mac)
		if err != nil {
			return api.ClaimResult{}, err
		}
		// Two members answering one probe both hold the VIP: a split
		// brain. The winner's answer is the claim that counts.
		if member {
			if macs := s.probeAnswer(vip, mac, o.At); macs != nil {
				winner, err := s.probeSplit(ctx, vip, macs)
				if err != nil {
					return api.ClaimResult{}, err
				}
				mac = winner
			}
		}
	}
	res, err := s.claim(ctx, func(tx registry.Tx) (registry.Guest, registry.Group, error) {
		g, err := inventory.GroupByVIP(tx, vip)
		if err != nil {
			return registry.Guest{}, g, err
		}
		for _, m := range g.Members {
			gu, err := registry.Get[registry.Guest](tx, m.GuestID)
			if err != nil {
				return gu, g, err
			}
			if gu.MAC == mac {
				return gu, g, nil
			}
		}
		return registry.Guest{}, g, fmt.Errorf("%w: MAC %s announcing %s is no member of group %s", inventory.ErrForbidden, mac, vip, g.Name)
	}, claimIn{role: vrrp.RoleMaster, source: source, at: observedAt(o, replayed), replayed: replayed, received: queued})
	if s.metrics != nil {
		s.metrics.observation(err == nil && res.Accepted)
	}
	return res, err
}

// observedAt is the time an observation counts as stamped: only replayed
// ones carry it (so the stale-claim and predating rules apply to them);
// a live observation is now.
func observedAt(o garp.Observation, replayed bool) time.Time {
	if replayed {
		return o.At
	}
	return time.Time{}
}

func (s *Service) count(err error, res api.ClaimResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.claims++
	if err != nil || !res.Accepted {
		s.stats.rejected++
	}
	if s.metrics != nil {
		s.metrics.claim(err, res)
	}
}

// claim runs the read, decide, compare-and-swap loop and then the side
// effects of a move.
func (s *Service) claim(ctx context.Context, who func(registry.Tx) (registry.Guest, registry.Group, error), in claimIn) (api.ClaimResult, error) {
	start := time.Now()
	for range maxCASAttempts {
		var st claimState
		err := s.store.View(ctx, func(tx registry.Tx) error {
			var err error
			st, err = readClaimState(tx, who)
			return err
		})
		if err != nil {
			return api.ClaimResult{}, err
		}
		now := s.nowUTC()
		d := s.decide(st, in, now)
		event, skewNote := in.eventTime(now)
		if vip := st.group.VIP; vip != nil {
			switch {
			case d.move && s.heldAgainst(vip.Address, st.guest.MAC):
				d = decision{accepted: false, message: fmt.Sprintf(
					"split brain on %s in progress: %s also holds it; the VIP stays with the owner until one of them leaves MASTER", vip.Address, st.guest.Name)}
			case in.role != vrrp.RoleMaster:
				s.releaseHold(vip.Address, st.guest.MAC)
			}
		}
		if d.duplicate {
			return api.ClaimResult{Accepted: true, Duplicate: true, Owner: st.guests[st.owner.GuestID].Name, Revision: st.owner.Revision}, nil
		}
		if in.seq == 0 && !d.move && !d.reannounce && d.split == nil {
			// A passive observation that changes nothing (the owner's own
			// GARP, or ours) is not written.
			return api.ClaimResult{Accepted: d.accepted, Owner: st.guests[st.owner.GuestID].Name, Revision: st.owner.Revision, Message: d.message}, nil
		}
		owner := st.owner
		err = s.store.Update(ctx, func(tx registry.Tx) error {
			cur, err := inventory.Owner(tx, st.group.ID)
			if err != nil {
				return err
			}
			if cur.Revision != st.owner.Revision || !cur.LatestMaster().Equal(st.owner.LatestMaster()) {
				// Moved, or the owner re-claimed MASTER since we read: the
				// decision may rest on an older event time.
				return fmt.Errorf("%w: group %s", registry.ErrRevisionMismatch, st.group.ID)
			}
			rs, err := registry.Get[registry.RoleState](tx, registry.RoleKey(st.group.ID, st.guest.ID))
			if err != nil && !errors.Is(err, registry.ErrNotFound) {
				return err
			}
			if rs.Seq != st.self.Seq || rs.Epoch != st.self.Epoch {
				// Another claim of this member was recorded since we read:
				// decide again on fresh state (it may be this very seq).
				return fmt.Errorf("%w: role of %s", registry.ErrRevisionMismatch, st.guest.ID)
			}
			next := registry.RoleState{Group: st.group.ID, GuestID: st.guest.ID, Role: in.role, Seq: max(rs.Seq, in.seq), Epoch: rs.Epoch, At: now, MasterAt: rs.MasterAt}
			if in.seq != 0 && in.epoch != "" && in.epoch != rs.Epoch {
				next.Seq, next.Epoch = in.seq, in.epoch // a new stream
			}
			if in.role == vrrp.RoleMaster {
				next.MasterAt = now
			}
			if err := registry.Put(tx, next); err != nil {
				return err
			}
			if d.move {
				owner, err = registry.SwapOwner(tx, st.owner.Revision, registry.Owner{
					Group: st.group.ID, GuestID: st.guest.ID, Since: now, Source: in.source,
					ClaimedAt: event, MasterAt: event,
				})
				return err
			}
			if d.restamp {
				owner, err = registry.RestampOwner(tx, st.group.ID, st.owner.Revision, st.guest.ID, event)
				return err
			}
			return nil
		})
		if errors.Is(err, registry.ErrRevisionMismatch) {
			continue
		}
		if err != nil {
			return api.ClaimResult{}, err
		}
		res := api.ClaimResult{Accepted: d.accepted, Owner: st.guests[owner.GuestID].Name, Revision: owner.Revision, Message: d.message}
		if skewNote != "" {
			s.log.Warn("claim stamped in the future", "op", "claim", "group", st.group.Name, "member", st.guest.Name, "note", skewNote)
			res.Message = strings.TrimPrefix(res.Message+"; "+skewNote, "; ")
		}
		if d.split != nil {
			s.recordSplit(*d.split)
		}
		vip := st.group.VIP.Address
		switch {
		case d.move:
			s.log.Info("vip moved", "op", "claim", "group", st.group.Name, "vip", vip, "owner", st.guest.Name,
				"from", st.guests[st.owner.GuestID].Name, "source", in.source, "revision", owner.Revision)
			s.mu.Lock()
			s.stats.moves++
			s.stats.lastMove = now
			s.mu.Unlock()
			mv := api.Move{
				Group: st.group.Name, From: st.guests[st.owner.GuestID].Name, To: st.guest.Name,
				Source: in.source, Received: start, Recorded: time.Now(),
			}
			s.announce(st.group.ID, vip, st.guest.MAC)
			if s.announcer != nil {
				mv.Announced = time.Now()
			}
			if err := s.applyDataPlane(ctx); err != nil {
				res.Message = "owner recorded; data plane: " + err.Error()
				mv.ApplyError = err.Error()
			} else if s.backend != nil {
				mv.Applied = time.Now()
			}
			s.logMove(mv)
			if s.metrics != nil {
				s.metrics.moved(time.Since(start))
			}
		case d.reannounce:
			cur := st.guests[st.owner.GuestID]
			s.announce(st.group.ID, vip, cur.MAC)
		}
		if in.role != vrrp.RoleMaster && st.owner.GuestID == st.guest.ID {
			// The owner left MASTER: ask the wire who holds the VIP now,
			// in case no other member's claim or GARP reaches us.
			s.KickProbe()
		}
		return res, nil
	}
	return api.ClaimResult{}, fmt.Errorf("hostsync: claim: owner kept changing, gave up after %d attempts", maxCASAttempts)
}

func readClaimState(tx registry.Tx, who func(registry.Tx) (registry.Guest, registry.Group, error)) (claimState, error) {
	var st claimState
	var err error
	if st.guest, st.group, err = who(tx); err != nil {
		return st, err
	}
	if st.owner, err = inventory.Owner(tx, st.group.ID); err != nil {
		return st, err
	}
	role := func(guest string) (registry.RoleState, error) {
		rs, err := registry.Get[registry.RoleState](tx, registry.RoleKey(st.group.ID, guest))
		if errors.Is(err, registry.ErrNotFound) {
			return registry.RoleState{}, nil
		}
		return rs, err
	}
	if st.self, err = role(st.guest.ID); err != nil {
		return st, err
	}
	if st.owner.GuestID != "" && st.owner.GuestID != st.guest.ID {
		if st.other, err = role(st.owner.GuestID); err != nil {
			return st, err
		}
	}
	st.guests = map[string]registry.Guest{}
	ms, err := inventory.Members(tx, st.group)
	if err != nil {
		return st, err
	}
	for _, m := range ms {
		st.guests[m.ID] = m
	}
	return st, nil
}

// decide is the claim policy, a pure function of the snapshot.
func (s *Service) decide(st claimState, in claimIn, now time.Time) decision {
	if in.seq != 0 && in.seq <= st.self.Seq && (in.epoch == "" || in.epoch == st.self.Epoch) {
		// Seen in this stream. Another epoch is a re-created agent
		// database numbering from 1 again: a new stream, not a duplicate.
		return decision{duplicate: true}
	}
	self := st.guest
	if in.role != vrrp.RoleMaster {
		if st.owner.GuestID == self.ID {
			return decision{accepted: true, message: fmt.Sprintf("%s left MASTER (%s); it keeps the VIP until another member claims MASTER", self.Name, in.role)}
		}
		return decision{accepted: true}
	}
	event, _ := in.eventTime(now)
	if st.owner.GuestID == self.ID {
		// A re-claim by the owner's agent keeps its later event time; a
		// passive observation of the owner writes nothing.
		return decision{accepted: true, message: self.Name + " already owns the VIP", restamp: in.seq != 0 && event.After(st.owner.LatestMaster())}
	}
	if latest := st.owner.LatestMaster(); in.replayed && st.owner.GuestID != "" && event.Before(latest) {
		// Claims replayed from the queues of several hosts arrive in no
		// useful order: the events' own times decide. This one happened
		// before the owner's latest MASTER claim, so that stands.
		return decision{accepted: false, message: fmt.Sprintf("queued MASTER claim stamped %s predates the owner's latest MASTER claim stamped %s; recorded, VIP not moved",
			event.Format(time.RFC3339Nano), latest.Format(time.RFC3339Nano))}
	}
	// A claim's age counts until hostsync first received it: one that
	// waited in the queue through a long registry outage was fresh when
	// it arrived, and its order against other claims is decided above by
	// the events' times.
	received := now
	if !in.received.IsZero() && in.received.Before(now) {
		received = in.received
	}
	if !in.at.IsZero() && received.Sub(event) > s.staleAge {
		return decision{accepted: false, message: fmt.Sprintf("MASTER claim stamped %s was older than %s when hostsync received it; recorded, VIP not moved",
			event.Format(time.RFC3339), s.staleAge)}
	}
	if st.owner.GuestID == "" {
		return decision{move: true, accepted: true}
	}
	if in.replayed {
		// A replayed claim later than the owner's latest MASTER claim is
		// the later event: it moves the VIP. It is not judged a split
		// brain, since the owner's leaving MASTER may itself still wait
		// in a queue (a real split brain shows live: probes, GARP).
		return decision{move: true, accepted: true}
	}
	cur, ok := st.guests[st.owner.GuestID]
	if !ok || st.other.Role != vrrp.RoleMaster || now.Sub(st.other.MasterAt) >= splitWindow(s.window, st.group) {
		// The owner left MASTER, left the group, or claimed it long
		// enough ago that this is a failover, not two masters.
		return decision{move: true, accepted: true}
	}
	// Split brain: the owner claimed MASTER recently and has not reported
	// leaving it. Higher priority wins, then the lower address, as VRRP
	// itself would elect (RFC 5798 6.4.3 breaks ties by address, highest
	// wins there; the lower one here is as deterministic and keeps the
	// incumbent in the seed's layout).
	winner, reason := resolveSplit(st.group, cur, self)
	split := &api.SplitBrain{
		Group: st.group.Name, Members: []string{cur.Name, self.Name}, Winner: winner.Name, Reason: reason, At: now,
	}
	if winner.ID == self.ID {
		return decision{move: true, accepted: true, split: split,
			message: fmt.Sprintf("split brain with %s resolved for %s (%s)", cur.Name, self.Name, reason)}
	}
	return decision{accepted: false, split: split, reannounce: true,
		message: fmt.Sprintf("split brain: %s also claims MASTER; %s keeps the VIP (%s)", cur.Name, cur.Name, reason)}
}

// splitWindow is how close two members' MASTER claims must be to count as
// a split brain: the configured window, but at most two advertisement
// intervals of the group. A real failover comes at least three intervals
// (keepalived's master-down timer) after the old master stopped being
// heard, while members that both elect themselves MASTER (a partition, or
// a start without hearing each other) do so within about one interval.
func splitWindow(configured time.Duration, g registry.Group) time.Duration {
	adv := g.Settings.AdvertInt.Duration()
	if adv <= 0 {
		adv = time.Second
	}
	return min(configured, 2*adv)
}

// resolveSplit picks the winner of two members claiming MASTER.
func resolveSplit(g registry.Group, a, b registry.Guest) (registry.Guest, string) {
	pa, _ := g.Member(a.ID)
	pb, _ := g.Member(b.ID)
	if pa.Priority != pb.Priority {
		if pa.Priority > pb.Priority {
			return a, fmt.Sprintf("priority %d over %d", pa.Priority, pb.Priority)
		}
		return b, fmt.Sprintf("priority %d over %d", pb.Priority, pa.Priority)
	}
	if a.Address.Compare(b.Address) < 0 {
		return a, fmt.Sprintf("equal priority, lower address %s", a.Address)
	}
	return b, fmt.Sprintf("equal priority, lower address %s", b.Address)
}

func (s *Service) recordSplit(sb api.SplitBrain) {
	s.log.Warn("split brain: two members claim MASTER", "op", "claim", "group", sb.Group,
		"members", sb.Members, "winner", sb.Winner, "reason", sb.Reason)
	s.mu.Lock()
	s.stats.splitBrains++
	s.stats.lastSplit = &sb
	s.mu.Unlock()
	if s.metrics != nil {
		s.metrics.splitBrain()
	}
}

// announce starts the GARP burst for a group's new owner, cancelling the
// group's previous burst (ownership changed again, so the old MAC must not
// be announced any more). The announcer writes the first round before
// Start returns, so it is on the wire before the data plane is re-pointed,
// and owns the later rounds; the burst is stopped by the next move, by
// stopAnnounce or by Close, which waits for it.
func (s *Service) announce(group string, vip netip.Addr, macText string) {
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
func (s *Service) stopAnnounce(group string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.announcing[group]; a != nil {
		a.cancel()
		delete(s.announcing, group)
	}
}

// Mappings returns the desired data plane: one mapping per group with an
// EIP (and so a VIP), sorted by group id.
func (s *Service) Mappings(ctx context.Context) ([]eip.Mapping, error) {
	var out []eip.Mapping
	err := s.store.View(ctx, func(tx registry.Tx) error {
		var err error
		out, err = s.mappings(tx)
		return err
	})
	return out, err
}

func (s *Service) mappings(tx registry.Tx) ([]eip.Mapping, error) {
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
// one). A failure is logged, kept for the status and retried by Run's
// reconcile loop; the registry stays the truth.
func (s *Service) applyDataPlane(ctx context.Context) error {
	if s.backend == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.applyLimit)
	defer cancel()
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	ms, err := s.Mappings(ctx)
	if err == nil {
		held := s.holdEmpty(ctx, ms)
		s.recordHold(held)
		if held != "" {
			return nil
		}
	}
	if err == nil {
		start := time.Now()
		err = s.backend.Apply(ctx, ms)
		s.metrics.applyTook(time.Since(start))
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

// Reapply applies the data plane from the registry (at start and
// periodically; idempotent).
func (s *Service) Reapply(ctx context.Context) error { return s.applyDataPlane(ctx) }

// WatchVIP reports whether a is a group's VIP (the passive GARP listener
// asks it for every frame). Safe for concurrent use.
func (s *Service) WatchVIP(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.vips[a.Unmap()]
	return ok
}

func (s *Service) refreshVIPs(ctx context.Context) error {
	vips := map[netip.Addr]string{}
	err := s.store.View(ctx, func(tx registry.Tx) error {
		groups, err := registry.List[registry.Group](tx, "")
		for _, g := range groups {
			if g.VIP != nil {
				vips[g.VIP.Address] = g.ID
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.vips = vips
	s.mu.Unlock()
	return nil
}
