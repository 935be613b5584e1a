package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// waitPath is the metadata path asking to wait d.
func waitPath(d string) string { return api.PathMetadata + "?" + api.QueryWait + "=" + d }

// pending runs one guest request on its own goroutine; answer is its
// response once the handler returned.
type pending struct {
	done chan *httptest.ResponseRecorder
	got  *httptest.ResponseRecorder
}

func startGuestDo(h http.Handler, ctx context.Context, path, from, etag string) *pending {
	p := &pending{done: make(chan *httptest.ResponseRecorder, 1)}
	go func() {
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil)
		r.RemoteAddr = from + ":40000"
		if etag != "" {
			r.Header.Set("If-None-Match", etag)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		p.done <- w
	}()
	return p
}

// answered reports whether the handler returned (call after synctest.Wait).
func (p *pending) answered() bool {
	if p.got != nil {
		return true
	}
	select {
	case p.got = <-p.done:
		return true
	default:
		return false
	}
}

// etagOf is the current ETag of the document served to from.
func etagOf(t *testing.T, h http.Handler, from string) string {
	t.Helper()
	w := guestDo(h, http.MethodGet, api.PathMetadata, from, "", nil)
	if w.Code != http.StatusOK || w.Header().Get("ETag") == "" {
		t.Fatalf("GET metadata from %s: %d %s", from, w.Code, w.Body)
	}
	return w.Header().Get("ETag")
}

// TestGuestMetadataWaitHeader: every metadata answer says how long the
// host waits at most, also to a plain GET, so the agent can tell a host
// that waits from an older one.
func TestGuestMetadataWaitHeader(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	h := NewGuestAPI(f.svc.Engine, nil, testLogger(t))
	want := strconv.Itoa(int(MaxMetadataWait / time.Second))
	for _, path := range []string{api.PathMetadata, waitPath("5s")} {
		w := guestDo(h, http.MethodGet, path, "192.0.2.12", "", nil)
		if w.Code != http.StatusOK || w.Header().Get(api.HeaderWait) != want {
			t.Errorf("GET %s: status %d, %s %q, want 200 and %q", path, w.Code, api.HeaderWait, w.Header().Get(api.HeaderWait), want)
		}
	}
}

// TestGuestMetadataWaitChange: a wait with the current ETag is answered
// with the new document as soon as an admin operation changes it, before
// any of the wait passed; a change to another group wakes it without an
// answer (the document is the same), and a request whose ETag is already
// old is answered at once.
func TestGuestMetadataWaitChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		f.nginx()
		h := NewGuestAPI(f.svc.Engine, nil, testLogger(t))
		etag := etagOf(t, h, "192.0.2.12")
		start := time.Now()

		p := startGuestDo(h, t.Context(), waitPath("30s"), "192.0.2.12", etag)
		synctest.Wait()
		if p.answered() {
			t.Fatalf("answered at once with the current ETag: %d %s", p.got.Code, p.got.Body)
		}

		// Another group's change wakes the wait, which goes on.
		gen, _ := f.svc.Changes()
		f.mustGroup("other")
		f.mustJoin("other", "g5")
		if _, err := f.svc.AttachNetwork(f.ctx, "other", api.AttachNetwork{IPAddr: ip("192.0.2.20")}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if g2, _ := f.svc.Changes(); g2 == gen {
			t.Fatal("attaching another group's network was not broadcast")
		}
		if p.answered() {
			t.Fatalf("answered after another group's change: %d %s", p.got.Code, p.got.Body)
		}

		// This group's change answers it.
		if _, err := f.svc.DissociateEIP(f.ctx, "nginx"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if !p.answered() {
			t.Fatal("not answered after the group's EIP was dissociated")
		}
		if waited := time.Since(start); waited != 0 {
			t.Errorf("answered after %v of the wait, want at the change", waited)
		}
		w := p.got
		md, err := vrrp.Parse(w.Body.Bytes())
		if w.Code != http.StatusOK || err != nil || w.Header().Get("ETag") == etag || md.EIP != (netip.Addr{}) {
			t.Fatalf("answer %d, ETag %q (old %q), body %s: want 200 with the document without the EIP", w.Code, w.Header().Get("ETag"), etag, w.Body)
		}

		// An old ETag with a wait: the new document at once.
		p = startGuestDo(h, t.Context(), waitPath("30s"), "192.0.2.12", etag)
		synctest.Wait()
		if !p.answered() || p.got.Code != http.StatusOK {
			t.Fatalf("old ETag with a wait: answered %v", p.got)
		}
	})
}

// TestGuestMetadataWaitPasses: without a change the wait ends with 304
// when it passes, not before; a wait asked beyond MaxMetadataWait is cut
// to it.
func TestGuestMetadataWaitPasses(t *testing.T) {
	for _, tc := range []struct {
		wait string
		want time.Duration
	}{
		{"30s", 30 * time.Second},
		{"7", 7 * time.Second},
		{"1h", MaxMetadataWait},
	} {
		t.Run(tc.wait, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t)
				f.nginx()
				h := NewGuestAPI(f.svc.Engine, nil, testLogger(t))
				etag := etagOf(t, h, "192.0.2.11")
				start := time.Now()
				p := startGuestDo(h, t.Context(), waitPath(tc.wait), "192.0.2.11", etag)
				time.Sleep(tc.want - time.Millisecond)
				synctest.Wait()
				if p.answered() {
					t.Fatalf("answered after %v, before the wait of %v passed", time.Since(start), tc.want)
				}
				w := <-p.done
				if waited := time.Since(start); waited != tc.want {
					t.Errorf("answered after %v, want %v", waited, tc.want)
				}
				if w.Code != http.StatusNotModified || w.Header().Get("ETag") != etag || w.Body.Len() != 0 {
					t.Errorf("after the wait: %d, ETag %q, body %q; want 304 with ETag %q", w.Code, w.Header().Get("ETag"), w.Body, etag)
				}
			})
		})
	}
}

// TestGuestMetadataWaitBounded: beyond WaitsPerSource waits from one
// source, or MaxWaits on the host, a request is answered at once as
// without a wait (304 for the current ETag), never refused or held;
// another source still waits, and a cancelled wait frees its place.
func TestGuestMetadataWaitBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		f.nginx()
		h := NewGuestAPI(f.svc.Engine, nil, testLogger(t))
		etag := etagOf(t, h, "192.0.2.12")
		ctx, cancel := context.WithCancel(t.Context())
		var waiting []*pending
		for range WaitsPerSource {
			waiting = append(waiting, startGuestDo(h, ctx, waitPath("30s"), "192.0.2.12", etag))
		}
		synctest.Wait()
		for i, p := range waiting {
			if p.answered() {
				t.Fatalf("wait %d of %d answered at once: %d", i+1, WaitsPerSource, p.got.Code)
			}
		}
		over := startGuestDo(h, t.Context(), waitPath("30s"), "192.0.2.12", etag)
		other := startGuestDo(h, t.Context(), waitPath("30s"), "192.0.2.11", etagOf(t, h, "192.0.2.11"))
		synctest.Wait()
		if !over.answered() || over.got.Code != http.StatusNotModified || over.got.Header().Get(api.HeaderWait) == "" {
			t.Fatalf("wait %d from one source: want 304 at once, got %v", WaitsPerSource+1, over.got)
		}
		if other.answered() {
			t.Fatalf("another source's wait answered at once: %d", other.got.Code)
		}

		// Cancelled waits end and free their places.
		cancel()
		synctest.Wait()
		for i, p := range waiting {
			if !p.answered() {
				t.Fatalf("cancelled wait %d still pending", i+1)
			}
		}
		again := startGuestDo(h, t.Context(), waitPath("30s"), "192.0.2.12", etag)
		synctest.Wait()
		if again.answered() {
			t.Fatalf("a wait after the cancelled ones answered at once: %d", again.got.Code)
		}

		// The host's bound: two waits pending, the bound lowered to two.
		h.waits.mu.Lock()
		h.waits.total = 2
		h.waits.mu.Unlock()
		third := startGuestDo(h, t.Context(), waitPath("30s"), "192.0.2.13", "")
		synctest.Wait()
		if !third.answered() || third.got.Code != http.StatusForbidden {
			// g3 is in no group: answered at once whatever the bound.
			t.Fatalf("a guest in no group: %v", third.got)
		}
		fourth := startGuestDo(h, t.Context(), waitPath("30s"), "192.0.2.11", etagOf(t, h, "192.0.2.11"))
		synctest.Wait()
		if !fourth.answered() || fourth.got.Code != http.StatusNotModified {
			t.Fatalf("a wait beyond the host's bound: want 304 at once, got %v", fourth.got)
		}
	})
}

// TestGuestMetadataWaitInvalid: a wait that is not a duration or whole
// seconds is refused with 400 naming the parameter.
func TestGuestMetadataWaitInvalid(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	h := NewGuestAPI(f.svc.Engine, nil, testLogger(t))
	for _, q := range []string{"wait=soon", "wait=-5s", "wait=-5", "wait=", "wait=1s&wait=2s", "wait=99999999999"} {
		t.Run(q, func(t *testing.T) {
			w := guestDo(h, http.MethodGet, api.PathMetadata+"?"+q, "192.0.2.12", "", nil)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", w.Code, w.Body)
			}
			if e := decodeAPIError(t, w); e.Field != api.QueryWait {
				t.Errorf("error %+v does not name %q", e, api.QueryWait)
			}
		})
	}
}

// fromAddr serves h as if every request came from addr (the guests are
// told apart by their source address; the test's client is loopback).
func fromAddr(h http.Handler, addr string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.RemoteAddr = addr + ":40000"
		h.ServeHTTP(w, r)
	})
}

// getWait sends one waiting GET to srv with etag.
func getWait(t *testing.T, srv *httptest.Server, wait, etag string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+waitPath(wait), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("If-None-Match", etag)
	resp, err := srv.Client().Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

// TestGuestMetadataWaitServer: over a real server whose read and write
// timeouts are shorter than the wait (as hostsync's guest server's are), a
// wait is answered when it passes, not cut by the timeouts; and the
// server's Shutdown answers the pending waits instead of waiting for them.
func TestGuestMetadataWaitServer(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	g := NewGuestAPI(f.svc.Engine, nil, testLogger(t))
	etag := etagOf(t, g, "192.0.2.12")
	srv := httptest.NewUnstartedServer(fromAddr(g, "192.0.2.12"))
	srv.Config.ReadTimeout = 100 * time.Millisecond
	srv.Config.WriteTimeout = 100 * time.Millisecond
	srv.Start()
	defer srv.Close()

	resp, err := getWait(t, srv, "1s", etag)
	if err != nil {
		t.Fatalf("wait of 1s with read and write timeouts of 100ms: %v", err)
	}
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("wait of 1s: status %d, want 304", resp.StatusCode)
	}

	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := getWait(t, srv, "60s", etag)
		done <- result{resp, err}
	}()
	hstest.WaitFor(t, "the wait to be pending", func() bool {
		g.waits.mu.Lock()
		defer g.waits.mu.Unlock()
		return g.waits.n == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a wait of 60s pending: %v", err)
	}
	r := <-done
	if r.err != nil || r.resp.StatusCode != http.StatusNotModified {
		t.Fatalf("the pending wait at shutdown: %v, %v; want 304", r.resp, r.err)
	}
}
