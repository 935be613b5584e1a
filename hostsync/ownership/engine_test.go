package ownership

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

func TestClaimMovesOwnerThenGARPThenEIP(t *testing.T) {
	f := newFixture(t)
	f.nginx()

	res, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER"))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Accepted || res.Owner != "nginx-master" || res.Revision != 1 {
		t.Fatalf("result = %+v", res)
	}
	want := []string{
		// The burst reads the registry: the CAS is already recorded.
		"garp 192.0.2.10 52:54:00:00:00:11 owner=g1",
		"apply ig-nginx:203.0.113.5->192.0.2.10@nginx-master",
	}
	if diff := cmp.Diff(want, f.rec.Take()); diff != "" {
		t.Fatalf("side effects (-want +got):\n%s", diff)
	}
	ms := f.backend.LastSet()
	wantMS := []eip.Mapping{{
		Group: "ig-nginx", EIP: ip("203.0.113.5"), VIP: ip("192.0.2.10"), Owner: "nginx-master",
		OwnerMAC: "52:54:00:00:00:11", OwnerHost: "host-a", NextHop: ip("192.0.2.1"),
	}}
	if diff := cmp.Diff(wantMS, ms, cmp.Comparer(func(a, b eip.Mapping) bool { return a == b })); diff != "" {
		t.Fatalf("mappings (-want +got):\n%s", diff)
	}

	// The owner leaves MASTER: recorded, the mapping stays.
	f.clock.Advance(time.Second)
	res, err = f.svc.Claim(f.ctx, master, transition(2, "BACKUP"))
	if err != nil || !res.Accepted || res.Owner != "nginx-master" {
		t.Fatalf("BACKUP from the owner: %+v, %v", res, err)
	}
	if ev := f.rec.Take(); len(ev) != 0 {
		t.Fatalf("BACKUP from the owner had side effects: %v", ev)
	}

	// The other member claims MASTER: the owner moves.
	f.clock.Advance(time.Second)
	res, err = f.svc.Claim(f.ctx, slave, transition(1, "MASTER"))
	if err != nil || !res.Accepted || res.Owner != "nginx-slave" || res.Revision != 2 {
		t.Fatalf("MASTER from the slave: %+v, %v", res, err)
	}
	want = []string{
		"garp 192.0.2.10 52:54:00:00:00:12 owner=g2",
		"apply ig-nginx:203.0.113.5->192.0.2.10@nginx-slave",
	}
	if diff := cmp.Diff(want, f.rec.Take()); diff != "" {
		t.Fatalf("side effects (-want +got):\n%s", diff)
	}
	if got := f.backend.LastSet()[0].NextHop; got != ip("192.0.2.2") {
		t.Fatalf("next hop = %s, want host-b's 192.0.2.2", got)
	}
	o := f.owner("ig-nginx")
	if o.GuestID != "g2" || o.Revision != 2 || o.Source != "notify" {
		t.Fatalf("owner record = %+v", o)
	}

	// Both moves are in the status's move log, each step stamped in order.
	st, err := f.svc.Status(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.RecentMoves) != 2 {
		t.Fatalf("recent moves = %+v, want 2", st.RecentMoves)
	}
	mv := st.RecentMoves[1]
	if mv.From != "nginx-master" || mv.To != "nginx-slave" || mv.Group != "nginx" {
		t.Fatalf("last move = %+v", mv)
	}
	if mv.Recorded.Before(mv.Received) || mv.Announced.Before(mv.Recorded) || mv.Applied.Before(mv.Announced) || mv.Applied.IsZero() {
		t.Fatalf("move steps out of order: %+v", mv)
	}
}

func TestClaimIdempotentBySeq(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(5, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.rec.Take()
	for _, seq := range []uint64{5, 4, 1} {
		res, err := f.svc.Claim(f.ctx, master, transition(seq, "BACKUP"))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Duplicate || !res.Accepted {
			t.Fatalf("seq %d: %+v, want an accepted duplicate", seq, res)
		}
	}
	if ev := f.rec.Take(); len(ev) != 0 {
		t.Fatalf("duplicates had side effects: %v", ev)
	}
	rs := f.roles("ig-nginx")
	if len(rs) != 1 || rs[0].Role != vrrp.RoleMaster || rs[0].Seq != 5 {
		t.Fatalf("role records = %+v, want MASTER at seq 5 untouched", rs)
	}
}

func TestSplitBrain(t *testing.T) {
	cases := []struct {
		name      string
		first     inventory.Caller
		second    inventory.Caller
		wantOwner string
		wantAcc   bool
		wantEv    []string
	}{
		{
			name:  "lower priority claims while the owner is MASTER: owner kept, re-announced",
			first: master, second: slave, wantOwner: "g1", wantAcc: false,
			wantEv: []string{"garp 192.0.2.10 52:54:00:00:00:11 owner=g1"},
		},
		{
			name:  "higher priority claims while the owner is MASTER: it wins",
			first: slave, second: master, wantOwner: "g1", wantAcc: true,
			wantEv: []string{
				"garp 192.0.2.10 52:54:00:00:00:11 owner=g1",
				"apply ig-nginx:203.0.113.5->192.0.2.10@nginx-master",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.nginx()
			if _, err := f.svc.Claim(f.ctx, tc.first, transition(1, "MASTER")); err != nil {
				t.Fatal(err)
			}
			f.rec.Take()
			// Within two advertisement intervals (1 s each): both elected
			// themselves, which a failover (3 intervals at least) cannot do.
			f.clock.Advance(1500 * time.Millisecond)
			res, err := f.svc.Claim(f.ctx, tc.second, transition(1, "MASTER"))
			if err != nil {
				t.Fatal(err)
			}
			if res.Accepted != tc.wantAcc || !strings.Contains(res.Message, "split brain") {
				t.Fatalf("result = %+v", res)
			}
			if o := f.owner("ig-nginx"); o.GuestID != tc.wantOwner {
				t.Fatalf("owner = %s, want %s", o.GuestID, tc.wantOwner)
			}
			if diff := cmp.Diff(tc.wantEv, f.rec.Take()); diff != "" {
				t.Fatalf("side effects (-want +got):\n%s", diff)
			}
			st, _ := f.svc.Status(f.ctx)
			if st.SplitBrains != 1 || st.LastSplitBrain == nil || st.LastSplitBrain.Winner != "nginx-master" ||
				!strings.Contains(st.LastSplitBrain.Reason, "priority 250 over 230") {
				t.Fatalf("status = %+v", st)
			}
			if !strings.Contains(st.Sentence, "1 split brain") {
				t.Fatalf("sentence %q does not report the split brain", st.Sentence)
			}
		})
	}

	t.Run("three advertisement intervals later it is a failover", func(t *testing.T) {
		f := newFixture(t)
		f.nginx()
		if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
			t.Fatal(err)
		}
		// keepalived's master-down timer: the backup takes over no sooner
		// than three intervals after it last heard the master.
		f.clock.Advance(3 * time.Second)
		res, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER"))
		if err != nil || !res.Accepted || res.Owner != "nginx-slave" {
			t.Fatalf("result = %+v, %v", res, err)
		}
		if st, _ := f.svc.Status(f.ctx); st.SplitBrains != 0 {
			t.Fatalf("split brains = %d, want 0", st.SplitBrains)
		}
	})

	t.Run("after the window it is a failover", func(t *testing.T) {
		f := newFixture(t)
		f.nginx()
		if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(time.Minute) // the owner died silently long after its claim
		res, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER"))
		if err != nil || !res.Accepted || res.Owner != "nginx-slave" {
			t.Fatalf("result = %+v, %v", res, err)
		}
		if st, _ := f.svc.Status(f.ctx); st.SplitBrains != 0 {
			t.Fatalf("split brains = %d, want 0", st.SplitBrains)
		}
	})

	t.Run("the owner reported BACKUP first: no split brain", func(t *testing.T) {
		f := newFixture(t)
		f.nginx()
		_, _ = f.svc.Claim(f.ctx, master, transition(1, "MASTER"))
		_, _ = f.svc.Claim(f.ctx, master, transition(2, "BACKUP"))
		res, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER"))
		if err != nil || !res.Accepted || res.Owner != "nginx-slave" || res.Message != "" {
			t.Fatalf("result = %+v, %v", res, err)
		}
	})
}

func TestResolveSplitTieBreaksOnLowerAddress(t *testing.T) {
	g := registry.Group{Members: []registry.Member{{GuestID: "a", Priority: 50}, {GuestID: "b", Priority: 50}}}
	a := registry.Guest{ID: "a", Name: "a", Address: ip("192.0.2.20")}
	b := registry.Guest{ID: "b", Name: "b", Address: ip("192.0.2.9")}
	for _, order := range [][2]registry.Guest{{a, b}, {b, a}} {
		w, reason := resolveSplit(g, order[0], order[1])
		if w.ID != "b" || !strings.Contains(reason, "lower address 192.0.2.9") {
			t.Fatalf("winner %s (%s), want b with the lower address", w.ID, reason)
		}
	}
}

func TestStaleMasterClaimDoesNotMove(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	_, _ = f.svc.Claim(f.ctx, master, transition(1, "MASTER"))
	f.clock.Advance(time.Hour)
	f.rec.Take()
	tr := transition(1, "MASTER")
	tr.At = f.clock.Now().Add(-10 * time.Minute) // delivered late from the agent's outbox
	res, err := f.svc.Claim(f.ctx, slave, tr)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted || res.Owner != "nginx-master" || !strings.Contains(res.Message, "older than") {
		t.Fatalf("result = %+v", res)
	}
	if ev := f.rec.Take(); len(ev) != 0 {
		t.Fatalf("stale claim had side effects: %v", ev)
	}
}

// TestNonMemberClaimChangesNothing: claims from a registered guest outside
// the group, from an unknown address, from the right address but another
// MAC, and naming another member are refused with inventory.ErrForbidden, and the
// registry, the GARP and the data plane are untouched.
func TestNonMemberClaimChangesNothing(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.rec.Take()
	before := f.owner("ig-nginx")
	rolesBefore := f.roles("ig-nginx")

	named := transition(9, "MASTER")
	named.Member = "nginx-master"
	cases := []struct {
		name   string
		caller inventory.Caller
		t      vrrp.Transition
		msg    string
	}{
		{"guest of another group", inventory.Caller{Addr: ip("192.0.2.15")}, transition(1, "MASTER"), "not a member"},
		{"unknown address", inventory.Caller{Addr: ip("192.0.2.99")}, transition(1, "MASTER"), "not a registered guest"},
		{"member address from another MAC", inventory.Caller{Addr: ip("192.0.2.12"), MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x99}}, transition(9, "MASTER"), "registered with 52:54:00:00:00:12"},
		{"member naming another member", slave, named, `names member "nginx-master"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.svc.Claim(f.ctx, tc.caller, tc.t)
			if !errors.Is(err, inventory.ErrForbidden) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error = %v, want inventory.ErrForbidden saying %q", err, tc.msg)
			}
			if after := f.owner("ig-nginx"); after != before {
				t.Fatalf("owner changed: %+v -> %+v", before, after)
			}
			if diff := cmp.Diff(rolesBefore, f.roles("ig-nginx")); diff != "" {
				t.Fatalf("role records changed (-before +after):\n%s", diff)
			}
			if ev := f.rec.Take(); len(ev) != 0 {
				t.Fatalf("side effects: %v", ev)
			}
		})
	}
}

func TestObserveGARP(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	_, _ = f.svc.Claim(f.ctx, master, transition(1, "MASTER"))
	f.clock.Advance(time.Minute)
	f.rec.Take()
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	masterMAC, _ := net.ParseMAC("52:54:00:00:00:11")

	if !f.svc.WatchVIP(ip("192.0.2.10")) || f.svc.WatchVIP(ip("192.0.2.11")) {
		t.Fatal("WatchVIP must accept the VIP and only it")
	}

	// The owner's own GARP (keepalived refresh, or ours): nothing written.
	res, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: masterMAC})
	if err != nil || res.Owner != "nginx-master" {
		t.Fatalf("owner's GARP: %+v, %v", res, err)
	}
	if o := f.owner("ig-nginx"); o.Revision != 1 {
		t.Fatalf("owner revision %d after the owner's own GARP, want 1", o.Revision)
	}

	// The slave's keepalived took over while its agent is down.
	res, err = f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC})
	if err != nil || !res.Accepted || res.Owner != "nginx-slave" {
		t.Fatalf("slave's GARP: %+v, %v", res, err)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g2" || o.Source != SourceGARP {
		t.Fatalf("owner = %+v, want g2 learnt from garp", o)
	}
	want := []string{
		"garp 192.0.2.10 52:54:00:00:00:12 owner=g2",
		"apply ig-nginx:203.0.113.5->192.0.2.10@nginx-slave",
	}
	if diff := cmp.Diff(want, f.rec.Take()); diff != "" {
		t.Fatalf("side effects (-want +got):\n%s", diff)
	}

	// A MAC that is no member's, and an address that is no VIP.
	stranger, _ := net.ParseMAC("52:54:00:00:00:99")
	for _, o := range []garp.Observation{{VIP: ip("192.0.2.10"), MAC: stranger}, {VIP: ip("192.0.2.77"), MAC: slaveMAC}} {
		if _, err := f.svc.Observe(f.ctx, o); !errors.Is(err, inventory.ErrForbidden) {
			t.Fatalf("observe %+v: %v, want inventory.ErrForbidden", o, err)
		}
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g2" || o.Revision != 2 {
		t.Fatalf("owner = %+v after ignored observations", o)
	}
}

func TestBurstScheduleAndCancellation(t *testing.T) {
	t.Run("the first round precedes the apply, the burst's later rounds follow", func(t *testing.T) {
		f := newFixture(t)
		f.ann.Rounds = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}
		f.nginx()
		if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
			t.Fatal(err)
		}
		var ev []string
		waitFor(t, "three rounds", func() bool { ev = append(ev, f.rec.Take()...); return len(ev) >= 4 })
		garp := "garp 192.0.2.10 52:54:00:00:00:11 owner=g1"
		want := []string{garp, "apply ig-nginx:203.0.113.5->192.0.2.10@nginx-master", garp, garp}
		if diff := cmp.Diff(want, ev); diff != "" {
			t.Fatalf("side effects (-want +got):\n%s", diff)
		}
	})

	t.Run("a newer move and Close stop the burst", func(t *testing.T) {
		f := newFixture(t)
		f.ann.Rounds = []time.Duration{5 * time.Second}
		f.nginx()
		if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
			t.Fatal(err)
		}
		first := f.ann.Ctx(0)
		if first.Err() != nil {
			t.Fatal("the burst ended before its second round")
		}
		f.clock.Advance(time.Minute)
		if _, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER")); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(first.Err(), context.Canceled) {
			t.Fatalf("the old owner's burst is still running after the move: %v", first.Err())
		}
		second := f.ann.Ctx(1)
		if second.Err() != nil {
			t.Fatal("the new owner's burst ended early")
		}
		f.svc.Close() // waits for the burst goroutine
		if !errors.Is(second.Err(), context.Canceled) {
			t.Fatalf("Close left the burst running: %v", second.Err())
		}
		if ev := f.rec.Take(); len(ev) != 4 {
			t.Fatalf("side effects %v, want one round and one apply per move", ev)
		}
	})
}

func TestDataPlaneFailureIsReportedAndReapplied(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	f.backend.SetErr(errors.New("nft: table busy"))
	res, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER"))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Accepted || !strings.Contains(res.Message, "nft: table busy") {
		t.Fatalf("result = %+v, want accepted with the data-plane error", res)
	}
	st, _ := f.svc.Status(f.ctx)
	if !strings.Contains(st.LastApplyError, "table busy") || !strings.Contains(st.Sentence, "data plane failing") {
		t.Fatalf("status = %+v", st)
	}
	f.backend.SetErr(nil)
	if err := f.svc.Reapply(f.ctx); err != nil {
		t.Fatal(err)
	}
	if ms := f.backend.LastSet(); len(ms) != 1 || ms[0].Owner != "nginx-master" {
		t.Fatalf("re-applied %+v", ms)
	}
	if st, _ := f.svc.Status(f.ctx); st.LastApplyError != "" {
		t.Fatalf("error kept after a good apply: %q", st.LastApplyError)
	}
}

func TestOwnerLeavingClearsOwner(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	_, _ = f.svc.Claim(f.ctx, master, transition(1, "MASTER"))
	f.rec.Take()
	v, err := f.svc.Leave(f.ctx, "nginx", []string{"nginx-master"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Owner != nil || v.Revision == 0 {
		t.Fatalf("view = %+v, want no owner", v)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "" || o.Revision != 2 {
		t.Fatalf("owner record = %+v, want cleared at revision 2", o)
	}
	if ev := f.rec.Take(); !slices.Equal(ev, []string{"apply ig-nginx:203.0.113.5->192.0.2.10@"}) {
		t.Fatalf("side effects %v, want the mapping re-applied without owner", ev)
	}
	// The one who left is no member any more.
	if _, err := f.svc.Claim(f.ctx, master, transition(2, "MASTER")); !errors.Is(err, inventory.ErrForbidden) {
		t.Fatalf("claim after leaving: %v", err)
	}
}

func TestSentence(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		st   api.HostsyncStatus
		want string
	}{
		{api.HostsyncStatus{Groups: 3, VIPs: 2, LastMove: now.Add(-12 * time.Second)}, "3 groups, 2 VIPs, last move 12 s ago"},
		{api.HostsyncStatus{Groups: 1, VIPs: 1}, "1 group, 1 VIP, no move yet"},
		{api.HostsyncStatus{Groups: 2, VIPs: 0, LastMove: now.Add(-5 * time.Minute), SplitBrains: 2}, "2 groups, 0 VIPs, last move 5 min ago, 2 split brains"},
		{api.HostsyncStatus{LastMove: now.Add(-3 * time.Hour), LastApplyError: "x"}, "0 groups, 0 VIPs, last move 3 h ago, data plane failing"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			if got := Sentence(tc.st, now); got != tc.want {
				t.Fatalf("Sentence = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestOwnerLeavingHandsOverToReportedMaster: a MASTER claim refused as a
// split brain (the owner's leaving MASTER had not reached the registry:
// it waited in another host's claim queue during an etcd leader change)
// is not forgotten. When the owner then reports it left MASTER, the VIP
// goes to the member whose last report is MASTER, announced with its MAC;
// without such a member the owner keeps the VIP as before.
func TestOwnerLeavingHandsOverToReportedMaster(t *testing.T) {
	t.Run("another member reported MASTER", func(t *testing.T) {
		f := newFixture(t)
		f.nginx()
		if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(1500 * time.Millisecond)
		res, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER"))
		if err != nil || res.Accepted || res.Owner != "nginx-master" {
			t.Fatalf("slave's MASTER claim during the split: %+v, %v", res, err)
		}
		f.rec.Take()
		f.clock.Advance(100 * time.Millisecond)
		res, err = f.svc.Claim(f.ctx, master, transition(2, "BACKUP"))
		if err != nil || !res.Accepted || res.Owner != "nginx-slave" {
			t.Fatalf("master's BACKUP: %+v, %v; want the VIP handed to nginx-slave", res, err)
		}
		if got := f.rec.Take(); !slices.Contains(got, "garp 192.0.2.10 52:54:00:00:00:12 owner=g2") {
			t.Fatalf("events %q: want a GARP with nginx-slave's MAC", got)
		}
	})
	t.Run("no other member is MASTER", func(t *testing.T) {
		f := newFixture(t)
		f.nginx()
		if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Claim(f.ctx, slave, transition(1, "BACKUP")); err != nil {
			t.Fatal(err)
		}
		res, err := f.svc.Claim(f.ctx, master, transition(2, "BACKUP"))
		if err != nil || !res.Accepted || res.Owner != "nginx-master" {
			t.Fatalf("master's BACKUP: %+v, %v; want nginx-master to keep the VIP", res, err)
		}
	})
}
