package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/vipkeeper/vipkeeper/agent/health"
	"github.com/vipkeeper/vipkeeper/agent/keepalived"
	"github.com/vipkeeper/vipkeeper/agent/metadata"
	"github.com/vipkeeper/vipkeeper/agent/state"
	"github.com/vipkeeper/vipkeeper/internal/daemon"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Transition sources (vrrp.Transition.Source).
const (
	SourceNotify    = "notify"
	SourceNetlink   = "netlink"
	SourceReconcile = "reconcile"
)

// deps are the seams of an Agent. Run builds them from the configuration;
// tests replace them.
type deps struct {
	source     metadata.Source
	link       Link
	keepalived keepalived.Keepalived
	validator  keepalived.Validator // nil: rendered files are not validated
	notifier   sdNotifier
	now        func() time.Time
	render     func(*vrrp.Metadata, render.Options) (*render.Output, error)
	reportHTTP *http.Client
	// writeFile replaces one file atomically (nil: fsutil.WriteAtomic);
	// tests inject failures through it.
	writeFile func(path string, data []byte, mode os.FileMode) error
	// metrics records the agent's metrics (nil: none); gatherer is the
	// registry served on metrics_listen.
	metrics  *Metrics
	gatherer prometheus.Gatherer
}

// Agent is one running vipkeeper-agent. Build it with newAgent and run it
// with run; Run does both.
type Agent struct {
	// Immutable after newAgent.
	cfg       *Config
	log       *slog.Logger
	store     *state.Store
	d         deps
	reportURL string
	// refresh carries on-demand apply requests to the apply loop; the
	// loop answers on the request's channel.
	refresh chan chan error
	// linkChanged is kicked by the netlink watcher.
	linkChanged chan struct{}
	// reportKick wakes the reporter when a transition is recorded.
	reportKick chan struct{}
	// statusChanged wakes the systemd status updater.
	statusChanged chan struct{}

	// lastTag is the tag of the last applied document; owned by the apply loop.
	lastTag string
	// lastReconcile is when the reconcile loop last ran (unix ns), for the watchdog.
	lastReconcile atomic.Int64
	// health runs the checks with on_failure resign and writes their
	// track files; set by run before any loop starts (nil when the agent
	// is not running, e.g. an apply loop run alone in a test).
	health atomic.Pointer[health.Runner]
	// trackDirMissing is set when the track directory did not exist as
	// the agent started: a keepalived already running then dropped its
	// track files, and the first apply reloads it even when nothing
	// changed. Owned by the apply loop after run sets it.
	trackDirMissing bool

	mu sync.Mutex // guards everything below
	// lastReload is when keepalived was last reloaded, and deferUntil when
	// a change held back to coalesce a burst of revisions is due (zero:
	// none).
	lastReload, deferUntil time.Time
	// From the last successful apply (or the state database at start).
	self      string
	group     string
	vip       netip.Prefix
	vip6      netip.Prefix // a dual-stack group's IPv6 VIP (invalid: none)
	applied   string
	revision  uint64
	lastApply time.Time
	scripts   []string
	// Role tracking.
	role       vrrp.Role
	since      time.Time
	lastAt     time.Time
	vipPresent bool
	// vip6Present is whether vip6 is on the interface (vip6.go).
	vip6Present bool
	kaRunning   bool
	// mismatchSince is when the role and the VIP started to disagree;
	// mismatchRecorded whether that disagreement was recorded.
	mismatchSince    time.Time
	mismatchRecorded bool
	// stoppedSince is when keepalived was first seen not running.
	stoppedSince time.Time
	// Errors shown in status.
	lastErr     string
	lastErrAt   time.Time
	reportErr   string
	reportErrAt time.Time
	ready       bool
}

// Run runs the agent until ctx ends; it returns ctx's error
// (context.Canceled on a clean shutdown) or the error that stopped it.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := checkInterface(cfg.Interface); err != nil {
		return err
	}
	d := deps{
		link:     &NetlinkLink{Iface: cfg.Interface, Log: log},
		notifier: daemon.Systemd{},
		now:      time.Now,
		render:   render.Render,
		reportHTTP: &http.Client{
			Timeout:   cfg.Report.Timeout,
			Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute},
		},
	}
	if cfg.Metadata.URL != "" {
		d.source = &metadata.HTTPSource{URL: cfg.Metadata.URL, Client: &http.Client{
			Timeout:   cfg.Metadata.Timeout,
			Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute},
		}}
	} else {
		d.source = &metadata.FileSource{Path: cfg.Metadata.File}
	}
	if !cfg.Keepalived.SkipConfigTest {
		if _, err := exec.LookPath(cfg.Keepalived.Binary); err == nil {
			d.validator = &keepalived.ConfigTester{Binary: cfg.Keepalived.Binary}
		} else {
			log.Warn("keepalived binary not found: rendered files are installed without --config-test", "op", "apply", "binary", cfg.Keepalived.Binary)
		}
	}
	if cfg.MetricsListen != "" {
		reg, err := daemon.NewRegistry()
		if err != nil {
			return err
		}
		m, err := NewMetrics(reg)
		if err != nil {
			return err
		}
		d.metrics, d.gatherer = m, reg
	}
	ka, closeKA := newKeepalived(ctx, cfg.Keepalived, log)
	defer closeKA()
	d.keepalived = ka

	a, err := newAgent(cfg, log, d)
	if err != nil {
		return err
	}
	defer a.close()
	return a.run(ctx)
}

// newAgent opens the state database and loads the persisted state.
func newAgent(cfg *Config, log *slog.Logger, d deps) (*Agent, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: state dir: %w", err)
	}
	reportURL := cfg.ReportURL()
	st, err := state.OpenStore(filepath.Join(cfg.StateDir, "agent.db"), state.StoreOptions{
		HistoryLimit: cfg.HistoryLimit,
		Outbox:       reportURL != "",
	})
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:           cfg,
		log:           log,
		store:         st,
		d:             d,
		reportURL:     reportURL,
		refresh:       make(chan chan error),
		linkChanged:   make(chan struct{}, 1),
		reportKick:    make(chan struct{}, 1),
		statusChanged: make(chan struct{}, 1),
	}
	s, err := st.State()
	if err != nil {
		st.Close()
		return nil, err
	}
	a.role, a.since, a.lastAt, a.vipPresent, a.vip6Present = s.Role, s.Since, s.LastAt, s.VIPPresent, s.VIP6Present
	a.applied, a.revision, a.lastApply, a.scripts = s.AppliedHash, s.Revision, s.LastApply, s.Scripts
	a.self, a.group = s.Member, s.Group
	if a.self == "" {
		a.self = cfg.Member
	}
	if p, err := netip.ParsePrefix(s.VIP); err == nil {
		a.vip = p
	}
	if p, err := netip.ParsePrefix(s.VIP6); err == nil {
		a.vip6 = p
	}
	a.publishLocked() // a is not shared yet: no lock needed
	a.noteOutbox()
	return a, nil
}

func (a *Agent) close() {
	if err := a.store.Close(); err != nil {
		a.log.Error("close state", "op", "shutdown", "err", err)
	}
}

// run drains the spool, serves the control socket and runs every loop
// until ctx ends.
func (a *Agent) run(ctx context.Context) error {
	if _, err := os.Stat(a.cfg.TrackDir); errors.Is(err, os.ErrNotExist) {
		a.trackDirMissing = true
	}
	hr, err := health.New(health.Options{
		Dir:      a.cfg.TrackDir,
		Metrics:  a.d.metrics.checkMetrics(),
		OnChange: a.checkChanged,
		Log:      a.log,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.health.Store(hr)
	ln, err := listenControl(a.cfg.Socket)
	if err != nil {
		return err
	}
	mln, err := a.listenMetrics()
	if err != nil {
		ln.Close()
		return err
	}
	a.removeStaleTemps()
	// Events spooled while the agent was down come before anything new;
	// notify requests wait in the socket's backlog meanwhile.
	a.drainSpool()

	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := daemon.Serve(gctx, srv, ln); err != nil {
			return fmt.Errorf("agent: control socket: %w", err)
		}
		return nil
	})
	metricsAddr := "off"
	if mln != nil {
		metricsAddr = mln.Addr().String()
		g.Go(func() error { return a.serveMetrics(gctx, mln) })
	}
	// The runner stops when gctx ends and writes every track file "1".
	g.Go(func() error { return hr.Run(gctx) })
	g.Go(func() error { return a.applyLoop(gctx) })
	g.Go(func() error { return a.d.link.Watch(gctx, a.linkChanged) })
	g.Go(func() error { return a.reconcileLoop(gctx) })
	g.Go(func() error { return a.kaDeathLoop(gctx) })
	if a.reportURL != "" {
		g.Go(func() error { return a.reportLoop(gctx) })
	} else {
		a.log.Info("reporting is off: transitions are recorded but not sent", "op", "report")
	}
	g.Go(func() error { return a.systemdLoop(gctx) })
	a.log.Info("agent started", "op", "start", "socket", a.cfg.Socket, "source", a.d.source.String(), "iface", a.cfg.Interface, "report", a.reportURL, "metrics", metricsAddr)
	err = g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	a.log.Info("agent stopped", "op", "shutdown")
	return ctx.Err()
}

// listenControl listens on the control socket, replacing a stale socket
// file but refusing to steal one another agent still answers on
// (daemon.ErrSocketInUse).
func listenControl(path string) (net.Listener, error) {
	ln, err := daemon.ListenUnix(path, 0o755)
	if err != nil {
		return nil, fmt.Errorf("agent: control socket: %w", err)
	}
	return ln, nil
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// applyLoop polls the source, applies at once when the metadata watcher
// (watch.go, its own goroutine, stopped and waited for on return) saw
// the document change, and serves refresh requests.
func (a *Agent) applyLoop(ctx context.Context) error {
	changed := make(chan struct{}, 1) // kicked by the watcher
	applied := make(chan string, 1)   // the newest applied tag, for the watcher
	wctx, stopWatch := context.WithCancel(ctx)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		a.watchMetadata(wctx, applied, changed)
	}()
	defer func() { stopWatch(); <-watching }()
	t := time.NewTimer(0)
	defer t.Stop()
	offered := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.applyAndNote(ctx, false)
		case <-changed:
			a.applyAndNote(ctx, false)
		case reply := <-a.refresh:
			reply <- a.applyAndNote(ctx, true)
		}
		if a.lastTag != offered {
			offered = a.lastTag
			offerTag(applied, offered)
		}
		t.Reset(a.nextApply())
	}
}

// nextApply is how long the apply loop waits: the poll interval, or less
// when a held-back change is due sooner.
func (a *Agent) nextApply() time.Duration {
	next := a.cfg.Metadata.PollInterval
	a.mu.Lock()
	until := a.deferUntil
	a.mu.Unlock()
	if !until.IsZero() {
		next = min(next, max(until.Sub(a.d.now()), 0))
	}
	return next
}

// Refresh asks the apply loop to fetch and apply now, and waits.
func (a *Agent) Refresh(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case a.refresh <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// applyAndNote applies and records the outcome for status and systemd.
func (a *Agent) applyAndNote(ctx context.Context, force bool) error {
	err := a.apply(ctx, force)
	now := a.d.now()
	a.mu.Lock()
	first := false
	if err != nil {
		if a.lastErr != err.Error() {
			a.log.Error("apply failed; keeping the last good files", "op", "apply", "err", err)
		}
		a.lastErr, a.lastErrAt = err.Error(), now
	} else {
		a.lastErr, a.lastErrAt = "", time.Time{}
		first = !a.ready
		a.ready = true
	}
	a.mu.Unlock()
	if first {
		a.sdNotify("READY=1")
	}
	kick(a.statusChanged)
	return err
}
