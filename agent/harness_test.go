package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/agent/keepalived"
	"github.com/vipkeeper/vipkeeper/agent/metadata"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/fsutil"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// fakeLink is an interface whose addresses the test sets.
type fakeLink struct {
	mu      sync.Mutex
	addrs   []netip.Prefix
	removed []netip.Addr
	failRm  error
	changed chan<- struct{}
}

func (f *fakeLink) Name() string { return "eth0" }

func (f *fakeLink) Addrs() ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.addrs), nil
}

func (f *fakeLink) RemoveAddr(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRm != nil {
		return f.failRm
	}
	f.removed = append(f.removed, a)
	f.addrs = slices.DeleteFunc(f.addrs, func(p netip.Prefix) bool { return p.Addr() == a })
	return nil
}

func (f *fakeLink) Watch(ctx context.Context, changed chan<- struct{}) error {
	f.mu.Lock()
	f.changed = changed
	f.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (f *fakeLink) set(ps ...string) {
	f.mu.Lock()
	f.addrs = nil
	for _, p := range ps {
		f.addrs = append(f.addrs, netip.MustParsePrefix(p))
	}
	ch := f.changed
	f.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (f *fakeLink) removedAddrs() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.removed)
}

// fakeKeepalived records reloads.
type fakeKeepalived struct {
	mu      sync.Mutex
	running bool
	reloads int
	err     error
}

func (k *fakeKeepalived) Running(context.Context) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.running, nil
}

func (k *fakeKeepalived) Reload(context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.running {
		return keepalived.ErrNotRunning
	}
	if k.err != nil {
		return k.err
	}
	k.reloads++
	return nil
}

func (k *fakeKeepalived) setRunning(r bool) {
	k.mu.Lock()
	k.running = r
	k.mu.Unlock()
}

func (k *fakeKeepalived) reloadCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reloads
}

// fakeValidator fails with err and counts calls; it checks that the staged
// config exists and refers to staged scripts.
type fakeValidator struct {
	mu    sync.Mutex
	err   error
	calls int
	bad   string
}

func (v *fakeValidator) Validate(_ context.Context, path string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls++
	data, err := os.ReadFile(path)
	if err != nil {
		v.bad = err.Error()
	} else if !strings.Contains(string(data), filepath.Join(filepath.Dir(path), "scripts")) {
		v.bad = "staged config does not refer to the staged scripts"
	}
	return v.err
}

// fakeNotifier records sd_notify messages.
type fakeNotifier struct {
	mu   sync.Mutex
	msgs []string
}

func (n *fakeNotifier) Notify(s string) error {
	n.mu.Lock()
	n.msgs = append(n.msgs, s)
	n.mu.Unlock()
	return nil
}
func (n *fakeNotifier) WatchdogInterval() time.Duration { return 200 * time.Millisecond }

func (n *fakeNotifier) messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.msgs)
}

// testMeta is a valid two-member group on the documentation network.
func testMeta(rev uint64) *vrrp.Metadata {
	return &vrrp.Metadata{
		Version:         1,
		Group:           vrrp.Group{ID: "ig-web", Name: "web"},
		Revision:        rev,
		VIP:             netip.MustParsePrefix("192.0.2.10/24"),
		VirtualRouterID: 51,
		Members: []vrrp.Member{
			{Name: "web-1", Address: netip.MustParseAddr("192.0.2.11"), Priority: 100},
			{Name: "web-2", Address: netip.MustParseAddr("192.0.2.12"), Priority: 99},
		},
		Checks: []vrrp.Check{{Name: "chk_web", Kind: vrrp.CheckTCP, Address: "127.0.0.1:80", Weight: 2}},
	}
}

func metaJSON(t testing.TB, m *vrrp.Metadata) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testAgent is an Agent running against fakes, with a file metadata source.
type testAgent struct {
	*Agent
	t        testing.TB
	dir      string
	metaPath string
	link     *fakeLink
	ka       *fakeKeepalived
	val      *fakeValidator
	sd       *fakeNotifier
	client   *control.Client
	log      *slog.Logger // nil: debug logs to the test's output
	cancel   context.CancelFunc
	done     chan error
}

type harnessOpt func(*Config, *deps)

// shortGrace makes role/VIP disagreements recorded after 200 ms.
func shortGrace(c *Config, _ *deps) { c.ReconcileGrace = 200 * time.Millisecond }

// startTestAgent writes meta (if not nil) to the metadata file and runs an
// agent until the test ends.
func startTestAgent(t testing.TB, meta []byte, opts ...harnessOpt) *testAgent {
	t.Helper()
	return startTestAgentLog(t, nil, meta, opts...)
}

// startTestAgentLog is startTestAgent with the agent's logger (nil: debug
// logs to the test's output).
func startTestAgentLog(t testing.TB, log *slog.Logger, meta []byte, opts ...harnessOpt) *testAgent {
	t.Helper()
	dir := t.TempDir()
	h := &testAgent{
		t: t, dir: dir, metaPath: filepath.Join(dir, "metadata.json"), log: log,
		link: &fakeLink{}, ka: &fakeKeepalived{running: true}, val: &fakeValidator{}, sd: &fakeNotifier{},
	}
	h.link.set("192.0.2.11/24")
	if meta != nil {
		h.writeMeta(meta)
	}
	cfg := DefaultConfig()
	cfg.Member = "web-1"
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.SpoolDir = filepath.Join(dir, "spool")
	cfg.Socket = filepath.Join(dir, "agent.sock")
	cfg.Vipctl = "/usr/bin/vipctl"
	cfg.Keepalived.Config = filepath.Join(dir, "keepalived", "keepalived.conf")
	cfg.Keepalived.ScriptsDir = filepath.Join(dir, "keepalived", "vipkeeper")
	cfg.TrackDir = filepath.Join(dir, "track")
	cfg.Metadata.File = h.metaPath
	cfg.Metadata.PollInterval = time.Hour // tests apply with Refresh
	cfg.Keepalived.MinReloadInterval = 0  // each refresh applies; coalesce_test.go sets it
	cfg.ReconcileInterval = 100 * time.Millisecond
	cfg.ReconcileGrace = time.Hour // tests of the grace shorten it with shortGrace
	cfg.Report.MinBackoff = 10 * time.Millisecond
	cfg.Report.MaxBackoff = 50 * time.Millisecond
	cfg.Report.Interval = time.Hour
	d := deps{
		source:     &metadata.FileSource{Path: h.metaPath},
		link:       h.link,
		keepalived: h.ka,
		validator:  h.val,
		notifier:   h.sd,
		now:        time.Now,
		render:     render.Render,
	}
	for _, o := range opts {
		o(&cfg, &d)
	}
	if d.reportHTTP == nil {
		d.reportHTTP = &httpClientNoProxy
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.start(&cfg, d)
	return h
}

func (h *testAgent) start(cfg *Config, d deps) {
	t := h.t
	log := h.log
	if log == nil {
		log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a, err := newAgent(cfg, log, d)
	if err != nil {
		t.Fatal(err)
	}
	h.Agent = a
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() {
		err := a.run(ctx)
		a.close()
		h.done <- err
	}()
	h.client = control.NewClient(cfg.Socket, 10*time.Second)
	t.Cleanup(func() { h.stop() })
	waitFor(t, "the control socket", func() bool {
		_, err := h.client.Status(context.Background())
		return err == nil
	})
}

// stop ends the agent and waits for it; safe to call twice.
func (h *testAgent) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			h.t.Errorf("agent stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		h.t.Error("agent did not stop within 30s")
	}
	h.client.Close()
}

// restart stops the agent and starts a new one on the same state.
func (h *testAgent) restart() {
	cfg, d := h.cfg, h.d
	h.stop()
	h.start(cfg, d)
}

func (h *testAgent) writeMeta(data []byte) {
	h.t.Helper()
	if err := fsutil.WriteAtomic(h.metaPath, data, 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *testAgent) refresh() api.AgentStatus {
	h.t.Helper()
	st, err := h.client.Refresh(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *testAgent) status() api.AgentStatus {
	h.t.Helper()
	st, err := h.client.Status(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *testAgent) history() []vrrp.Transition {
	h.t.Helper()
	hist, err := h.client.History(context.Background(), 1000)
	if err != nil {
		h.t.Fatal(err)
	}
	return hist
}

func (h *testAgent) hook(args ...string) {
	h.t.Helper()
	if _, err := h.client.Notify(context.Background(), api.NotifyRequest{Args: args, At: time.Now()}); err != nil {
		h.t.Fatal(err)
	}
}

// snapshot reads every file under the keepalived dir with its mode and mtime.
func (h *testAgent) snapshot() map[string]string {
	h.t.Helper()
	out := map[string]string{}
	root := filepath.Dir(h.cfg.Keepalived.Config)
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(p)
		out[p] = fmt.Sprintf("%v %d %x", fi.Mode(), fi.ModTime().UnixNano(), data)
		return nil
	})
	return out
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
