package hostsync

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// Privileged tests and benchmarks of a move with the real data plane: a
// registry of many groups (hstest.ManyBulk) on a real bbolt file, the
// Maps backend programming a namespace of the test's own through netlink
// and a real GARP sender on an interface there. The hosts' addresses
// (hstest.Hosts: host-a 192.0.2.1, host-b 192.0.2.2) are on a veth's
// subnet, so the VIP routes are accepted by the kernel; no
// frame leaves the namespace.

// moveRig is a hostsync of groups groups with its data plane in ns.
type moveRig struct {
	tb    testing.TB
	ns    string
	svc   *Service
	maps  *countingMaps
	nl    *netlink.Handle
	seq   map[netip.Addr]uint64
	store *registry.Bolt
}

// newMoveRig builds the rig; with completeApply the backend is hidden
// behind its Apply alone, so every move applies the complete set (the
// path before moves were followed one mapping at a time).
func newMoveRig(tb testing.TB, groups int, completeApply bool, log *slog.Logger) *moveRig {
	tb.Helper()
	testutil.RequireRoot(tb)
	ns := testutil.NewNetns(tb, "mv")
	testutil.IP(tb, "-n", ns, "link", "add", "hosts0", "type", "veth", "peer", "name", "hosts1")
	testutil.IP(tb, "-n", ns, "addr", "add", "192.0.2.100/24", "dev", "hosts0")
	testutil.IP(tb, "-n", ns, "link", "set", "hosts0", "up")
	testutil.IP(tb, "-n", ns, "link", "set", "hosts1", "up")
	h, err := netns.GetFromName(ns)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nl.Close)
	m, err := eip.NewMaps(eip.MapsOptions{NetNS: int(h), Netlink: nl, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	cm := &countingMaps{Maps: m}
	var backend eip.Backend = cm
	if completeApply {
		backend = struct{ eip.Backend }{cm}
	}
	var sender *garp.Sender
	var conn io.Closer
	err = testutil.InNetns(ns, func() error {
		sender, conn, err = garp.OpenSender("hosts0", garp.Options{Logger: log})
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })

	st := openStore(tb)
	hstest.ManyBulk(tb, tb.Context(), st, groups)
	svc, err := New(tb.Context(), st, Options{Logger: log, Announcer: sender, Backend: backend, Hosts: hstest.Hosts()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	if err := svc.Reapply(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	return &moveRig{tb: tb, ns: ns, svc: svc, maps: cm, nl: nl, seq: map[netip.Addr]uint64{}, store: st}
}

// countingMaps is the Maps backend (its Move, Reconcile, ... promoted)
// counting the complete applies it is asked for.
type countingMaps struct {
	*eip.Maps
	applies atomic.Int64
}

func (c *countingMaps) Apply(ctx context.Context, ms []eip.Mapping) error {
	c.applies.Add(1)
	return c.Maps.Apply(ctx, ms)
}

// claim reports role for member m (0, 1) of group i and fails on refusal.
func (r *moveRig) claim(i, m int, role string) {
	r.tb.Helper()
	a := hstest.ManyMember(i, m)
	r.seq[a]++
	res, err := r.svc.Claim(r.tb.Context(), inventory.Caller{Addr: a}, transition(r.seq[a], role))
	if err != nil || !res.Accepted {
		r.tb.Fatalf("group %d member %d %s: %+v, %v", i, m, role, res, err)
	}
}

// move makes member to of group i the owner as a failover does: the
// owner steps down, then to claims MASTER. It returns the move's record.
func (r *moveRig) move(i, to int) (before eip.Writes, mv moveRecord) {
	r.tb.Helper()
	r.claim(i, 1-to, "BACKUP")
	before = r.maps.Writes()
	r.claim(i, to, "MASTER")
	return before, r.lastMove(i, to)
}

// observe makes member to of group i the owner as a move learnt from the
// wire does: the owner steps down, then to's gratuitous ARP for the VIP
// is observed (Engine.Observe, as the listener reports it). It returns
// the move's record.
func (r *moveRig) observe(i, to int) moveRecord {
	r.tb.Helper()
	r.claim(i, 1-to, "BACKUP")
	mac, err := net.ParseMAC(fmt.Sprintf("52:54:01:%02x:%02x:%02x", i>>8, i&0xff, to)) // hstest.ManyBulk's
	if err != nil {
		r.tb.Fatal(err)
	}
	res, err := r.svc.Observe(r.tb.Context(), garp.Observation{VIP: hstest.ManyVIP(i), MAC: mac, Interface: "hosts0", At: time.Now()})
	if err != nil || !res.Accepted {
		r.tb.Fatalf("group %d: GARP of member %d: %+v, %v", i, to, res, err)
	}
	return r.lastMove(i, to)
}

// lastMove is the record of the move just made to member to of group i.
func (r *moveRig) lastMove(i, to int) moveRecord {
	r.tb.Helper()
	moves := r.svc.RecentMoves()
	if len(moves) == 0 {
		r.tb.Fatal("no move recorded")
	}
	last := moves[len(moves)-1]
	want := hstest.ManyGroup(i) + []string{"-a", "-b"}[to]
	if last.To != want || last.Applied.IsZero() || last.ApplyError != "" {
		r.tb.Fatalf("last move %+v, want to %s applied", last, want)
	}
	return moveRecord{apply: last.Applied.Sub(last.Announced), whole: last.Applied.Sub(last.Received)}
}

type moveRecord struct{ apply, whole time.Duration }

// route is the next hop of group i's VIP route in the namespace ("" when
// none).
func (r *moveRig) route(i int) string {
	r.tb.Helper()
	vip := hstest.ManyVIP(i)
	rs, err := r.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: eip.DefaultRouteProtocol},
		netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		r.tb.Fatal(err)
	}
	for _, rt := range rs {
		if rt.Dst != nil && rt.Dst.IP.Equal(vip.AsSlice()) {
			return rt.Gw.String()
		}
	}
	return ""
}

func writesSince(m *countingMaps, before eip.Writes) eip.Writes {
	w := m.Writes()
	return eip.Writes{Batches: w.Batches - before.Batches, Elements: w.Elements - before.Elements, Routes: w.Routes - before.Routes,
		Limits: w.Limits - before.Limits}
}

// TestNetnsMoveWritesOneRoute is issue 14's move: owner compare-and-swap,
// GARP and one route replace, no NAT write — for a claim on this host and
// for an owner change another host made (learnt through the registry
// watch) — with 1,000 groups mapped.
func TestNetnsMoveWritesOneRoute(t *testing.T) {
	r := newMoveRig(t, 1_000, false, testLogger(t))
	if st, err := r.maps.Programmed(t.Context()); err != nil || st.Mappings != 1_000 {
		t.Fatalf("Programmed = %+v, %v; want 1000 mappings", st, err)
	}
	if got := r.route(7); got != "" {
		t.Fatalf("route of a group without owner via %q, want none", got)
	}
	applies := r.maps.applies.Load()
	for step, to := range []int{0, 1, 0} {
		before, _ := r.move(7, to)
		if w := writesSince(r.maps, before); w != (eip.Writes{Routes: 1}) {
			t.Errorf("move %d wrote %+v, want exactly one route", step, w)
		}
		if n := r.maps.applies.Load() - applies; n != 0 {
			t.Errorf("move %d: %d complete applies (all 1,000 mappings planned), want none", step, n)
		}
		want := []string{"192.0.2.1", "192.0.2.2"}[to] // host-a, host-b
		if got := r.route(7); got != want {
			t.Errorf("move %d: VIP routed via %q, want %s", step, got, want)
		}
	}

	// Another host moves group 8 (its owner record changes in the shared
	// registry); the watch tells this process, which follows that group
	// alone.
	w := &gapWatcher{fn: make(chan func([]registry.Change))}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		defer close(done)
		ownership.FollowWatch(ctx, r.svc.Engine, w, testLogger(t))
	}()
	defer func() { cancel(); <-done }()
	fn := <-w.fn
	lastApply := func() time.Time {
		st, err := r.svc.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return st.LastApply
	}
	applied := lastApply()
	fn(nil) // established: the first round is a complete apply with reconcile
	hstest.WaitFor(t, "the apply after the watch was established", func() bool { return lastApply().After(applied) })
	before, applies := r.maps.Writes(), r.maps.applies.Load()
	err := r.store.Update(t.Context(), func(tx registry.Tx) error {
		_, err := registry.SwapOwner(tx, 0, registry.Owner{Group: "ig-" + hstest.ManyGroup(8), GuestID: hstest.ManyGroup(8) + "-b",
			Since: time.Now(), Source: "notify", ClaimedAt: time.Now(), MasterAt: time.Now()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fn([]registry.Change{{Bucket: registry.BucketOwners, Key: "ig-" + hstest.ManyGroup(8)}})
	hstest.WaitFor(t, "group 8 routed via host-b", func() bool { return r.route(8) == "192.0.2.2" })
	if w := writesSince(r.maps, before); w != (eip.Writes{Routes: 1}) {
		t.Errorf("following another host's move wrote %+v, want exactly one route", w)
	}
	if n := r.maps.applies.Load() - applies; n != 0 {
		t.Errorf("following another host's move: %d complete applies, want none", n)
	}
}

// BenchmarkMove measures one failover's move at 1, 1,000 and 10,000
// mapped EIPs: the MASTER claim through Service.Claim (after the old
// owner stepped down, untimed), its owner compare-and-swap committed to
// bbolt, the first GARP round written and the data plane re-pointed
// through netlink. apply-p50/p99-ms is the data-plane step (after the
// GARP round until the route is in); move-p50/p99-ms the whole move from
// the claim's arrival; routes/op and elements/op what the backend wrote.
// Groups are moved in turn (a stride through the table, alternating
// owner). path=move is the move as it is (eip.Mover: the one group's
// mapping); path=observed the same move learnt from the new owner's
// gratuitous ARP (Engine.Observe: the VIP's group found through the VIP
// index) instead of its agent's claim; path=complete-apply hides Move
// from the engine, so each move reads every group and applies the
// complete set, as before.
func BenchmarkMove(b *testing.B) {
	for _, n := range []int{1, 1_000, 10_000} {
		for _, path := range []string{"move", "observed", "complete-apply"} {
			b.Run(fmt.Sprintf("eips=%d/path=%s", n, path), func(b *testing.B) {
				benchMove(b, n, path)
			})
		}
	}
}

func benchMove(b *testing.B, n int, path string) {
	r := newMoveRig(b, n, path == "complete-apply", slog.New(slog.DiscardHandler))
	owner := make([]int, n)
	for i := range n {
		owner[i] = -1
	}
	var apply, whole []time.Duration
	start := r.maps.Writes()
	k := 0
	for b.Loop() {
		i := (k * 7919) % n // spread over the table
		k++
		to := 0
		if owner[i] == 0 {
			to = 1
		}
		if owner[i] == -1 {
			r.claim(i, 1, "BACKUP") // first move of this group: nobody owns it
		}
		var mv moveRecord
		if path == "observed" {
			mv = r.observe(i, to)
		} else {
			_, mv = r.move(i, to)
		}
		owner[i] = to
		apply, whole = append(apply, mv.apply), append(whole, mv.whole)
	}
	w := writesSince(r.maps, start)
	b.ReportMetric(float64(w.Routes)/float64(k), "routes/op")
	b.ReportMetric(float64(w.Elements)/float64(k), "elements/op")
	b.ReportMetric(ms(pct(apply, 0.50)), "apply-p50-ms")
	b.ReportMetric(ms(pct(apply, 0.99)), "apply-p99-ms")
	b.ReportMetric(ms(pct(whole, 0.50)), "move-p50-ms")
	b.ReportMetric(ms(pct(whole, 0.99)), "move-p99-ms")
}

func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkProbeAnswer measures what each answer to the periodic probe
// costs hostsync (every probe_interval each VIP is probed and its holder
// answers): the owner's ARP reply observed (Engine.Observe with Reply),
// which finds the VIP's group, checks the member and writes nothing. At
// 10,000 groups a probe round brings 10,000 of them every 10 s.
func BenchmarkProbeAnswer(b *testing.B) {
	for _, n := range []int{1, 1_000, 10_000} {
		b.Run(fmt.Sprintf("groups=%d", n), func(b *testing.B) {
			r := newMoveRig(b, n, false, slog.New(slog.DiscardHandler))
			const owned = 100 // groups given an owner, answered in turn
			groups := make([]int, 0, owned)
			for k := range min(n, owned) {
				i := (k * 7919) % n
				r.claim(i, 0, "MASTER")
				groups = append(groups, i)
			}
			k := 0
			for b.Loop() {
				i := groups[k%len(groups)]
				k++
				mac, err := net.ParseMAC(fmt.Sprintf("52:54:01:%02x:%02x:00", i>>8, i&0xff))
				if err != nil {
					b.Fatal(err)
				}
				res, err := r.svc.Observe(b.Context(), garp.Observation{VIP: hstest.ManyVIP(i), MAC: mac, Interface: "hosts0", Reply: true, At: time.Now()})
				if err != nil || res.Owner != hstest.ManyGroup(i)+"-a" {
					b.Fatalf("group %d: the owner's answer: %+v, %v", i, res, err)
				}
			}
		})
	}
}
