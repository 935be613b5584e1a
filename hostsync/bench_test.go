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
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
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
// on a real bbolt file (each claim is one committed, fsynced transaction;
// every other one also moves the owner by compare-and-swap).
func BenchmarkRegistryClaims(b *testing.B) {
	f := newFixture(b, quiet, func(o *Options) { o.Announcer, o.Backend = nil, nil })
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
}
