package ownership

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vipkeeper/vipkeeper/hostsync/garp"
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
// every counter and histogram they touch: a move (claim, move, GARP
// frames, apply and its latency), a split brain (re-announce, no move) and
// a move whose apply fails.
func TestMetricsFollowClaims(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.Metrics = m })
	f.nginx()
	// Binding the EIP applied the data plane already.
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
	}
	check := func(t *testing.T, w want) {
		t.Helper()
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
				applyTimed: applies + 1, moveLatency: 1},
		},
		{
			name: "the same claim again is a duplicate and changes nothing else",
			do: func(t *testing.T) {
				if res, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil || !res.Duplicate {
					t.Fatalf("claim: %+v %v", res, err)
				}
			},
			want: want{claims: map[string]float64{"accepted": 1, "duplicate": 1}, moves: 1, garpFrames: 2, appliesOK: float64(applies) + 1,
				applyTimed: applies + 1, moveLatency: 1},
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
				appliesOK: float64(applies) + 1, applyTimed: applies + 1, moveLatency: 1},
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
				appliesOK: float64(applies) + 1, appliesErr: 1, applyTimed: applies + 2, moveLatency: 2},
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
				appliesOK: float64(applies) + 2, appliesErr: 1, applyTimed: applies + 3, moveLatency: 3, observations: 1},
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
