package hostsync

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// stampAnnouncer and stampBackend note when they were called.
type stampAnnouncer struct {
	mu sync.Mutex
	at time.Time
}

func (a *stampAnnouncer) Start(_ context.Context, vip netip.Addr, mac net.HardwareAddr) (garp.Progress, error) {
	a.mu.Lock()
	a.at = time.Now()
	a.mu.Unlock()
	done := make(chan garp.Burst, 1)
	done <- garp.Burst{VIP: vip, MAC: mac, Rounds: 3, Sent: 6}
	close(done)
	return garp.Progress{Sent: 2, Done: done}, nil
}

type stampBackend struct {
	mu    sync.Mutex
	at    time.Time
	owner string
}

func (b *stampBackend) Apply(_ context.Context, ms []eip.Mapping) error {
	b.mu.Lock()
	b.at = time.Now()
	if len(ms) > 0 {
		b.owner = ms[0].Owner
	}
	b.mu.Unlock()
	return nil
}

func quiet(o *Options) { o.Logger = slog.New(slog.DiscardHandler) }

// BenchmarkClaimToApplied measures, per move, the time from a MASTER claim
// entering the guest API's HTTP handler to the GARP burst started and the
// EIP mapping applied: strict decoding, caller identification, the owner
// compare-and-swap committed to a real bbolt file, the (fake) announcer
// and the (fake) data plane. Target: p99 under 20 ms.
func BenchmarkClaimToApplied(b *testing.B) {
	ann, be := &stampAnnouncer{}, &stampBackend{}
	f := newFixture(b, quiet, func(o *Options) { o.Announcer, o.Backend = ann, be })
	f.nginx()
	h := httpapi.NewGuestAPI(f.svc.Engine, nil, nil)
	members := []struct{ addr, name string }{{"192.0.2.11", "nginx-master"}, {"192.0.2.12", "nginx-slave"}}
	seq := map[string]uint64{}
	claim := func(addr, role string) *jsonResult {
		seq[addr]++
		body := fmt.Sprintf(`{"transition":{"seq":%d,"to":%q,"source":"notify"}}`, seq[addr], role)
		w := guestDo(h, http.MethodPost, api.PathClaims, addr, body, nil)
		var res jsonResult
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &res.ClaimResult) != nil {
			b.Fatalf("claim %s %s: %d %s", addr, role, w.Code, w.Body)
		}
		return &res
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from, to := members[i%2], members[(i+1)%2]
		b.StopTimer()
		if i > 0 {
			claim(from.addr, "BACKUP") // the old owner steps down first: a failover, no split brain
		}
		b.StartTimer()
		start := time.Now()
		res := claim(to.addr, "MASTER")
		b.StopTimer()
		be.mu.Lock()
		applied, owner := be.at, be.owner
		be.mu.Unlock()
		ann.mu.Lock()
		garp := ann.at
		ann.mu.Unlock()
		if !res.Accepted || owner != to.name || garp.Before(start) || applied.Before(garp) {
			b.Fatalf("move %d: %+v, applied owner %q", i, res.ClaimResult, owner)
		}
		lat = append(lat, applied.Sub(start))
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

type jsonResult struct{ api.ClaimResult }

// BenchmarkRegistryClaims measures claims per second through Service.Claim
// on a real bbolt file; every other claim also moves the owner by
// compare-and-swap. Every claim returns only after its transaction is
// committed and fsynced.
//
//   - sequential: one member after the other, each claim waiting for the
//     previous one; one commit (one fsync) per claim whatever the store
//     does.
//   - concurrent: 32 groups whose members claim at the same time, as on a
//     host with many groups; claims of one group stay in order. "batched"
//     is the claim path as it is (registry.Batch: group commit);
//     "unbatched" hides Bolt.Batch so each claim is its own Update, the
//     path before group commit, measured in the same process.
func BenchmarkRegistryClaims(b *testing.B) {
	b.Run("sequential", func(b *testing.B) {
		f := claimsFixture(b, false, 0)
		f.nginx()
		callers := []inventory.Caller{master, slave}
		var seq [2]uint64
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			// master MASTER, master BACKUP, slave MASTER, slave BACKUP, ...
			who := (i / 2) % 2
			role := "MASTER"
			if i%2 == 1 {
				role = "BACKUP"
			}
			seq[who]++
			res, err := f.svc.Claim(f.ctx, callers[who], transition(seq[who], role))
			if err != nil || !res.Accepted || res.Duplicate {
				b.Fatalf("claim %d: %+v, %v", i, res, err)
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "claims/s")
	})
	for _, tc := range []struct {
		name      string
		unbatched bool
	}{{"concurrent/batched", false}, {"concurrent/unbatched", true}} {
		b.Run(tc.name, func(b *testing.B) {
			const groups = 32
			f := claimsFixture(b, tc.unbatched, groups)
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, groups)
			b.ResetTimer()
			start := time.Now()
			for g := range groups {
				wg.Add(1)
				go func() {
					defer wg.Done()
					callers := []inventory.Caller{{Addr: benchMember(g, 0)}, {Addr: benchMember(g, 1)}}
					var seq [2]uint64
					for i := 0; next.Add(1) <= int64(b.N); i++ {
						who := (i / 2) % 2
						role := "MASTER"
						if i%2 == 1 {
							role = "BACKUP"
						}
						seq[who]++
						res, err := f.svc.Claim(f.ctx, callers[who], transition(seq[who], role))
						if err != nil || !res.Accepted || res.Duplicate {
							errs <- fmt.Errorf("group %d claim %d: %+v, %w", g, i, res, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "claims/s")
		})
	}
}

// updateOnly is a Store without Bolt.Batch: registry.Batch falls back to
// one Update per call.
type updateOnly struct{ registry.Store }

// benchMember is member m (0, 1) of benchmark group g: 192.0.2.20 and up,
// three addresses per group (the third is the VIP).
func benchMember(g, m int) netip.Addr {
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(20 + 3*g + m)})
}

// claimsFixture is newFixture without announcer and data plane, its
// store hidden behind updateOnly when unbatched, and groups benchmark
// groups (addClaimGroups).
func claimsFixture(tb testing.TB, unbatched bool, groups int) *fixture {
	tb.Helper()
	f := &fixture{t: tb, ctx: context.Background(), store: openStore(tb), clock: newClock(), rec: &recorder{}}
	var st registry.Store = f.store
	if unbatched {
		st = updateOnly{f.store}
	}
	svc, err := New(f.ctx, st, Options{Logger: slog.New(slog.DiscardHandler), Now: f.clock.Now, Hosts: hstest.Hosts()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	f.svc = svc
	hstest.Seed(tb, f.ctx, f.svc.Inventory)
	f.addClaimGroups(groups)
	return f
}

// addClaimGroups creates groups groups bench-0, bench-1, ... of two
// members (benchMember g 0 on host-a, g 1 on host-b) with a VIP (g 2).
func (f *fixture) addClaimGroups(groups int) {
	f.t.Helper()
	for g := range groups {
		name := fmt.Sprintf("bench-%d", g)
		ids := []string{name + "-a", name + "-b"}
		for m, host := range []string{"host-a", "host-b"} {
			f.mustGuest(ids[m], ids[m], "net1", benchMember(g, m).String(), fmt.Sprintf("52:54:00:00:01:%02x", 2*g+m), 1, host)
		}
		f.mustGroup(name)
		f.mustJoin(name, ids...)
		f.mustAttach(name, api.AttachNetwork{IPAddr: benchMember(g, 2)})
	}
}
