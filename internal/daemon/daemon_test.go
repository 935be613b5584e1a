package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "d.sock")
	ln, err := ListenUnix(sock, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	if di, err := os.Stat(filepath.Dir(sock)); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, %v; want mode 0700", di.Mode(), err)
	}
	go func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}(ln)
	if _, err := ListenUnix(sock, 0o700); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("second listener: %v, want ErrSocketInUse", err)
	}
	// A stale socket (nobody answers) is replaced.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = ListenUnix(sock, 0o700)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(file, 0o700); !errors.Is(err, ErrNotSocket) {
		t.Errorf("over a file: %v, want ErrNotSocket", err)
	}
	long := "/" + strings.Repeat("a", MaxSocketPath)
	if _, err := ListenUnix(long, 0o700); err == nil {
		t.Errorf("a %d-byte path was accepted", len(long))
	}
}

type recorder struct {
	mu     sync.Mutex
	states []string
}

func (r *recorder) Notify(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, s)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.states)
}

func TestWatchdogPingsOnlyWhileAlive(t *testing.T) {
	// stuck holds the "blocked" check until the watchdog has returned.
	tests := []struct {
		name  string
		alive func(stuck chan struct{}) func(context.Context) error
		want  int
	}{
		{"alive", func(chan struct{}) func(context.Context) error { return func(context.Context) error { return nil } }, 4},
		{"failing", func(chan struct{}) func(context.Context) error {
			return func(context.Context) error { return errors.New("stalled") }
		}, 0},
		{"blocked", func(stuck chan struct{}) func(context.Context) error {
			return func(context.Context) error { <-stuck; return nil }
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var r recorder
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second+time.Millisecond)
				defer cancel()
				stuck := make(chan struct{})
				defer close(stuck)
				Watchdog(ctx, &r, time.Second, tt.alive(stuck), slog.New(slog.DiscardHandler))
				if got := r.count(); got != tt.want {
					t.Errorf("%d pings in 2s at a 1s watchdog, want %d", got, tt.want)
				}
			})
		})
	}
}

func TestWriteJSON(t *testing.T) {
	w := httptest.NewRecorder()
	WriteJSON(w, http.StatusTeapot, map[string]int{"a": 1})
	if w.Code != http.StatusTeapot || w.Body.String() != "{\"a\":1}\n" || w.Header().Get("Content-Type") != "application/json" || w.Header().Get("Content-Length") != "8" {
		t.Errorf("got %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	w = httptest.NewRecorder()
	WriteJSON(w, http.StatusOK, func() {})
	if w.Code != http.StatusInternalServerError {
		t.Errorf("unencodable value answered %d", w.Code)
	}
}

func TestServeShutsDownWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}, ln)
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
}

func TestNewRegistry(t *testing.T) {
	reg, err := NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var goFound bool
	for _, mf := range mfs {
		if mf.GetName() == "go_goroutines" {
			goFound = true
		}
	}
	if !goFound {
		t.Error("go_goroutines not gathered")
	}
}

func TestMetricsServer(t *testing.T) {
	reg, err := NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	srv := MetricsServer(reg, nil)
	w := httptest.NewRecorder()
	srv.Handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "go_goroutines") {
		t.Errorf("GET /metrics = %d %.200q", w.Code, w.Body.String())
	}
	w = httptest.NewRecorder()
	srv.Handler.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/metrics", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics = %d, want 405", w.Code)
	}
	if srv.ReadHeaderTimeout == 0 || srv.WriteTimeout == 0 || srv.IdleTimeout == 0 {
		t.Errorf("unbounded server: %+v", srv)
	}
}
