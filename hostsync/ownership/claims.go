package ownership

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/vipkeeper/vipkeeper/api"
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

// SourceHandover is the source recorded when the owner left MASTER and
// the VIP went to the other member whose last report is MASTER.
const SourceHandover = "handover"

// maxCASAttempts bounds the read-decide-swap loop of one claim; each
// failed attempt means another claim moved the owner in between.
const maxCASAttempts = 8

// Limits of a claim's free-text fields.
const (
	maxSourceLen = 32
	maxNoteLen   = 256
)

// CheckClaim is the one validator of a claim, the guest API's and
// Claim's: a transition numbered from 1 to a known role, fields of bounded
// length and printable, a source other than hostsync's own, an epoch of
// letters, digits, '-' and '_'. Errors wrap inventory.ErrInvalid and name
// the field.
func CheckClaim(epoch string, t vrrp.Transition) error {
	if t.Seq == 0 {
		return inventory.Invalid("transition.seq", "must be at least 1")
	}
	if _, err := vrrp.ParseRole(string(t.To)); err != nil {
		return inventory.Invalid("transition.to", "%q is not one of MASTER, BACKUP, FAULT, STOP", t.To)
	}
	if t.From != "" && t.From != vrrp.RoleUnknown {
		if _, err := vrrp.ParseRole(string(t.From)); err != nil {
			return inventory.Invalid("transition.from", "%q is not one of UNKNOWN, MASTER, BACKUP, FAULT, STOP", t.From)
		}
	}
	if t.Priority < 0 || t.Priority > 255 {
		return inventory.Invalid("transition.priority", "%d is out of range, allowed 0–255", t.Priority)
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"transition.group", t.Group, 64}, {"transition.instance", t.Instance, 64}, {"transition.member", t.Member, 64},
		{"transition.source", t.Source, maxSourceLen}, {"transition.note", t.Note, maxNoteLen},
	} {
		if len(f.v) > f.max {
			return inventory.Invalid(f.name, "is %d bytes long, at most %d are allowed", len(f.v), f.max)
		}
		for _, r := range f.v {
			if !unicode.IsPrint(r) {
				return inventory.Invalid(f.name, "contains the non-printable character %U", r)
			}
		}
	}
	if t.Source == SourceGARP || t.Source == SourceNA {
		return inventory.Invalid("transition.source", "%q is reserved for hostsync's passive detection", t.Source)
	}
	if len(epoch) > api.MaxEpochLen {
		return inventory.Invalid("epoch", "is %d bytes long, at most %d are allowed", len(epoch), api.MaxEpochLen)
	}
	for _, r := range epoch {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_') {
			return inventory.Invalid("epoch", "contains %q; allowed are letters, digits, '-' and '_'", r)
		}
	}
	return nil
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
func (s *Engine) Claim(ctx context.Context, c inventory.Caller, t vrrp.Transition) (api.ClaimResult, error) {
	return s.ClaimEpoch(ctx, c, "", t)
}

// ClaimEpoch is Claim for a transition numbered in the agent database
// epoch (api.Claim.Epoch; "" when the agent sent none): claims are
// idempotent by (member, epoch, seq), and a new epoch restarts the seq.
func (s *Engine) ClaimEpoch(ctx context.Context, c inventory.Caller, epoch string, t vrrp.Transition) (api.ClaimResult, error) {
	if err := CheckClaim(epoch, t); err != nil {
		return api.ClaimResult{}, err
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
func (s *Engine) claimNow(ctx context.Context, c inventory.Caller, epoch string, t vrrp.Transition, queued time.Time) (api.ClaimResult, error) {
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
func (s *Engine) Observe(ctx context.Context, o garp.Observation) (api.ClaimResult, error) {
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
func (s *Engine) observeNow(ctx context.Context, o garp.Observation, queued time.Time) (api.ClaimResult, error) {
	replayed := !queued.IsZero()
	mac := o.MAC.String()
	vip := o.VIP.Unmap()
	source := observationSource(o)
	if o.Reply {
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

func (s *Engine) count(err error, res api.ClaimResult) {
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
func (s *Engine) claim(ctx context.Context, who func(registry.Tx) (registry.Guest, registry.Group, error), in claimIn) (api.ClaimResult, error) {
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
			case d.move && d.to == "" && s.heldAgainst(vip.Address, st.guest.MAC):
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
		// Batch: concurrent claims (of many groups) share one commit and
		// one fsync; the answer still waits for this claim's commit. The
		// function may run more than once: owner is set by its last run,
		// the one committed.
		err = registry.Batch(ctx, s.store, func(tx registry.Tx) error {
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
			if d.move && d.to != "" {
				// A handover: the target must still be MASTER as read.
				trs, err := registry.Get[registry.RoleState](tx, registry.RoleKey(st.group.ID, d.to))
				if err != nil && !errors.Is(err, registry.ErrNotFound) {
					return err
				}
				if trs != st.roles[d.to] {
					return fmt.Errorf("%w: role of %s", registry.ErrRevisionMismatch, d.to)
				}
				owner, err = registry.SwapOwner(tx, st.owner.Revision, registry.Owner{
					Group: st.group.ID, GuestID: d.to, Since: now, Source: SourceHandover,
					ClaimedAt: trs.MasterAt, MasterAt: trs.MasterAt,
				})
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
			to, source := st.guest, in.source
			if d.to != "" {
				to, source = st.guests[d.to], SourceHandover
			}
			s.log.Info("vip moved", "op", "claim", "group", st.group.Name, "vip", vip, "owner", to.Name,
				"from", st.guests[st.owner.GuestID].Name, "source", source, "revision", owner.Revision)
			s.metrics.owner(st.group.ID, st.group.Name, to.Name, owner.Revision)
			s.mu.Lock()
			s.stats.moves++
			s.stats.lastMove = now
			s.mu.Unlock()
			mv := api.Move{
				Group: st.group.Name, From: st.guests[st.owner.GuestID].Name, To: to.Name,
				Source: source, Received: start, Recorded: time.Now(),
			}
			s.announce(st.group.ID, vip, to.MAC)
			if s.announcer != nil {
				mv.Announced = time.Now()
			}
			if err := s.moveDataPlane(ctx, st.group.ID); err != nil {
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
		if in.role != vrrp.RoleMaster && st.owner.GuestID == st.guest.ID && d.to == "" {
			// The owner left MASTER: ask the wire who holds the VIP now,
			// in case no other member's claim or GARP reaches us.
			s.KickProbe(vip)
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
	st.roles = map[string]registry.RoleState{}
	ms, err := inventory.Members(tx, st.group)
	if err != nil {
		return st, err
	}
	for _, m := range ms {
		st.guests[m.ID] = m
		if m.ID == st.guest.ID {
			continue
		}
		rs, err := role(m.ID)
		if err != nil {
			return st, err
		}
		if rs.GuestID != "" {
			st.roles[m.ID] = rs
		}
	}
	return st, nil
}

func (s *Engine) recordSplit(sb api.SplitBrain) {
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
