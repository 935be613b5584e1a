package ownership

import (
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
)

// queuedEvent is one claim a host queued while the registry was away.
type queuedEvent struct {
	name   string
	caller inventory.Caller
	seq    uint64
	role   string
	at     time.Time // the guest's stamp
	queued time.Time // when the host stored it
}

func (e queuedEvent) entry() queuedClaim {
	tr := transition(e.seq, e.role)
	tr.At = e.at
	return queuedClaim{Kind: queuedClaimKind, Addr: e.caller.Addr, Transition: &tr, Queued: e.queued}
}

// interleavings returns every merge of a and b that keeps the order of
// each (two hosts replaying their own queues, in any timing).
func interleavings(a, b []queuedEvent) [][]queuedEvent {
	if len(a) == 0 {
		return [][]queuedEvent{append([]queuedEvent(nil), b...)}
	}
	if len(b) == 0 {
		return [][]queuedEvent{append([]queuedEvent(nil), a...)}
	}
	var out [][]queuedEvent
	for _, rest := range interleavings(a[1:], b) {
		out = append(out, append([]queuedEvent{a[0]}, rest...))
	}
	for _, rest := range interleavings(a, b[1:]) {
		out = append(out, append([]queuedEvent{b[0]}, rest...))
	}
	return out
}

func names(es []queuedEvent) string {
	var s []string
	for _, e := range es {
		s = append(s, e.name)
	}
	return strings.Join(s, ", ")
}

// replayInOrder stores es in one claim queue, in the order given, and
// replays it with the registry back, at the fixture's clock.
func replayInOrder(t *testing.T, es []queuedEvent) *fixture {
	t.Helper()
	q := openQueue(t)
	f := newFixture(t, func(o *Options) { o.Queue = q })
	f.nginx()
	for _, e := range es {
		if err := q.push(e.entry()); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// TestReplayOrdersByEventTime is defect 7 of issue 11: claims queued on
// two hosts during a quorum loss — per group b BACKUP (host 2), a MASTER
// (host 1), a BACKUP (host 1), b MASTER (host 2), the last — end with b
// as the owner whatever order the hosts replay them in: the replay
// compares the guests' event times, not the time the first replayed
// claim happened to be committed.
func TestReplayOrdersByEventTime(t *testing.T) {
	t0 := newClock().Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ev := func(name string, c inventory.Caller, seq uint64, role string, d time.Duration) queuedEvent {
		return queuedEvent{name: name, caller: c, seq: seq, role: role, at: at(d), queued: at(d + 5*time.Millisecond)}
	}
	host1 := []queuedEvent{ // nginx-master's claims, on host 1
		ev("a MASTER", master, 1, "MASTER", 2*time.Second),
		ev("a BACKUP", master, 2, "BACKUP", 3*time.Second),
	}
	host2 := []queuedEvent{ // nginx-slave's claims, on host 2
		ev("b BACKUP", slave, 1, "BACKUP", 1*time.Second),
		ev("b MASTER", slave, 2, "MASTER", 4*time.Second),
	}
	for _, order := range interleavings(host1, host2) {
		t.Run(names(order), func(t *testing.T) {
			f := replayInOrder(t, order)
			f.clock.Advance(30 * time.Second) // quorum is back
			if n, err := f.svc.ReplayQueue(f.ctx); err != nil || n != len(order) {
				t.Fatalf("replay: %d, %v", n, err)
			}
			o := f.owner("ig-nginx")
			if o.GuestID != "g2" {
				t.Fatalf("owner %+v, want g2 (nginx-slave, the last MASTER by event time)", o)
			}
			if ms := f.backend.LastSet(); len(ms) != 1 || ms[0].Owner != "nginx-slave" {
				t.Fatalf("data plane %+v, want the EIP pointing at nginx-slave", ms)
			}
		})
	}
}

// TestReplayOwnersLaterReclaim: the owner's own MASTER claim, queued on
// its host, is later than another member's queued MASTER claim; the
// owner's re-claim (which moves nothing, it already owns the VIP) still
// counts when the other claim is replayed after it, and a replay in the
// other order ends with the owner too.
func TestReplayOwnersLaterReclaim(t *testing.T) {
	t0 := newClock().Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	aAgain := queuedEvent{name: "a MASTER again", caller: master, seq: 2, role: "MASTER", at: at(5 * time.Second), queued: at(5 * time.Second)}
	bMaster := queuedEvent{name: "b MASTER", caller: slave, seq: 1, role: "MASTER", at: at(4 * time.Second), queued: at(4 * time.Second)}
	for _, order := range interleavings([]queuedEvent{aAgain}, []queuedEvent{bMaster}) {
		t.Run(names(order), func(t *testing.T) {
			q := openQueue(t)
			f := newFixture(t, func(o *Options) { o.Queue = q })
			f.nginx()
			first := transition(1, "MASTER")
			first.At = t0
			if res, err := f.svc.Claim(f.ctx, master, first); err != nil || res.Owner != "nginx-master" {
				t.Fatalf("first claim: %+v, %v", res, err)
			}
			for _, e := range order {
				if err := q.push(e.entry()); err != nil {
					t.Fatal(err)
				}
			}
			f.clock.Advance(30 * time.Second)
			if n, err := f.svc.ReplayQueue(f.ctx); err != nil || n != 2 {
				t.Fatalf("replay: %d, %v", n, err)
			}
			if o := f.owner("ig-nginx"); o.GuestID != "g1" {
				t.Fatalf("owner %+v, want g1 (nginx-master re-claimed MASTER last)", o)
			}
		})
	}
}

// TestFutureStampBounded: a claim stamped far in the future (a guest
// whose clock runs ahead) counts as received when hostsync got it, so it
// neither wins the replay's ordering against a later event nor escapes
// the stale-claim rule; the answer names transition.at.
func TestFutureStampBounded(t *testing.T) {
	t0 := newClock().Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ahead := queuedEvent{name: "a MASTER stamped an hour ahead", caller: master, seq: 1, role: "MASTER", at: at(time.Hour), queued: at(2 * time.Second)}
	bMaster := queuedEvent{name: "b MASTER", caller: slave, seq: 1, role: "MASTER", at: at(4 * time.Second), queued: at(4 * time.Second)}
	for _, order := range interleavings([]queuedEvent{ahead}, []queuedEvent{bMaster}) {
		t.Run(names(order), func(t *testing.T) {
			f := replayInOrder(t, order)
			f.clock.Advance(30 * time.Second)
			if n, err := f.svc.ReplayQueue(f.ctx); err != nil || n != 2 {
				t.Fatalf("replay: %d, %v", n, err)
			}
			if o := f.owner("ig-nginx"); o.GuestID != "g2" {
				t.Fatalf("owner %+v, want g2 (nginx-slave's claim is the later event)", o)
			}
		})
	}
	t.Run("live", func(t *testing.T) {
		f := newFixture(t)
		f.nginx()
		tr := transition(1, "MASTER")
		tr.At = f.clock.Now().Add(time.Hour)
		res, err := f.svc.Claim(f.ctx, master, tr)
		if err != nil || res.Owner != "nginx-master" {
			t.Fatalf("claim: %+v, %v", res, err)
		}
		if !strings.Contains(res.Message, "transition.at") {
			t.Fatalf("message %q does not name transition.at", res.Message)
		}
		if o := f.owner("ig-nginx"); !o.ClaimedAt.Equal(f.clock.Now()) {
			t.Fatalf("owner stamped %s, want hostsync's clock %s", o.ClaimedAt, f.clock.Now())
		}
	})
}

// TestReplayAfterLongOutageStillMoves: a claim's age counts until it was
// queued, not until the registry came back. An outage longer than the
// stale-claim limit (2 minutes by default) must not turn the last MASTER
// claim queued during it into a no-op.
func TestReplayAfterLongOutageStillMoves(t *testing.T) {
	t0 := newClock().Now()
	bMaster := queuedEvent{name: "b MASTER", caller: slave, seq: 1, role: "MASTER", at: t0.Add(time.Second), queued: t0.Add(time.Second + 5*time.Millisecond)}
	f := replayInOrder(t, []queuedEvent{bMaster})
	f.clock.Advance(10 * time.Minute) // quorum is back after a long outage
	if n, err := f.svc.ReplayQueue(f.ctx); err != nil || n != 1 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g2" {
		t.Fatalf("owner %+v, want g2 (nginx-slave's MASTER claim was fresh when it was queued)", o)
	}
}
