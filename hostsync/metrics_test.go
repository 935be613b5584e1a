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
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

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
				Announcer: &fakeAnnouncer{Rec: &recorder{}},
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
			go func() { done <- runWith(ctx, cfg, slog.New(logs), p) }()
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
				waitFor(t, "the data plane applied at start", func() bool { return len(backend.LastSet()) == 1 })
				// The owner recorded before the start, read at start.
				if s := testutil.Scrape(t, url); s[`vipkeeper_hostsync_group_owner{group="nginx",member="nginx-master"}`] != 1 {
					t.Errorf("no owner series of nginx-master at start: %v", ownerSeries(s))
				}
				slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
				observe <- garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: time.Now()}
				waitFor(t, "the mapping re-pointed", func() bool {
					ms := backend.LastSet()
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
				// The move replaced the owner series.
				if got, want := ownerSeries(s), []string{`vipkeeper_hostsync_group_owner{group="nginx",member="nginx-slave"} 1`}; !slices.Equal(got, want) {
					t.Errorf("owner series %v, want %v", got, want)
				}
				// No etcd store, no host lease.
				if _, ok := s["vipkeeper_hostsync_etcd_lease_held"]; ok {
					t.Error("vipkeeper_hostsync_etcd_lease_held served with store bolt")
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

// ownerSeries are the vipkeeper_hostsync_group_owner samples of a scrape,
// sorted.
func ownerSeries(s map[string]float64) []string {
	var out []string
	for series, v := range s {
		if strings.HasPrefix(series, "vipkeeper_hostsync_group_owner{") {
			out = append(out, fmt.Sprintf("%s %v", series, v))
		}
	}
	slices.Sort(out)
	return out
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
	if _, err := ownership.NewMetrics(&r); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.NewLeaseMetrics(&r); err != nil {
		t.Fatal(err)
	}
	r.CheckDocumented(t, "../README.md", 10)
}
