package hostsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
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
				f.backend.setErr(errors.New("nft: boom"))
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
				f.backend.setErr(nil)
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

func port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRunMetricsEndpoint runs the daemon with metrics_listen set and with
// it empty. Set: /metrics is served on that address (and on no other new
// port but the guest API's), shows a move learnt from GARP with its GARP
// frames and timed applies, and is gone once Run returns. Empty: the only
// TCP listener Run opens is the guest API.
func TestRunMetricsEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen string
	}{
		{"on", "127.0.0.1:0"},
		{"off", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := ParseConfig("test.toml", []byte(fmt.Sprintf(`
state_dir = %q
admin_socket = %q
guest_listen = "127.0.0.1:0"
metrics_listen = %q
reapply_interval = "1h"
[dataplane]
backend = "none"
`, dir, filepath.Join(dir, "hostsync.sock"), tc.listen)))
			if err != nil {
				t.Fatal(err)
			}
			seedNginxOwnedByMaster(t, cfg)

			backend := &fakeBackend{}
			observe := make(chan garp.Observation)
			p := &Platform{
				Backend:   backend,
				Announcer: &fakeAnnouncer{rec: &recorder{}},
				Listen: func(ctx context.Context, watch func(netip.Addr) bool, report func(garp.Observation)) error {
					for {
						select {
						case <-ctx.Done():
							return ctx.Err()
						case o := <-observe:
							if watch(o.VIP) {
								report(o)
							}
						}
					}
				},
			}
			logs := testutil.NewLogRecorder(testLogger(t).Handler())
			before := testutil.ListenPorts(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg, slog.New(logs), p) }()
			waitFor(t, "the start log", func() bool { _, ok := logs.Attr("hostsync started", "metrics"); return ok })
			guest, _ := logs.Attr("hostsync started", "guest_api")
			addr, _ := logs.Attr("hostsync started", "metrics")
			// The start log comes just before the listeners accept: wait
			// until the guest API's port (and the metrics one, when on)
			// shows up, then look at the whole set.
			var got map[int]bool
			waitFor(t, "the listeners", func() bool {
				got = testutil.NewPorts(before, testutil.ListenPorts(t))
				if !got[port(t, guest)] {
					return false
				}
				return tc.listen == "" || (addr != "off" && got[port(t, addr)])
			})

			if tc.listen == "" {
				if addr != "off" {
					t.Errorf("start log says metrics %q, want off", addr)
				}
				if len(got) != 1 || !got[port(t, guest)] {
					t.Errorf("new TCP listeners on ports %v, want only the guest API's %s", got, guest)
				}
			} else {
				if len(got) != 2 || !got[port(t, guest)] || !got[port(t, addr)] {
					t.Fatalf("new TCP listeners on ports %v, want the guest API's %s and metrics %s", got, guest, addr)
				}
				url := "http://" + addr + "/metrics"
				waitFor(t, "the data plane applied at start", func() bool { return len(backend.lastSet()) == 1 })
				slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
				observe <- garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: time.Now()}
				waitFor(t, "the mapping re-pointed", func() bool {
					ms := backend.lastSet()
					return len(ms) == 1 && ms[0].Owner == "nginx-slave"
				})
				var s map[string]float64
				waitFor(t, "the move in /metrics", func() bool {
					s = testutil.Scrape(t, url)
					return s["vipkeeper_hostsync_vip_moves_total"] == 1
				})
				for series, want := range map[string]float64{
					`vipkeeper_hostsync_garp_observations_total{result="accepted"}`: 1,
					`vipkeeper_hostsync_dataplane_applies_total{result="ok"}`:       2, // at start, after the move
					"vipkeeper_hostsync_dataplane_apply_seconds_count":              2,
					"vipkeeper_hostsync_claim_to_applied_seconds_count":             1,
					"vipkeeper_hostsync_split_brains_total":                         0,
				} {
					if s[series] != want {
						t.Errorf("%s = %v, want %v", series, s[series], want)
					}
				}
				// The first round went out before the apply; later rounds follow.
				if n := s["vipkeeper_hostsync_garp_frames_sent_total"]; n < 2 || int(n)%2 != 0 {
					t.Errorf("garp_frames_sent_total = %v, want whole rounds of 2", n)
				}
				if _, ok := s["process_start_time_seconds"]; !ok {
					t.Error("no process metrics")
				}
			}

			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Run returned %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not stop")
			}
			if tc.listen != "" {
				if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
					resp.Body.Close()
					t.Error("/metrics still answers after Run returned")
				}
			}
			if left := testutil.NewPorts(before, testutil.ListenPorts(t)); len(left) != 0 {
				t.Errorf("listeners left open after Run returned: %v", left)
			}
		})
	}
}

// seedNginxOwnedByMaster writes the seed's group, owned by nginx-master
// since an hour ago, into the registry at cfg.DBPath.
func seedNginxOwnedByMaster(t *testing.T, cfg Config) {
	t.Helper()
	store, err := registry.OpenBolt(cfg.DBPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f := &fixture{t: t, ctx: context.Background(), store: store, clock: newClock(), rec: &recorder{}}
	f.svc, err = New(f.ctx, store, Options{Logger: testLogger(t), Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer f.svc.Close()
	f.mustNetwork(api.NetworkCreate{ID: "net1", CIDR: vpcNet, VPCID: "vpc1"})
	f.mustNetwork(api.NetworkCreate{ID: "pub", CIDR: eipNet, Kind: "eip"})
	f.mustGuest("g1", "nginx-master", "net1", "192.0.2.11", "52:54:00:00:00:11", 1, "host-a")
	f.mustGuest("g2", "nginx-slave", "net1", "192.0.2.12", "52:54:00:00:00:12", 1, "host-b")
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
}

func TestREADMEDocumentsEveryMetric(t *testing.T) {
	var r testutil.RecordingRegisterer
	if _, err := NewMetrics(&r); err != nil {
		t.Fatal(err)
	}
	r.CheckDocumented(t, "../README.md", 8)
}
