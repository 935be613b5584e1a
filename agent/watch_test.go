package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/metadata"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// waitSource serves the document a test sets, tagged by its revision, and
// waits for a change like hostsync's guest API (metadata.Waiter) while
// maxWait > 0.
type waitSource struct {
	mu      sync.Mutex // guards the fields below
	doc     []byte
	rev     uint64
	next    chan struct{} // closed by set
	maxWait time.Duration
	fetches int
	waits   int
	// fail makes Wait fail with it; early makes it answer
	// ErrNotModified at once (a hostsync over its bound of waits).
	fail  error
	early bool
}

func newWaitSource(doc []byte, rev uint64, maxWait time.Duration) *waitSource {
	return &waitSource{doc: doc, rev: rev, next: make(chan struct{}), maxWait: maxWait}
}

func (s *waitSource) set(doc []byte, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doc, s.rev = doc, rev
	close(s.next)
	s.next = make(chan struct{})
}

func (s *waitSource) tagLocked() string { return fmt.Sprintf(`"r%d"`, s.rev) }

func (s *waitSource) Fetch(_ context.Context, prevTag string) ([]byte, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fetches++
	if tag := s.tagLocked(); tag != prevTag {
		return s.doc, tag, nil
	}
	return nil, prevTag, metadata.ErrNotModified
}

func (s *waitSource) MaxWait() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxWait
}

// maxFakeWaits is more waits than any test asks of a waitSource.
const maxFakeWaits = 1000

func (s *waitSource) Wait(ctx context.Context, tag string, d time.Duration) (string, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		s.mu.Lock()
		s.waits++
		cur, next, spinning := s.tagLocked(), s.next, s.waits > maxFakeWaits
		fail, early := s.fail, s.early
		s.mu.Unlock()
		if spinning {
			// A watcher asking in a loop is parked, so that the test
			// fails on the count instead of hanging.
			<-ctx.Done()
			return "", ctx.Err()
		}
		if fail != nil {
			return "", fail
		}
		if early && cur == tag {
			return tag, metadata.ErrNotModified
		}
		if cur != tag {
			return cur, nil
		}
		select {
		case <-next:
		case <-t.C:
			return tag, metadata.ErrNotModified
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (s *waitSource) String() string { return "memory" }

func (s *waitSource) counts() (fetches, waits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches, s.waits
}

// watchDoc is testMeta at rev with a change keepalived reads (web-1's
// priority).
func watchDoc(t testing.TB, rev uint64) []byte {
	m := testMeta(rev)
	m.Members[0].Priority = 200 - int(rev)
	return metaJSON(t, m)
}

// newLoopAgent is an agent on fakes whose apply loop a test runs alone.
func newLoopAgent(t testing.TB, src metadata.Source, ka *timedKeepalived, edit func(*Config)) *Agent {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Member = "web-1"
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.SpoolDir = filepath.Join(dir, "spool")
	cfg.Socket = filepath.Join(dir, "agent.sock")
	cfg.Keepalived.Config = filepath.Join(dir, "keepalived", "keepalived.conf")
	cfg.Keepalived.ScriptsDir = filepath.Join(dir, "keepalived", "vipkeeper")
	cfg.Metadata.File = filepath.Join(dir, "unused.json")
	cfg.Metadata.PollInterval = time.Hour
	cfg.Keepalived.MinReloadInterval = 0
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	if _, ok := t.(*testing.B); ok {
		log = slog.New(slog.DiscardHandler)
	}
	a, err := newAgent(&cfg, log, deps{
		source: src, link: &fakeLink{}, keepalived: ka, notifier: &fakeNotifier{},
		now: time.Now, render: render.Render,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	return a
}

// runApplyLoop runs a's apply loop until the test ends.
func runApplyLoop(t *testing.T, a *Agent) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.applyLoop(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

func (a *Agent) appliedRevision() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.revision
}

// TestWatchAppliesAtOnce: with a source that waits, a new revision is
// applied as soon as the source has it, not at the next poll (an hour
// away): no (fake) time passes between the change and the apply. Without
// a change the waits are renewed and nothing is fetched.
func TestWatchAppliesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newWaitSource(watchDoc(t, 1), 1, time.Minute)
		ka := &timedKeepalived{}
		a := newLoopAgent(t, src, ka, nil)
		runApplyLoop(t, a)
		synctest.Wait()
		if rev := a.appliedRevision(); rev != 1 {
			t.Fatalf("revision %d applied at start, want 1", rev)
		}

		time.Sleep(10 * time.Minute) // many waits of 30 s pass unchanged
		synctest.Wait()
		fetches, waits := src.counts()
		if fetches != 1 || waits < 20 {
			t.Fatalf("10 minutes unchanged: %d fetches, %d waits; want 1 fetch and a wait every 30 s", fetches, waits)
		}

		for rev := uint64(2); rev <= 4; rev++ {
			start := time.Now()
			src.set(watchDoc(t, rev), rev)
			synctest.Wait()
			if got := a.appliedRevision(); got != rev {
				t.Fatalf("revision %d applied after revision %d was served, want %d", got, rev, rev)
			}
			if waited := time.Since(start); waited != 0 {
				t.Errorf("revision %d applied after %v", rev, waited)
			}
			time.Sleep(time.Second)
		}
		ka.mu.Lock()
		reloads := len(ka.reloads)
		ka.mu.Unlock()
		if reloads != 4 {
			t.Errorf("%d reloads for 4 revisions", reloads)
		}
		if fetches, _ := src.counts(); fetches != 4 {
			t.Errorf("%d fetches for 4 revisions, want one each", fetches)
		}
	})
}

// TestWatchBacksOff: a wait that fails, or that hostsync answers at once,
// is asked again after 1 s, then 2 s, 4 s, ... (never in a loop); once
// waits work again, a change is applied at once.
func TestWatchBacksOff(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fail  error
		early bool
	}{
		{"error", errors.New("metadata: fetch metadata: connection refused"), false},
		{"answered at once", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newWaitSource(watchDoc(t, 1), 1, time.Minute)
				src.fail, src.early = tc.fail, tc.early
				a := newLoopAgent(t, src, &timedKeepalived{}, nil)
				runApplyLoop(t, a)
				synctest.Wait()
				time.Sleep(10 * time.Second)
				synctest.Wait()
				// At 0, 1, 3 and 7 s.
				if _, waits := src.counts(); waits != 4 {
					t.Fatalf("%d waits in 10 s of failures, want 4 (backing off from 1 s)", waits)
				}

				src.mu.Lock()
				src.fail, src.early = nil, false
				src.mu.Unlock()
				time.Sleep(5 * time.Second) // the next wait, at 15 s
				src.set(watchDoc(t, 2), 2)
				synctest.Wait()
				if rev := a.appliedRevision(); rev != 2 {
					t.Fatalf("revision %d applied after waits work again, want 2", rev)
				}
			})
		})
	}
}

// TestWatchFallsBackToPolling: a source that does not wait (an older
// hostsync: MaxWait 0, or metadata.wait = 0) is never asked to; a change
// is applied at the next poll.
func TestWatchFallsBackToPolling(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxWait time.Duration
		wait    time.Duration
	}{
		{"hostsync without waiting", 0, 30 * time.Second},
		{"waiting off", time.Minute, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newWaitSource(watchDoc(t, 1), 1, tc.maxWait)
				a := newLoopAgent(t, src, &timedKeepalived{}, func(c *Config) {
					c.Metadata.PollInterval = 10 * time.Second
					c.Metadata.Wait = tc.wait
				})
				runApplyLoop(t, a)
				synctest.Wait()
				time.Sleep(time.Second)
				src.set(watchDoc(t, 2), 2)
				synctest.Wait()
				if rev := a.appliedRevision(); rev != 1 {
					t.Fatalf("revision %d applied before the poll, want 1", rev)
				}
				time.Sleep(9 * time.Second) // the poll
				synctest.Wait()
				if rev := a.appliedRevision(); rev != 2 {
					t.Fatalf("revision %d applied at the poll, want 2", rev)
				}
				if _, waits := src.counts(); waits != 0 {
					t.Errorf("%d waits asked of a source that does not wait", waits)
				}
			})
		})
	}
}

// TestWatchDeferredAndRefresh: a change within
// keepalived.min_reload_interval of the last reload is held back until
// it is due (the watcher does not spin on the held-back document), and a
// refresh is answered while a wait is pending.
func TestWatchDeferredAndRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newWaitSource(watchDoc(t, 1), 1, time.Minute)
		ka := &timedKeepalived{}
		a := newLoopAgent(t, src, ka, func(c *Config) { c.Keepalived.MinReloadInterval = 3 * time.Second })
		runApplyLoop(t, a)
		synctest.Wait()
		start := time.Now()

		time.Sleep(time.Second)
		src.set(watchDoc(t, 2), 2)
		synctest.Wait()
		if rev := a.appliedRevision(); rev != 1 {
			t.Fatalf("revision %d applied 1 s after a reload, want it held back", rev)
		}
		_, waits := src.counts()
		if waits > 10 {
			t.Fatalf("%d waits for one held-back change: the watcher spins", waits)
		}

		// A refresh while the watcher waits.
		if err := a.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}

		time.Sleep(time.Until(start.Add(3 * time.Second))) // the change is due 3 s after the reload
		synctest.Wait()
		if rev := a.appliedRevision(); rev != 2 {
			t.Fatalf("revision %d applied when the held-back change was due, want 2", rev)
		}
		ka.mu.Lock()
		reloads := slices.Clone(ka.reloads)
		ka.mu.Unlock()
		if len(reloads) != 2 || reloads[1].Sub(reloads[0]) != 3*time.Second {
			t.Errorf("reloads at %v, want two 3 s apart", reloads)
		}
	})
}

// hostsyncRig is hostsync's real inventory, ownership engine and guest API
// on a bbolt registry, served over HTTP as if to 192.0.2.11 (web-1), with
// group web (web-1, web-2, VIP 192.0.2.10).
type hostsyncRig struct {
	svc *hostsync.Service
	srv *httptest.Server
}

func newHostsyncRig(tb testing.TB) *hostsyncRig {
	tb.Helper()
	ctx := context.Background()
	store, err := registry.OpenBolt(filepath.Join(tb.TempDir(), "hostsync.db"), time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	log := slog.New(slog.DiscardHandler)
	svc, err := hostsync.New(ctx, store, hostsync.Options{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	must := func(_ any, err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(svc.CreateNetwork(ctx, api.NetworkCreate{ID: "net1", CIDR: testMeta(1).VIP.Masked()}))
	for i, name := range []string{"web-1", "web-2"} {
		must(svc.RegisterGuest(ctx, api.GuestRegister{
			ID: fmt.Sprintf("g%d", i+1), Name: name, NICs: 1, NetworkID: "net1",
			Address: testMeta(1).Members[i].Address, MAC: fmt.Sprintf("52:54:00:00:00:1%d", i+1),
		}))
	}
	must(svc.CreateGroup(ctx, api.GroupCreate{Name: "web"}))
	must(svc.Join(ctx, "web", []string{"web-1", "web-2"}))
	must(svc.AttachNetwork(ctx, "web", api.AttachNetwork{IPAddr: testMeta(1).VIP.Addr()}))
	guest := httpapi.NewGuestAPI(svc.Engine, nil, log)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.RemoteAddr = testMeta(1).Members[0].Address.String() + ":40000" // web-1
		guest.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	return &hostsyncRig{svc: svc, srv: srv}
}

// change is one admin change of the group's VRRP settings (a new
// revision with a new keepalived.conf); it returns the new revision.
func (h *hostsyncRig) change(tb testing.TB, i int) uint64 {
	tb.Helper()
	d := vrrp.Seconds(1 + i%2)
	v, err := h.svc.UpdateGroup(context.Background(), "web", api.GroupUpdate{PreemptDelay: &d})
	if err != nil {
		tb.Fatal(err)
	}
	return v.Revision
}

// stampSource notes when each fetch starts: an apply's start.
type stampSource struct {
	metadata.Source
	mu     sync.Mutex
	starts []time.Time
}

func (s *stampSource) Fetch(ctx context.Context, prevTag string) ([]byte, string, error) {
	s.mu.Lock()
	s.starts = append(s.starts, time.Now())
	s.mu.Unlock()
	return s.Source.Fetch(ctx, prevTag)
}

// stampWaiter is a stampSource that waits as its source does.
type stampWaiter struct {
	*stampSource
	metadata.Waiter
}

func (s *stampWaiter) String() string { return s.stampSource.String() }

func (s *stampSource) lastStart() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts[len(s.starts)-1]
}

// TestWatchHostsync: against hostsync's real guest API, an admin change
// reaches the agent's apply without waiting for the poll (an hour); a
// guest API that does not say api.HeaderWait (an older hostsync) is
// polled.
func TestWatchHostsync(t *testing.T) {
	t.Run("waits", func(t *testing.T) {
		h := newHostsyncRig(t)
		src := &metadata.HTTPSource{URL: h.srv.URL + api.PathMetadata, Client: h.srv.Client()}
		a := newLoopAgent(t, src, &timedKeepalived{}, nil)
		runApplyLoop(t, a)
		waitFor(t, "the first revision applied", func() bool { return a.appliedRevision() > 0 })
		waitFor(t, "hostsync's wait", func() bool { return src.MaxWait() == httpapi.MaxMetadataWait })
		for i := range 3 {
			rev := h.change(t, i)
			waitFor(t, fmt.Sprintf("revision %d applied", rev), func() bool { return a.appliedRevision() == rev })
		}
	})
	t.Run("older hostsync", func(t *testing.T) {
		h := newHostsyncRig(t)
		var waits sync.Map
		old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has(api.QueryWait) {
				waits.Store(r.URL.RawQuery, true)
			}
			rec := httptest.NewRecorder()
			h.srv.Config.Handler.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				if k != api.HeaderWait {
					w.Header()[k] = v
				}
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
		}))
		defer old.Close()
		src := &metadata.HTTPSource{URL: old.URL + api.PathMetadata, Client: old.Client()}
		a := newLoopAgent(t, src, &timedKeepalived{}, nil)
		runApplyLoop(t, a)
		waitFor(t, "the first revision applied", func() bool { return a.appliedRevision() > 0 })
		rev := h.change(t, 0)
		if err := a.Refresh(t.Context()); err != nil { // the poll
			t.Fatal(err)
		}
		if got := a.appliedRevision(); got != rev {
			t.Fatalf("revision %d after the poll, want %d", got, rev)
		}
		n := 0
		waits.Range(func(any, any) bool { n++; return true })
		if n != 0 || src.MaxWait() != 0 {
			t.Errorf("a hostsync without %s: %d waits asked, MaxWait %v", api.HeaderWait, n, src.MaxWait())
		}
	})
}

// BenchmarkAdminChangeToApply measures, per change, the time from an admin
// change committed on hostsync (UpdateGroup through the inventory, as
// `vipctl instancegroup-update` runs it) to the agent's apply starting
// (its fetch of the new document) and to keepalived reloaded with it
// (fake keepalived, files rendered and installed for real), over HTTP on
// loopback, with poll_interval an hour: the agent hears of the change
// through its wait on the guest API.
func BenchmarkAdminChangeToApply(b *testing.B) {
	h := newHostsyncRig(b)
	hs := &metadata.HTTPSource{URL: h.srv.URL + api.PathMetadata, Client: h.srv.Client()}
	src := &stampWaiter{stampSource: &stampSource{Source: hs}, Waiter: hs}
	ka := &timedKeepalived{}
	a := newLoopAgent(b, src, ka, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.applyLoop(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(b, "the first revision applied", func() bool { return a.appliedRevision() > 0 })
	waitFor(b, "hostsync's wait", func() bool { return hs.MaxWait() > 0 })
	src.mu.Lock()
	fetches := len(src.starts)
	src.mu.Unlock()
	var toStart, toReload []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		rev := h.change(b, i)
		waitFor(b, "the revision applied", func() bool { return a.appliedRevision() == rev })
		b.StopTimer()
		ka.mu.Lock()
		reload := ka.reloads[len(ka.reloads)-1]
		ka.mu.Unlock()
		toStart = append(toStart, float64(src.lastStart().Sub(t0))/float64(time.Millisecond))
		toReload = append(toReload, float64(reload.Sub(t0))/float64(time.Millisecond))
		b.StartTimer()
	}
	b.StopTimer()
	src.mu.Lock()
	fetches = len(src.starts) - fetches
	src.mu.Unlock()
	b.ReportMetric(float64(fetches)/float64(b.N), "fetches/change")
	pct := func(v []float64, p float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[min(len(v)-1, int(p*float64(len(v))))]
	}
	b.ReportMetric(pct(toStart, 0.5), "start-p50-ms")
	b.ReportMetric(pct(toStart, 0.99), "start-p99-ms")
	b.ReportMetric(pct(toReload, 0.5), "reload-p50-ms")
	b.ReportMetric(pct(toReload, 0.99), "reload-p99-ms")
}
