package ownership

import (
	"fmt"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

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
	// to is the member a move goes to when it is not the claimant: the
	// owner left MASTER while another member's last report is MASTER
	// (its claim was refused as a split brain because the owner's leaving
	// had not reached the registry yet, e.g. it waited in a claim queue).
	to string
}

// claimState is the snapshot a decision is made on.
type claimState struct {
	guest  registry.Guest
	group  registry.Group
	owner  registry.Owner
	self   registry.RoleState // zero when the member never reported
	other  registry.RoleState // the current owner's role (when not self)
	guests map[string]registry.Guest
	// roles holds the last reported role of every other member that
	// reported one, by guest ID.
	roles map[string]registry.RoleState
}

// decide is the claim policy, a pure function of the snapshot.
func (s *Engine) decide(st claimState, in claimIn, now time.Time) decision {
	if in.seq != 0 && in.seq <= st.self.Seq && (in.epoch == "" || in.epoch == st.self.Epoch) {
		// Seen in this stream. Another epoch is a re-created agent
		// database numbering from 1 again: a new stream, not a duplicate.
		return decision{duplicate: true}
	}
	self := st.guest
	if in.role != vrrp.RoleMaster {
		if st.owner.GuestID == self.ID {
			if next, ok := s.handoverTarget(st, now); ok {
				return decision{move: true, accepted: true, to: next.ID, message: fmt.Sprintf(
					"%s left MASTER (%s); %s reported MASTER and holds the VIP now", self.Name, in.role, next.Name)}
			}
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
	window := splitWindow(s.window, st.group)
	if latest := st.owner.LatestMaster(); !in.replayed && !latest.IsZero() && latest.Sub(event) >= window {
		// Old news delivered late (an agent's outbox emptied after
		// hostsync was away): the owner became MASTER, or was found
		// holding the VIP, more than the split-brain window after this
		// transition. Had the claimant still held the VIP then, it would
		// have answered the probe or announced itself as well; its later
		// reports say what it does now. Not two masters: the VIP stays.
		return decision{accepted: false, message: fmt.Sprintf("MASTER claim stamped %s predates the owner's latest MASTER (%s) by %s, more than the split-brain window %s; recorded, VIP not moved",
			event.Format(time.RFC3339Nano), latest.Format(time.RFC3339Nano), latest.Sub(event).Round(time.Millisecond), window)}
	}
	if in.replayed {
		// A replayed claim later than the owner's latest MASTER claim is
		// the later event: it moves the VIP. It is not judged a split
		// brain, since the owner's leaving MASTER may itself still wait
		// in a queue (a real split brain shows live: probes, GARP).
		return decision{move: true, accepted: true}
	}
	cur, ok := st.guests[st.owner.GuestID]
	ownerEvent := st.owner.LatestMaster()
	if !ok || st.other.Role != vrrp.RoleMaster || now.Sub(st.other.MasterAt) >= window ||
		(!ownerEvent.IsZero() && event.Sub(ownerEvent) >= window) {
		// The owner left MASTER, left the group, or became MASTER long
		// enough before this claim that this is a failover, not two
		// masters: by hostsync's clock (when the owner's claim was
		// recorded) or by the events' own times (keepalived's two
		// transitions; the owner's report may have reached hostsync up
		// to a few hundred milliseconds after its transition, which
		// with a short advert_int is longer than the window).
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
// intervals of the group. Members that both elect themselves MASTER (a
// partition, or a start without hearing each other) do so within about
// one interval; a failover after the old master fell silent comes three
// intervals (keepalived's master-down timer) later. One after a resign
// (priority 0) can come sooner, which is why decide also compares the
// transitions' own times, not only when their reports arrived.
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

// handoverTarget is the member the VIP goes to when its owner leaves
// MASTER: the other member whose last report is MASTER, the most recent
// if several, recorded within the stale-claim age. Its MASTER claim was
// refused while the owner still counted as MASTER (a split brain, or the
// owner's leaving queued on another host during a registry outage); with
// the owner gone it is the only master left, as VRRP itself would have
// it. None: the owner keeps the VIP until a claim, GARP or probe says
// who holds it.
func (s *Engine) handoverTarget(st claimState, now time.Time) (registry.Guest, bool) {
	var best registry.RoleState
	for id, rs := range st.roles {
		if id == st.guest.ID || rs.Role != vrrp.RoleMaster || now.Sub(rs.MasterAt) > s.staleAge {
			continue
		}
		if _, member := st.guests[id]; !member {
			continue
		}
		if best.GuestID == "" || rs.MasterAt.After(best.MasterAt) || (rs.MasterAt.Equal(best.MasterAt) && id < best.GuestID) {
			best = rs
		}
	}
	if best.GuestID == "" {
		return registry.Guest{}, false
	}
	return st.guests[best.GuestID], true
}
