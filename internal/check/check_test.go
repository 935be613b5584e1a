package check

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tLogWriter struct{ t *testing.T }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// fakeProc is a directory laid out like /proc with the given processes.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	root := t.TempDir()
	// Non-numeric entries like the real /proc has must be skipped.
	for _, d := range []string{"self", "sys", "net"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "self", "comm"), []byte("nginx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &fakeProc{t: t, root: root}
}

func (p *fakeProc) add(pid, comm, state string) {
	dir := filepath.Join(p.root, pid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644); err != nil {
		p.t.Fatal(err)
	}
	stat := pid + " (" + comm + ") " + state + " 1 1 1 0 -1 4194560"
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func TestProcessFakeProc(t *testing.T) {
	tests := []struct {
		name  string
		procs [][3]string // pid, comm, state
		want  bool
	}{
		{"running", [][3]string{{"10", "sshd", "S"}, {"42", "nginx", "S"}}, true},
		{"absent", [][3]string{{"10", "sshd", "S"}}, false},
		{"only a longer name", [][3]string{{"42", "nginx-worker", "S"}}, false},
		{"only a prefix", [][3]string{{"42", "ngin", "R"}}, false},
		{"zombie only", [][3]string{{"42", "nginx", "Z"}}, false},
		{"zombie and live", [][3]string{{"42", "nginx", "Z"}, {"43", "nginx", "S"}}, true},
		{"comm with parentheses", [][3]string{{"42", "a) Z (b", "S"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakeProc(t)
			for _, pr := range tt.procs {
				p.add(pr[0], pr[1], pr[2])
			}
			c := &Checker{ProcRoot: p.root, Log: testLogger(t)}
			err := c.Run(context.Background(), Spec{Kind: vrrp.CheckProcess, Process: "nginx"})
			if tt.want && err != nil {
				t.Errorf("unhealthy: %v", err)
			}
			if !tt.want && !errors.Is(err, ErrUnhealthy) {
				t.Errorf("error %v, want ErrUnhealthy", err)
			}
		})
	}
	t.Run("stat of a live process with parentheses", func(t *testing.T) {
		p := newFakeProc(t)
		p.add("42", "a) Z (b", "S")
		c := &Checker{ProcRoot: p.root}
		if err := c.Run(context.Background(), Spec{Kind: vrrp.CheckProcess, Process: "a) Z (b"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("a process name with spaces and parentheses passed validation: %v", err)
		}
		if zombie(filepath.Join(p.root, "42", "stat")) {
			t.Error("state read inside comm instead of after the last ')'")
		}
	})
}

// TestProcessRealProc starts a process with a unique name and finds it in
// the real /proc, then kills it and no longer finds it.
func TestProcessRealProc(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		testutil.SkipUnprivileged(t, "no sleep binary")
	}
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "vkc" + hex.EncodeToString(b) // 13 bytes, within comm's 15
	link := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(sleep, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)

	spec := Spec{Kind: vrrp.CheckProcess, Process: name, Timeout: 5 * time.Second}
	if err := Run(context.Background(), spec); err != nil {
		t.Fatalf("running process %s (pid %d) not found: %v", name, cmd.Process.Pid, err)
	}
	stop()
	if err := Run(context.Background(), spec); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("after kill: %v, want ErrUnhealthy", err)
	}
}

// fakeRestarter records restarts and runs an action for each.
type fakeRestarter struct {
	mu     sync.Mutex
	units  []string
	action func() error
}

func (f *fakeRestarter) RestartUnit(_ context.Context, unit string) error {
	f.mu.Lock()
	f.units = append(f.units, unit)
	f.mu.Unlock()
	if f.action == nil {
		return nil
	}
	return f.action()
}

func (f *fakeRestarter) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.units)
}

func TestRestartUnit(t *testing.T) {
	spec := Spec{Kind: vrrp.CheckProcess, Process: "nginx", RestartUnit: "nginx.service", Timeout: 3 * time.Second}

	t.Run("healthy: no restart", func(t *testing.T) {
		p := newFakeProc(t)
		p.add("42", "nginx", "S")
		r := &fakeRestarter{}
		c := &Checker{ProcRoot: p.root, Restarter: r, Log: testLogger(t)}
		if err := c.Run(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
		if got := r.calls(); len(got) != 0 {
			t.Errorf("restarted %v although healthy", got)
		}
	})
	t.Run("restart brings it back", func(t *testing.T) {
		p := newFakeProc(t)
		r := &fakeRestarter{action: func() error { p.add("77", "nginx", "S"); return nil }}
		c := &Checker{ProcRoot: p.root, Restarter: r, Log: testLogger(t)}
		if err := c.Run(context.Background(), spec); err != nil {
			t.Fatalf("unhealthy after a restart that started nginx: %v", err)
		}
		if got := r.calls(); !slices.Equal(got, []string{"nginx.service"}) {
			t.Errorf("restarts %v, want [nginx.service]", got)
		}
	})
	t.Run("service comes up a little after the restart", func(t *testing.T) {
		p := newFakeProc(t)
		started := make(chan struct{})
		r := &fakeRestarter{action: func() error { close(started); return nil }}
		c := &Checker{ProcRoot: p.root, Restarter: r, PollInterval: 10 * time.Millisecond, Log: testLogger(t)}
		done := make(chan error, 1)
		go func() { done <- c.Run(context.Background(), spec) }()
		<-started
		p.add("78", "nginx", "S")
		if err := <-done; err != nil {
			t.Fatalf("not healthy once the process appeared: %v", err)
		}
	})
	t.Run("restart does not help", func(t *testing.T) {
		p := newFakeProc(t)
		r := &fakeRestarter{}
		c := &Checker{ProcRoot: p.root, Restarter: r, PollInterval: 10 * time.Millisecond, Log: testLogger(t)}
		s := spec
		s.Timeout = 300 * time.Millisecond
		err := c.Run(context.Background(), s)
		if !errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), "after restarting nginx.service") {
			t.Fatalf("error %v, want ErrUnhealthy after restarting", err)
		}
		if got := r.calls(); len(got) != 1 {
			t.Errorf("%d restarts, want exactly 1", len(got))
		}
	})
	t.Run("restart fails", func(t *testing.T) {
		p := newFakeProc(t)
		boom := errors.New("unit nginx.service not found")
		r := &fakeRestarter{action: func() error { return boom }}
		c := &Checker{ProcRoot: p.root, Restarter: r, Log: testLogger(t)}
		err := c.Run(context.Background(), spec)
		if !errors.Is(err, ErrUnhealthy) || !errors.Is(err, boom) {
			t.Fatalf("error %v, want ErrUnhealthy wrapping the restart error", err)
		}
	})
}

func TestHTTP(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.Write([]byte("ok"))
	})
	mux.HandleFunc("/nocontent", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { close(release); srv.Close() })

	tests := []struct {
		path    string
		expect  int
		timeout time.Duration
		healthy bool
	}{
		{"/ok", 0, 0, true},
		{"/ok", 200, 0, true},
		{"/nocontent", 204, 0, true},
		{"/nocontent", 0, 0, false},
		{"/down", 0, 0, false},
		{"/moved", 0, 0, false}, // the redirect is judged, not followed
		{"/moved", 302, 0, true},
		{"/hang", 0, 200 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.path, "/"), func(t *testing.T) {
			err := Run(context.Background(), Spec{Kind: vrrp.CheckHTTP, URL: srv.URL + tt.path, ExpectStatus: tt.expect, Timeout: tt.timeout})
			if tt.healthy && err != nil {
				t.Errorf("unhealthy: %v", err)
			}
			if !tt.healthy && !errors.Is(err, ErrUnhealthy) {
				t.Errorf("error %v, want ErrUnhealthy", err)
			}
		})
	}
}

func TestTCP(t *testing.T) {
	ln := testutil.AcceptingListener(t)
	if err := Run(context.Background(), Spec{Kind: vrrp.CheckTCP, Address: ln.Addr().String()}); err != nil {
		t.Errorf("listening port unhealthy: %v", err)
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	if err := Run(context.Background(), Spec{Kind: vrrp.CheckTCP, Address: addr}); !errors.Is(err, ErrUnhealthy) {
		t.Errorf("closed port: %v, want ErrUnhealthy", err)
	}
}

func TestExec(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		testutil.SkipUnprivileged(t, "no sh")
	}
	tests := []struct {
		name    string
		argv    []string
		healthy bool
		msg     string
	}{
		{"exit 0", []string{sh, "-c", "exit 0"}, true, ""},
		{"exit 3 with reason", []string{sh, "-c", "echo disk full >&2; exit 3"}, false, "disk full"},
		{"arguments are not a shell", []string{sh, "-c", `test "$1" = 'a b$(x)'`, "sh", "a b$(x)"}, true, ""},
		{"missing binary", []string{"/nonexistent/vk-check"}, false, "vk-check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), Spec{Kind: vrrp.CheckExec, Command: tt.argv, Timeout: 10 * time.Second})
			if tt.healthy && err != nil {
				t.Errorf("unhealthy: %v", err)
			}
			if !tt.healthy && (!errors.Is(err, ErrUnhealthy) || !strings.Contains(err.Error(), tt.msg)) {
				t.Errorf("error %v, want ErrUnhealthy mentioning %q", err, tt.msg)
			}
		})
	}
}

func TestInvalidSpec(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
	}{
		{"no kind", Spec{}},
		{"process without name", Spec{Kind: vrrp.CheckProcess}},
		{"process name too long", Spec{Kind: vrrp.CheckProcess, Process: "a-very-long-process"}},
		{"http without url", Spec{Kind: vrrp.CheckHTTP}},
		{"http bad scheme", Spec{Kind: vrrp.CheckHTTP, URL: "ftp://127.0.0.1/"}},
		{"tcp without port", Spec{Kind: vrrp.CheckTCP, Address: "127.0.0.1"}},
		{"exec relative", Spec{Kind: vrrp.CheckExec, Command: []string{"true"}}},
		{"unit not a service", Spec{Kind: vrrp.CheckProcess, Process: "nginx", RestartUnit: "nginx"}},
		{"url on a tcp check", Spec{Kind: vrrp.CheckTCP, Address: "127.0.0.1:1", URL: "http://x/"}},
		{"negative timeout", Spec{Kind: vrrp.CheckProcess, Process: "nginx", Timeout: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &fakeRestarter{}
			c := &Checker{Restarter: r}
			if err := c.Run(context.Background(), tt.spec); !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v, want ErrInvalid", err)
			}
			if len(r.calls()) != 0 {
				t.Error("restarted a unit for an invalid check")
			}
		})
	}
}

// TestReason: the reasons the agent shows name the request and the cause,
// not the chain of wrapped errors.
func TestReason(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		spec Spec
		want string
	}{
		{Spec{Kind: vrrp.CheckHTTP, URL: "http://" + addr + "/"}, "GET http://" + addr + "/: connection refused"},
		{Spec{Kind: vrrp.CheckHTTP, URL: srv.URL + "/"}, "GET " + srv.URL + "/ answered 503, want 200"},
		{Spec{Kind: vrrp.CheckTCP, Address: addr}, "connect " + addr + ": connection refused"},
		{Spec{Kind: vrrp.CheckProcess, Process: "vk-none-such"}, "process vk-none-such is not running"},
	}
	for _, tt := range tests {
		r := &fakeRestarter{}
		c := &Checker{Restarter: r}
		err := c.Probe(context.Background(), tt.spec)
		if !errors.Is(err, ErrUnhealthy) || Reason(err) != tt.want {
			t.Errorf("Probe(%s) = %v, reason %q, want %q", tt.spec.Kind, err, Reason(err), tt.want)
		}
		tt.spec.RestartUnit = "web.service"
		if err := c.Probe(context.Background(), tt.spec); len(r.calls()) != 0 {
			t.Errorf("Probe restarted %v (%v); only Run and Recover restart", r.calls(), err)
		}
	}
}

// TestRecover: Recover restarts once and judges again; its error names
// the first cause once, not "unhealthy" twice.
func TestRecover(t *testing.T) {
	p := newFakeProc(t)
	spec := Spec{Kind: vrrp.CheckProcess, Process: "nginx", RestartUnit: "nginx.service", Timeout: time.Second}
	boom := errors.New("job failed")
	r := &fakeRestarter{action: func() error { return boom }}
	c := &Checker{ProcRoot: p.root, Restarter: r}
	cause := c.Probe(context.Background(), spec)
	err := c.Recover(context.Background(), spec, cause)
	want := "process nginx is not running; restart of nginx.service failed: job failed"
	if !errors.Is(err, boom) || Reason(err) != want {
		t.Errorf("Recover = %v (reason %q), want reason %q", err, Reason(err), want)
	}
	r.action = func() error { p.add("9", "nginx", "S"); return nil }
	if err := c.Recover(context.Background(), spec, cause); err != nil {
		t.Errorf("Recover after a restart that started nginx: %v", err)
	}
	if got := r.calls(); len(got) != 2 {
		t.Errorf("restarts %v, want one per Recover", got)
	}
}
