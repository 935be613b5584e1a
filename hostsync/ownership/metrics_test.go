package ownership

import (
	"context"
	"errors"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// histCount is the sample count of the histogram name in g.
func histCount(t testing.TB, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestMetricsFollowClaims drives claims through the engine and checks
// every counter, histogram and gauge they touch: a move (claim, move, GARP
// frames, apply and its latency, the owner series replaced), a split
// brain (re-announce, no move) and a move whose apply fails.
func TestMetricsFollowClaims(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.Metrics = m })
	f.nginx()
	// Binding the EIP applied the data plane already.
	wantOwners(t, m, nil) // no owner yet
	applies := histCount(t, reg, "vipkeeper_hostsync_dataplane_apply_seconds")
	if applies == 0 || promtest.ToFloat64(m.applies.WithLabelValues("ok")) != float64(applies) {
		t.Fatalf("after the EIP was bound: %d applies timed, %v ok", applies, promtest.ToFloat64(m.applies.WithLabelValues("ok")))
	}

	type want struct {
		claims       map[string]float64
		moves        float64
		splitBrains  float64
		garpFrames   float64
		appliesOK    float64
		appliesErr   float64
		applyTimed   uint64
		moveLatency  uint64
		observations float64
		owner        string // the member of group nginx's one owner series
	}
	check := func(t *testing.T, w want) {
		t.Helper()
		wantOwners(t, m, map[string]string{"nginx": w.owner})
		for result, n := range w.claims {
			if got := promtest.ToFloat64(m.claims.WithLabelValues(result)); got != n {
				t.Errorf("claims_total{result=%q} = %v, want %v", result, got, n)
			}
		}
		for name, c := range map[string]struct {
			got, want float64
		}{
			"vip_moves_total":                   {promtest.ToFloat64(m.moves), w.moves},
			"split_brains_total":                {promtest.ToFloat64(m.splitBrains), w.splitBrains},
			"garp_frames_sent_total":            {promtest.ToFloat64(m.garpFrames), w.garpFrames},
			`dataplane_applies_total{ok}`:       {promtest.ToFloat64(m.applies.WithLabelValues("ok")), w.appliesOK},
			`dataplane_applies_total{error}`:    {promtest.ToFloat64(m.applies.WithLabelValues("error")), w.appliesErr},
			`garp_observations_total{accepted}`: {promtest.ToFloat64(m.observations.WithLabelValues("accepted")), w.observations},
		} {
			if c.got != c.want {
				t.Errorf("%s = %v, want %v", name, c.got, c.want)
			}
		}
		if got := histCount(t, reg, "vipkeeper_hostsync_dataplane_apply_seconds"); got != w.applyTimed {
			t.Errorf("dataplane_apply_seconds count = %d, want %d", got, w.applyTimed)
		}
		if got := histCount(t, reg, "vipkeeper_hostsync_claim_to_applied_seconds"); got != w.moveLatency {
			t.Errorf("claim_to_applied_seconds count = %d, want %d", got, w.moveLatency)
		}
	}

	// Each step builds on the one before.
	steps := []struct {
		name string
		do   func(t *testing.T)
		want want
	}{
		{
			name: "first MASTER claim moves the owner: one GARP round (2 frames) and one apply",
			do: func(t *testing.T) {
				if res, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil || !res.Accepted {
					t.Fatalf("claim: %+v %v", res, err)
				}
			},
			want: want{claims: map[string]float64{"accepted": 1}, moves: 1, garpFrames: 2, appliesOK: float64(applies) + 1,
				applyTimed: applies + 1, moveLatency: 1, owner: "nginx-master"},
		},
		{
			name: "the same claim again is a duplicate and changes nothing else",
			do: func(t *testing.T) {
				if res, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil || !res.Duplicate {
					t.Fatalf("claim: %+v %v", res, err)
				}
			},
			want: want{claims: map[string]float64{"accepted": 1, "duplicate": 1}, moves: 1, garpFrames: 2, appliesOK: float64(applies) + 1,
				applyTimed: applies + 1, moveLatency: 1, owner: "nginx-master"},
		},
		{
			name: "split brain: the lower priority claims within the window, the owner is re-announced",
			do: func(t *testing.T) {
				f.clock.Advance(500 * time.Millisecond) // well inside the split-brain window
				if res, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER")); err != nil || res.Accepted {
					t.Fatalf("claim: %+v %v", res, err)
				}
			},
			want: want{claims: map[string]float64{"accepted": 1, "duplicate": 1, "rejected": 1}, moves: 1, splitBrains: 1, garpFrames: 4,
				appliesOK: float64(applies) + 1, applyTimed: applies + 1, moveLatency: 1, owner: "nginx-master"},
		},
		{
			name: "a failover whose apply fails: moved, counted as an apply error, still timed",
			do: func(t *testing.T) {
				f.backend.SetErr(errors.New("nft: boom"))
				f.clock.Advance(time.Second)
				if res, err := f.svc.Claim(f.ctx, master, transition(2, "FAULT")); err != nil || !res.Accepted {
					t.Fatalf("claim: %+v %v", res, err)
				}
				f.clock.Advance(time.Minute)
				if res, err := f.svc.Claim(f.ctx, slave, transition(2, "MASTER")); err != nil || res.Owner != "nginx-slave" {
					t.Fatalf("claim: %+v %v", res, err)
				}
			},
			want: want{claims: map[string]float64{"accepted": 3, "duplicate": 1, "rejected": 1}, moves: 2, splitBrains: 1, garpFrames: 6,
				appliesOK: float64(applies) + 1, appliesErr: 1, applyTimed: applies + 2, moveLatency: 2, owner: "nginx-slave"},
		},
		{
			name: "a GARP from the old owner's MAC moves the VIP back",
			do: func(t *testing.T) {
				f.backend.SetErr(nil)
				f.clock.Advance(time.Minute) // past the split-brain window
				mac, _ := net.ParseMAC("52:54:00:00:00:11")
				if res, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: mac}); err != nil || res.Owner != "nginx-master" {
					t.Fatalf("observe: %+v %v", res, err)
				}
			},
			want: want{claims: map[string]float64{"accepted": 3, "duplicate": 1, "rejected": 1}, moves: 3, splitBrains: 1, garpFrames: 8,
				appliesOK: float64(applies) + 2, appliesErr: 1, applyTimed: applies + 3, moveLatency: 3, observations: 1, owner: "nginx-master"},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do(t)
			check(t, s.want)
		})
	}
}

func TestNewMetricsRefusesDoubleRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering the metrics twice on one registry succeeded")
	}
}

// ownerSeries are the series of vipkeeper_hostsync_group_owner: group →
// member. A group with two series, or a series not 1, fails t.
func ownerSeriesOf(t *testing.T, m *Metrics) map[string]string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.groupOwner)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, mf := range mfs {
		for _, d := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range d.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			g := labels["group"]
			if prev, ok := out[g]; ok {
				t.Errorf("group %s has two owner series: %s and %s", g, prev, labels["member"])
			}
			if v := d.GetGauge().GetValue(); v != 1 {
				t.Errorf("group_owner{group=%q,member=%q} = %v, want 1", g, labels["member"], v)
			}
			out[g] = labels["member"]
		}
	}
	return out
}

// wantOwners checks the owner series: exactly one per group of want with
// a member ("" and absent groups: none).
func wantOwners(t *testing.T, m *Metrics, want map[string]string) {
	t.Helper()
	w := map[string]string{}
	for g, member := range want {
		if member != "" {
			w[g] = member
		}
	}
	if got := ownerSeriesOf(t, m); !maps.Equal(got, w) {
		t.Errorf("group_owner series (group: member) %v, want %v", got, w)
	}
}

// TestOwnerGaugeFollowsRegistry: the owner series come from the registry
// at start, follow an admin change that ends the owner and a group's
// deletion, and another host's moves through the watch (one group read
// again), and a complete re-read after the watch is re-established drops
// what the registry no longer holds.
func TestOwnerGaugeFollowsRegistry(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}

	// A second engine on the same registry, with metrics, as after a
	// restart: it reads the owners at start.
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	other, err := newService(f.ctx, f.store, Options{Logger: testLogger(t), Metrics: m, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	wantOwners(t, m, map[string]string{"nginx": "nginx-master"})

	ctx, cancel := context.WithCancel(f.ctx)
	w := &fakeWatcher{fn: make(chan func([]registry.Change))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		FollowWatch(ctx, other.Engine, w, testLogger(t))
	}()
	defer func() { cancel(); <-done }()
	fn := <-w.fn
	fn(nil) // established
	moveSeen := func(member string) {
		t.Helper()
		waitFor(t, "owner series of "+member, func() bool {
			return maps.Equal(ownerSeriesOf(t, m), map[string]string{"nginx": member})
		})
	}

	// The first engine (another host) moves the VIP.
	f.clock.Advance(time.Minute)
	if _, err := f.svc.Claim(f.ctx, master, transition(2, "BACKUP")); err != nil {
		t.Fatal(err)
	}
	if res, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER")); err != nil || res.Owner != "nginx-slave" {
		t.Fatalf("claim: %+v %v", res, err)
	}
	fn([]registry.Change{{Bucket: registry.BucketOwners, Key: "ig-nginx"}})
	moveSeen("nginx-slave")

	// An update from a read older than what is shown (a lower revision)
	// changes nothing.
	rev := f.owner("ig-nginx").Revision
	m.owner("ig-nginx", "nginx", "nginx-master", rev-1)
	wantOwners(t, m, map[string]string{"nginx": "nginx-slave"})

	// The owner leaves the group through this engine's inventory.
	if _, err := other.Leave(f.ctx, "nginx", []string{"nginx-slave"}); err != nil {
		t.Fatal(err)
	}
	wantOwners(t, m, nil)
	if _, err := other.Join(f.ctx, "nginx", []string{"g2"}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	if _, err := other.Claim(f.ctx, slave, transition(2, "MASTER")); err != nil {
		t.Fatal(err)
	}
	wantOwners(t, m, map[string]string{"nginx": "nginx-slave"})

	// A series this engine believes in while the group is gone from the
	// registry (deleted by another host: no owner change reached the
	// watch) goes with the complete re-read after a watch gap.
	m.owner("ig-gone", "gone", "nginx-master", 1)
	wantOwners(t, m, map[string]string{"nginx": "nginx-slave", "gone": "nginx-master"})
	fn(nil)
	waitFor(t, "the re-read", func() bool {
		return maps.Equal(ownerSeriesOf(t, m), map[string]string{"nginx": "nginx-slave"})
	})
}

// TestOwnerGaugeGroupDeleted: deleting a group (its members gone, its
// VIP detached) leaves no series of it.
func TestOwnerGaugeGroupDeleted(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.Metrics = m })
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	wantOwners(t, m, map[string]string{"nginx": "nginx-master"})
	if _, err := f.svc.DissociateEIP(f.ctx, "nginx"); err != nil {
		t.Fatal(err)
	}
	wantOwners(t, m, map[string]string{"nginx": "nginx-master"})
	if _, err := f.svc.DetachNetwork(f.ctx, "nginx", api.DetachNetwork{}); err != nil {
		t.Fatal(err)
	}
	wantOwners(t, m, nil)
	if _, err := f.svc.Leave(f.ctx, "nginx", []string{"g1", "g2"}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.DeleteGroup(f.ctx, "nginx"); err != nil {
		t.Fatal(err)
	}
	wantOwners(t, m, nil)
	m.mu.Lock()
	n := len(m.owners)
	m.mu.Unlock()
	if n != 0 {
		t.Errorf("%d groups still tracked after the group was deleted, want 0", n)
	}
}

// TestOwnerSeriesCompleteRead: a complete read drops the groups it did
// not find, but not one published while it ran (created after its
// snapshot), and an update older than the one shown is ignored.
func TestOwnerSeriesCompleteRead(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	m.owner("ig-a", "a", "a-1", 3)
	m.owner("ig-b", "b", "b-1", 1)
	m.owner("ig-gone", "gone", "gone-1", 1)
	wantOwners(t, m, map[string]string{"a": "a-1", "b": "b-1", "gone": "gone-1"})

	mark := m.ownersMark()
	// While the read runs: a new group gets an owner, and a move of a.
	m.owner("ig-new", "new", "new-1", 1)
	m.owner("ig-a", "a", "a-2", 4)
	// What the read found (its snapshot predates both): a at revision 3,
	// b without owner now.
	m.owner("ig-a", "a", "a-1", 3)
	m.owner("ig-b", "b", "", 2)
	m.ownersRead(mark, map[string]bool{"ig-a": true, "ig-b": true})
	wantOwners(t, m, map[string]string{"a": "a-2", "new": "new-1"})

	m.ownerGone("ig-new")
	wantOwners(t, m, map[string]string{"a": "a-2"})
	var none *Metrics // a nil *Metrics records nothing
	none.owner("ig-a", "a", "a-1", 1)
	none.ownerGone("ig-a")
	none.ownersRead(none.ownersMark(), nil)
}
