package health

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/check"
	"github.com/vipkeeper/vipkeeper/render"
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

// service is a stand-in for a service: up while its flag file exists. Its
// check is a real exec check (/usr/bin/test -e FLAG).
type service struct {
	t    *testing.T
	flag string
}

func newService(t *testing.T, up bool) *service {
	s := &service{t: t, flag: filepath.Join(t.TempDir(), "up")}
	if up {
		s.start()
	}
	return s
}

func (s *service) start() {
	if err := os.WriteFile(s.flag, nil, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func (s *service) stop() {
	if err := os.Remove(s.flag); err != nil {
		s.t.Fatal(err)
	}
}

func (s *service) check(name string) vrrp.Check {
	return vrrp.Check{
		Name: name, Kind: vrrp.CheckExec, Command: []string{"/usr/bin/test", "-e", s.flag},
		Interval: 1000, OnFailure: vrrp.OnFailureResign,
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
	action := f.action
	f.mu.Unlock()
	if action == nil {
		return nil
	}
	return action()
}

func (f *fakeRestarter) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.units)
}

// rig is a runner over a t.TempDir track directory, its changes recorded.
type rig struct {
	t       *testing.T
	r       *Runner
	dir     string
	restart *fakeRestarter
	reg     *prometheus.Registry

	mu      sync.Mutex
	changes []string // "name:state"
}

func newRig(t *testing.T) *rig {
	g := &rig{t: t, dir: filepath.Join(t.TempDir(), "track"), restart: &fakeRestarter{}, reg: prometheus.NewRegistry()}
	m, err := NewMetrics(g.reg)
	if err != nil {
		t.Fatal(err)
	}
	g.r, err = New(Options{
		Dir:      g.dir,
		Checker:  &check.Checker{Restarter: g.restart, PollInterval: 50 * time.Millisecond, Log: testLogger(t)},
		Metrics:  m,
		Log:      testLogger(t),
		OnChange: g.changed,
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *rig) changed(st api.CheckStatus) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.changes = append(g.changes, st.Name+":"+st.State)
}

func (g *rig) changeLog() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.changes)
}

// run runs the runner until the test ends, in the caller's bubble.
func (g *rig) run() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				g.t.Errorf("Run: %v", err)
			}
		})
	}
	g.t.Cleanup(stop)
	return stop
}

func (g *rig) update(checks ...vrrp.Check) {
	g.t.Helper()
	if err := g.r.Update(checks); err != nil {
		g.t.Fatal(err)
	}
}

// file is the content of check name's track file.
func (g *rig) file(name string) string {
	g.t.Helper()
	b, err := os.ReadFile(render.TrackFile(g.dir, name))
	if err != nil {
		g.t.Fatal(err)
	}
	return string(b)
}

func (g *rig) status(name string) api.CheckStatus {
	g.t.Helper()
	for _, st := range g.r.Status() {
		if st.Name == name {
			return st
		}
	}
	g.t.Fatalf("check %s not in status %+v", name, g.r.Status())
	return api.CheckStatus{}
}

// want asserts check name's state and track file.
func (g *rig) want(step, name, state, file string) {
	g.t.Helper()
	st := g.status(name)
	if st.State != state || g.file(name) != file {
		g.t.Fatalf("%s: state %s, file %q (reason %q), want %s, %q", step, st.State, g.file(name), st.Reason, state, file)
	}
}

// tick lets the fake clock run d and every check judge what is due.
func tick(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestFallRise(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRig(t)
		g.run()
		svc := newService(t, true)
		c := svc.check("web")
		c.Fall, c.Rise = 3, 2
		g.update(c)
		synctest.Wait()
		g.want("first judgement, rise 2", "web", api.CheckUnknown, Failing)
		tick(time.Second)
		g.want("second judgement", "web", api.CheckHealthy, Healthy)

		svc.stop()
		for i := 1; i < 3; i++ {
			tick(time.Second)
			g.want("failing judgements below fall", "web", api.CheckHealthy, Healthy)
			if st := g.status("web"); !strings.Contains(st.Reason, "/usr/bin/test: exit status 1") {
				t.Errorf("reason %q does not say why", st.Reason)
			}
		}
		tick(time.Second)
		g.want("third failing judgement", "web", api.CheckFailing, Failing)
		failedAt := g.status("web").Since

		svc.start()
		tick(time.Second)
		g.want("one healthy judgement below rise", "web", api.CheckFailing, Failing)
		if st := g.status("web"); st.Reason != "" || !st.Since.Equal(failedAt) {
			t.Errorf("after a healthy judgement: reason %q since %v, want none since %v", st.Reason, st.Since, failedAt)
		}
		tick(time.Second)
		g.want("risen", "web", api.CheckHealthy, Healthy)
		if got, want := g.changeLog(), []string{"web:healthy", "web:failing", "web:healthy"}; !slices.Equal(got, want) {
			t.Errorf("changes %v, want %v", got, want)
		}
		if st := g.status("web"); st.Kind != "exec" || st.OnFailure != vrrp.OnFailureResign || st.LastRun.IsZero() {
			t.Errorf("status %+v", st)
		}
	})
}

// TestRestartBringsBack: a failing service restarted once and healthy
// again never fails its check: the file never says "1" once healthy.
func TestRestartBringsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRig(t)
		g.run()
		svc := newService(t, true)
		g.restart.action = func() error { svc.start(); return nil }
		c := svc.check("web")
		c.RestartUnit = "web.service"
		g.update(c)
		synctest.Wait()
		g.want("start", "web", api.CheckHealthy, Healthy)
		for range 3 {
			svc.stop()
			tick(time.Second)
			g.want("after a restart that brought it back", "web", api.CheckHealthy, Healthy)
		}
		if got := g.restart.calls(); !slices.Equal(got, []string{"web.service", "web.service", "web.service"}) {
			t.Errorf("restarts %v, want one per failure", got)
		}
		if got := g.changeLog(); !slices.Equal(got, []string{"web:healthy"}) {
			t.Errorf("changes %v, want only the first verdict", got)
		}
	})
}

// TestRestartFails: a restart that does not help fails the check at once
// (fall 1); while failing, the unit is restarted again only every
// RestartRetry.
func TestRestartFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRig(t)
		g.run()
		svc := newService(t, true)
		boom := errors.New("job for web.service failed")
		g.restart.action = func() error { return boom }
		c := svc.check("web")
		c.RestartUnit = "web.service"
		g.update(c)
		synctest.Wait()
		g.want("start", "web", api.CheckHealthy, Healthy)
		svc.stop()
		tick(time.Second)
		g.want("restart failed", "web", api.CheckFailing, Failing)
		if r := g.status("web").Reason; !strings.Contains(r, "restart of web.service failed: job for web.service failed") {
			t.Errorf("reason %q does not name the failed restart", r)
		}
		if n := len(g.restart.calls()); n != 1 {
			t.Fatalf("%d restarts, want 1", n)
		}
		tick(DefaultRestartRetry - 2*time.Second)
		if n := len(g.restart.calls()); n != 1 {
			t.Errorf("%d restarts within the retry interval, want still 1", n)
		}
		tick(2 * time.Second)
		if n := len(g.restart.calls()); n != 2 {
			t.Errorf("%d restarts after the retry interval, want 2", n)
		}
		// The retry that works brings the check back.
		g.restart.mu.Lock()
		g.restart.action = func() error { svc.start(); return nil }
		g.restart.mu.Unlock()
		tick(DefaultRestartRetry)
		g.want("retry worked", "web", api.CheckHealthy, Healthy)
	})
}

// TestRestartHangs: a restart that hangs is cut at the restart budget and
// the check fails then, not before.
func TestRestartHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRig(t)
		// A systemd job that never finishes: the restarter returns only
		// when the runner's budget ends its ctx.
		g.r.checker.Restarter = ctxRestarter{g.restart}
		g.run()
		svc := newService(t, true)
		c := svc.check("web")
		c.RestartUnit = "web.service"
		g.update(c)
		synctest.Wait()
		svc.stop()
		tick(time.Second + DefaultRestartBudget - 100*time.Millisecond)
		g.want("restart under way", "web", api.CheckHealthy, Healthy)
		tick(200 * time.Millisecond)
		g.want("budget spent", "web", api.CheckFailing, Failing)
	})
}

// ctxRestarter records the restart and blocks until ctx ends, like a
// systemd job that never finishes.
type ctxRestarter struct{ f *fakeRestarter }

func (c ctxRestarter) RestartUnit(ctx context.Context, unit string) error {
	_ = c.f.RestartUnit(ctx, unit)
	<-ctx.Done()
	return ctx.Err()
}

// TestNewCheckStartsFailing: Update creates a new check's file "1" before
// it returns, and it stays "1" until the check has risen; a file an agent
// that crashed left is kept until the first verdict.
func TestNewCheckStartsFailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRig(t)
		g.run()
		svc := newService(t, true)
		c := svc.check("web")
		c.Rise = 3
		if err := os.MkdirAll(g.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(render.TrackFile(g.dir, "left"), []byte(Healthy), 0o644); err != nil {
			t.Fatal(err)
		}
		left := svc.check("left")
		left.Rise = 3
		g.update(c, left)
		if got := g.file("web"); got != Failing {
			t.Fatalf("right after Update: %q, want %q", got, Failing)
		}
		synctest.Wait()
		tick(time.Second)
		g.want("two healthy judgements of three", "web", api.CheckUnknown, Failing)
		g.want("two healthy judgements of three", "left", api.CheckUnknown, Healthy)
		tick(time.Second)
		g.want("risen", "web", api.CheckHealthy, Healthy)

		down := newService(t, false).check("down")
		g.update(c, left, down)
		synctest.Wait()
		g.want("never healthy", "down", api.CheckFailing, Failing)
	})
}

// TestUpdateKeepsVerdict: an Update that changes a check's spec keeps
// its state, since and file (no flap to "unknown"), and the new spec
// runs; a removed check stops and Prune removes its file.
func TestUpdateKeepsVerdict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRig(t)
		g.run()
		svc := newService(t, true)
		c := svc.check("web")
		other := svc.check("other")
		g.update(c, other)
		synctest.Wait()
		g.want("start", "web", api.CheckHealthy, Healthy)
		since := g.status("web").Since
		tick(time.Second)

		c.Interval = 5000
		c.Fall = 2
		g.update(c)
		g.want("right after Update", "web", api.CheckHealthy, Healthy)
		if st := g.status("web"); !st.Since.Equal(since) {
			t.Errorf("since %v, want %v kept", st.Since, since)
		}
		synctest.Wait()
		ran := g.status("web").LastRun
		tick(4 * time.Second)
		if st := g.status("web"); !st.LastRun.Equal(ran) {
			t.Errorf("judged again after 4 s with interval 5 s")
		}
		tick(time.Second)
		if st := g.status("web"); !st.LastRun.Equal(ran.Add(5 * time.Second)) {
			t.Errorf("last run %v, want %v (interval 5 s)", st.LastRun, ran.Add(5*time.Second))
		}
		if got := g.changeLog(); !slices.Equal(got, []string{"other:healthy", "web:healthy"}) && !slices.Equal(got, []string{"web:healthy", "other:healthy"}) {
			t.Errorf("changes %v, want only the first verdicts", got)
		}
		if n := len(g.r.Status()); n != 1 {
			t.Errorf("%d checks in status after removing one, want 1", n)
		}
		// The removed check's file stays until Prune; then only web's.
		g.file("other")
		if err := os.WriteFile(filepath.Join(g.dir, ".web.tmp-123"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := g.r.Prune(); err != nil {
			t.Fatal(err)
		}
		ents, _ := os.ReadDir(g.dir)
		if len(ents) != 1 || ents[0].Name() != "web" {
			t.Errorf("after Prune the track directory holds %v, want only web", ents)
		}
	})
}

// TestStopWritesFailing: Run's clean return writes every file "1", and
// Update is refused afterwards.
func TestStopWritesFailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRig(t)
		stop := g.run()
		svc := newService(t, true)
		g.update(svc.check("a"), svc.check("b"))
		synctest.Wait()
		g.want("start", "a", api.CheckHealthy, Healthy)
		g.want("start", "b", api.CheckHealthy, Healthy)
		stop()
		for _, name := range []string{"a", "b"} {
			if got := g.file(name); got != Failing {
				t.Errorf("%s after stop: %q, want %q", name, got, Failing)
			}
		}
		if err := g.r.Update([]vrrp.Check{svc.check("a")}); !errors.Is(err, ErrStopped) {
			t.Errorf("Update after stop: %v, want ErrStopped", err)
		}
	})
}

func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRig(t)
		g.run()
		svc := newService(t, true)
		g.update(svc.check("web"))
		synctest.Wait()
		svc.stop()
		tick(time.Second)
		state := func(s string) float64 {
			return testutil.ToFloat64(g.r.metrics.state.WithLabelValues("web", s))
		}
		if state(api.CheckFailing) != 1 || state(api.CheckHealthy) != 0 || state(api.CheckUnknown) != 0 {
			t.Errorf("state gauge: failing %v healthy %v unknown %v", state(api.CheckFailing), state(api.CheckHealthy), state(api.CheckUnknown))
		}
		for _, to := range []string{api.CheckHealthy, api.CheckFailing} {
			if n := testutil.ToFloat64(g.r.metrics.transitions.WithLabelValues("web", to)); n != 1 {
				t.Errorf("transitions to %s: %v, want 1", to, n)
			}
		}
		if n := testutil.CollectAndCount(g.r.metrics.duration); n != 1 {
			t.Errorf("%d duration series, want 1", n)
		}
		g.update()
		if n := testutil.CollectAndCount(g.reg); n != 0 {
			t.Errorf("%d series left after the check was removed, want 0", n)
		}
	})
}

func TestUpdateRefuses(t *testing.T) {
	g := newRig(t)
	svc := newService(t, true)
	for _, checks := range [][]vrrp.Check{
		{svc.check("a"), svc.check("a")},
		{svc.check("../x")},
		{svc.check(".hidden")},
	} {
		if err := g.r.Update(checks); err == nil {
			t.Errorf("Update(%v) accepted", checks)
		}
	}
	if _, err := New(Options{Dir: "relative/track"}); err == nil {
		t.Error("a relative track directory was accepted")
	}
}

// TestNewCreatesTrackDir: the track directory exists as soon as the runner
// does, before any check or metadata: keepalived drops a track_file whose
// directory is missing.
func TestNewCreatesTrackDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "track")
	if _, err := New(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		t.Fatalf("track directory after New: %v, %v; want a directory", fi, err)
	}
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Dir: filepath.Join(blocked, "track")}); err == nil {
		t.Error("New accepted a track directory it cannot create")
	}
}

// TestProcessExitNoticed runs a process check on a real process with an
// interval of an hour: only the pidfd watch can notice its exit. It logs
// the time from SIGKILL to the track file saying "1".
func TestProcessExitNoticed(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "vkh" + hex.EncodeToString(b)
	link := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(sleep, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	dir := t.TempDir()
	changes := make(chan api.CheckStatus, 4)
	r, err := New(Options{Dir: dir, Log: testLogger(t), OnChange: func(st api.CheckStatus) { changes <- st }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c := vrrp.Check{Name: "proc", Kind: vrrp.CheckProcess, Process: name, Interval: 3600 * 1000, OnFailure: vrrp.OnFailureResign}
	if err := r.Update([]vrrp.Check{c}); err != nil {
		t.Fatal(err)
	}
	bound := time.After(30 * time.Second) // a bound on a hang, not a timing assertion
	next := func() api.CheckStatus {
		select {
		case st := <-changes:
			return st
		case <-bound:
			t.Fatal("no verdict")
		}
		return api.CheckStatus{}
	}
	if st := next(); st.State != api.CheckHealthy {
		t.Fatalf("first verdict %+v, want healthy", st)
	}
	killed := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	st := next()
	noticed := time.Since(killed)
	if st.State != api.CheckFailing || st.Reason != "process "+name+" is not running" {
		t.Fatalf("after kill: %+v, want failing, process not running", st)
	}
	if got, _ := os.ReadFile(render.TrackFile(dir, "proc")); string(got) != Failing {
		t.Fatalf("track file %q, want %q", got, Failing)
	}
	t.Logf("SIGKILL → track file \"1\": %v (check interval 1 h)", noticed)
}
