// Package health runs the group's health checks inside the agent (those
// with on_failure "resign") and hands each verdict to keepalived through
// a track file: "0" healthy, "1" failing. keepalived tracks the file with
// weight 0, so a failing check puts the member in FAULT at once and it
// resigns with a priority-0 advert instead of waiting for the backup's
// master-down timer.
//
// A check's file says failing until its first healthy verdict (it is
// created "1" before a keepalived.conf referring to it is installed), and
// again when the runner stops cleanly: a member never claims the VIP for
// a service nobody has seen healthy. The runner owns the files of the
// track directory and nothing else.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/check"
	"github.com/vipkeeper/vipkeeper/internal/fsutil"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Track file contents (keepalived: with weight 0, non-zero means FAULT).
const (
	Healthy = "0\n"
	Failing = "1\n"
)

// FileMode is a track file's mode: keepalived and operators read it.
const FileMode = 0o644

// DefaultRestartBudget bounds a restart of a check's restart_unit and the
// judgements after it, when the check's timeout is shorter: the seed's
// check_httpd.sh restarted nginx and judged it again within its 2 s
// interval. The verdict stays what it was meanwhile, so a service that
// comes back never fails its check.
const DefaultRestartBudget = 2 * time.Second

// DefaultRestartRetry is how often a failing check's unit is restarted
// again while the check stays failing (a check that was healthy or not
// yet judged is restarted at its first failing judgement).
const DefaultRestartRetry = 10 * time.Second

// ErrStopped is returned by Update once Run has returned.
var ErrStopped = errors.New("health: runner stopped")

// Options configure a Runner.
type Options struct {
	// Dir is the track directory (absolute); the file of check NAME is
	// render.TrackFile(Dir, NAME).
	Dir string
	// Checker judges the checks and restarts units; nil means a Checker
	// with systemd and the real /proc.
	Checker *check.Checker
	// RestartBudget and RestartRetry: zero means the defaults.
	RestartBudget time.Duration
	RestartRetry  time.Duration
	// Metrics records per-check metrics; nil records none.
	Metrics *Metrics
	// OnChange is called, outside the runner's lock, with a check's
	// status each time its state changes.
	OnChange func(api.CheckStatus)
	// Log receives verdict changes; nil discards them.
	Log *slog.Logger
}

// Runner runs checks, one goroutine each, and writes their verdicts to
// their track files. Update sets the checks; Run, which must be called
// once, stops every check when its ctx ends and writes every file "1".
// Safe for concurrent use.
type Runner struct {
	// Immutable after New.
	dir           string
	checker       *check.Checker
	restartBudget time.Duration
	restartRetry  time.Duration
	metrics       *Metrics
	onChange      func(api.CheckStatus)
	log           *slog.Logger
	// base is the parent of every check's context; Run cancels it.
	base   context.Context
	cancel context.CancelFunc

	// updateMu serializes Update and the stop at the end of Run.
	updateMu sync.Mutex

	mu      sync.Mutex // guards everything below and every entry
	checks  map[string]*entry
	stopped bool
}

// entry is one check by name; it outlives an Update that changes the
// check's spec, so that the verdict and the file carry over.
type entry struct {
	// Guarded by Runner.mu.
	spec    vrrp.Check
	state   string
	since   time.Time
	reason  string
	lastRun time.Time
	// oks and fails count consecutive judgements, for rise and fall.
	oks, fails int
	// written is the file's content as last written or found.
	written     string
	lastRestart time.Time
	// cancel stops the check's goroutine, which closes done.
	cancel context.CancelFunc
	done   chan struct{}
}

// New makes a runner and creates the track directory; no check runs until
// Update. The directory must exist before keepalived starts: keepalived
// drops a track_file whose directory is missing (logging "does not exist -
// removing") and would then never see a verdict, so the agent, which
// keepalived's unit is ordered after, creates it first thing, even before
// its first metadata apply (keepalived's init_file then creates missing
// files failing).
func New(opts Options) (*Runner, error) {
	if !filepath.IsAbs(opts.Dir) {
		return nil, fmt.Errorf("health: track directory %q is not an absolute path", opts.Dir)
	}
	// keepalived and operators read the directory; the files say nothing
	// secret.
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("health: track directory: %w", err)
	}
	r := &Runner{
		dir:           filepath.Clean(opts.Dir),
		checker:       opts.Checker,
		restartBudget: opts.RestartBudget,
		restartRetry:  opts.RestartRetry,
		metrics:       opts.Metrics,
		onChange:      opts.OnChange,
		log:           opts.Log,
		checks:        map[string]*entry{},
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.checker == nil {
		r.checker = &check.Checker{Log: r.log}
	}
	if r.restartBudget <= 0 {
		r.restartBudget = DefaultRestartBudget
	}
	if r.restartRetry <= 0 {
		r.restartRetry = DefaultRestartRetry
	}
	r.base, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Dir is the track directory.
func (r *Runner) Dir() string { return r.dir }

// Update makes checks the set that runs. A check whose name is new gets
// its track file created "1" when missing before Update returns, so the
// caller may then install a keepalived.conf referring to it. A check whose
// name stays keeps its verdict and its file while its new spec starts; a
// removed check stops (its file stays until Prune). Checks must be valid
// and their names unique.
func (r *Runner) Update(checks []vrrp.Check) error {
	r.updateMu.Lock()
	defer r.updateMu.Unlock()
	want := make(map[string]vrrp.Check, len(checks))
	for _, c := range checks {
		if !validName(c.Name) {
			return fmt.Errorf("health: check name %q cannot name a track file", c.Name)
		}
		if _, dup := want[c.Name]; dup {
			return fmt.Errorf("health: check %q given twice", c.Name)
		}
		want[c.Name] = c
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return ErrStopped
	}
	var stop []*entry
	var removed []string
	for name, e := range r.checks {
		c, keep := want[name]
		if !keep {
			removed = append(removed, name)
		}
		if !keep || !equalCheck(c, e.spec) {
			e.cancel()
			stop = append(stop, e)
		}
	}
	r.mu.Unlock()
	for _, e := range stop {
		<-e.done
	}

	var errs []error
	var started []string
	r.mu.Lock()
	for _, name := range removed {
		delete(r.checks, name)
		r.metrics.forget(name)
	}
	for name, c := range want {
		e, ok := r.checks[name]
		if ok && equalCheck(c, e.spec) {
			continue
		}
		if !ok {
			written, err := r.ensureFile(name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			e = &entry{state: api.CheckUnknown, since: time.Now(), written: written}
			r.checks[name] = e
			r.metrics.setState(name, api.CheckUnknown)
		}
		e.spec, e.oks, e.fails = c, 0, 0
		ctx, cancel := context.WithCancel(r.base)
		e.cancel, e.done = cancel, make(chan struct{})
		go r.loop(ctx, e, c)
		started = append(started, name)
	}
	r.mu.Unlock()
	if len(started) > 0 || len(removed) > 0 {
		slices.Sort(started)
		slices.Sort(removed)
		r.log.Info("health checks updated", "op", "check", "started", started, "removed", removed)
	}
	return errors.Join(errs...)
}

// validName reports whether a check name can name a file of the track
// directory (vrrp's check names always can; dot files are temporary).
func validName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "/\x00") && !strings.HasPrefix(name, ".")
}

// ensureFile creates name's track file "1" when it is missing or holds
// anything but a verdict, and returns its content. r.mu is held.
func (r *Runner) ensureFile(name string) (string, error) {
	path := render.TrackFile(r.dir, name)
	if b, err := os.ReadFile(path); err == nil && (string(b) == Healthy || string(b) == Failing) {
		return string(b), nil
	}
	// keepalived and operators read the directory; the files say nothing
	// secret.
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return "", fmt.Errorf("health: track directory: %w", err)
	}
	if err := fsutil.WriteAtomic(path, []byte(Failing), FileMode); err != nil {
		return "", fmt.Errorf("health: create track file of check %s: %w", name, err)
	}
	return Failing, nil
}

// equalCheck reports whether a and b run the same way.
func equalCheck(a, b vrrp.Check) bool {
	return a.Name == b.Name && a.Kind == b.Kind && a.Interval == b.Interval && a.Timeout == b.Timeout &&
		a.Fall == b.Fall && a.Rise == b.Rise && a.Process == b.Process && a.URL == b.URL &&
		a.ExpectStatus == b.ExpectStatus && a.Address == b.Address && slices.Equal(a.Command, b.Command) &&
		a.RestartUnit == b.RestartUnit && a.EffectiveOnFailure() == b.EffectiveOnFailure()
}

// Run returns when ctx ends, after stopping every check and writing every
// track file "1": keepalived then sees FAULT, so that an agent that is not
// running never vouches for a service.
func (r *Runner) Run(ctx context.Context) error {
	<-ctx.Done()
	r.updateMu.Lock()
	defer r.updateMu.Unlock()
	r.mu.Lock()
	r.stopped = true
	r.cancel()
	entries := make([]*entry, 0, len(r.checks))
	for _, e := range r.checks {
		entries = append(entries, e)
	}
	r.mu.Unlock()
	for _, e := range entries {
		<-e.done
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, e := range r.checks {
		if err := fsutil.WriteAtomic(render.TrackFile(r.dir, name), []byte(Failing), FileMode); err != nil {
			r.log.Error("write track file on stop", "op", "check", "check", name, "err", err)
			continue
		}
		e.written = Failing
	}
	r.log.Info("health checks stopped; track files say failing", "op", "check", "checks", len(r.checks))
	return nil
}

// Prune removes from the track directory the files of checks no longer
// run, and temporary files an interrupted write left. Call it once
// keepalived reads a configuration that no longer refers to them.
func (r *Runner) Prune() error {
	r.updateMu.Lock()
	defer r.updateMu.Unlock()
	ents, err := os.ReadDir(r.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("health: prune: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if _, ok := r.checks[name]; ok || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(r.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("health: prune: %w", err))
		} else if !strings.HasPrefix(name, ".") {
			r.log.Info("removed the track file of a check no longer run", "op", "check", "check", name)
		}
	}
	return errors.Join(errs...)
}

// Status lists the checks, sorted by name.
func (r *Runner) Status() []api.CheckStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]api.CheckStatus, 0, len(r.checks))
	for _, e := range r.checks {
		out = append(out, e.statusLocked())
	}
	slices.SortFunc(out, func(a, b api.CheckStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (e *entry) statusLocked() api.CheckStatus {
	return api.CheckStatus{
		Name: e.spec.Name, Kind: string(e.spec.Kind), OnFailure: e.spec.EffectiveOnFailure(),
		State: e.state, Since: e.since, Reason: e.reason, LastRun: e.lastRun,
	}
}

// loop judges c every interval until ctx ends; a process check's process
// exiting ends the wait at once.
func (r *Runner) loop(ctx context.Context, e *entry, c vrrp.Check) {
	defer close(e.done)
	spec := toSpec(c)
	interval := c.EffectiveInterval().Duration()
	for {
		start := time.Now()
		err := r.checker.Probe(ctx, spec)
		if err != nil && spec.RestartUnit != "" && ctx.Err() == nil && r.mayRestart(e, start) {
			rctx, cancel := context.WithTimeout(ctx, max(r.restartBudget, spec.Timeout))
			err = r.checker.Recover(rctx, spec, err)
			cancel()
		}
		if !r.judged(ctx, e, err, start, time.Since(start)) {
			return
		}
		if c.Kind == vrrp.CheckProcess && err == nil {
			// Healthy: wait for the interval, or for one of the processes
			// to exit, whichever comes first (WaitExit also returns at
			// once when they are gone already).
			wctx, cancel := context.WithTimeout(ctx, max(interval-time.Since(start), 0))
			_, werr := r.checker.WaitExit(wctx, spec.Process)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if werr == nil || errors.Is(werr, context.DeadlineExceeded) {
				continue
			}
			r.log.Warn("cannot watch the check's processes; judging at the interval", "op", "check", "check", c.Name, "err", werr)
		}
		t := time.NewTimer(max(interval-time.Since(start), 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// mayRestart reports whether a failing judgement at now may restart e's
// unit: always unless the check is failing already, then every
// restartRetry; it records the restart.
func (r *Runner) mayRestart(e *entry, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.state == api.CheckFailing && now.Sub(e.lastRestart) < r.restartRetry {
		return false
	}
	e.lastRestart = now
	return true
}

// judged applies one judgement (err nil: healthy) to e: counts, state,
// track file, metrics. It returns false when ctx has ended (the judgement
// is then dropped: the check was stopped or replaced).
func (r *Runner) judged(ctx context.Context, e *entry, err error, at time.Time, took time.Duration) bool {
	r.mu.Lock()
	if ctx.Err() != nil {
		r.mu.Unlock()
		return false
	}
	name := e.spec.Name
	r.metrics.observe(name, took)
	e.lastRun = at
	if err == nil {
		e.oks, e.fails, e.reason = e.oks+1, 0, ""
	} else {
		e.oks, e.fails, e.reason = 0, e.fails+1, check.Reason(err)
	}
	prev := e.state
	switch {
	case err == nil && e.state != api.CheckHealthy && e.oks >= max(e.spec.Rise, 1):
		e.state = api.CheckHealthy
	case err != nil && e.state != api.CheckFailing && e.fails >= max(e.spec.Fall, 1):
		e.state = api.CheckFailing
	}
	changed := e.state != prev
	if changed {
		e.since = at
		r.metrics.transition(name, e.state)
	}
	// The file is compared on every judgement, so a failed write is
	// retried at the next one. Until a first verdict the file stays as
	// Update found or created it: "1" for a new check, or what an agent
	// that crashed left (rewriting that "0" before the check has risen
	// would make a healthy master resign over an agent restart).
	want := e.written
	switch e.state {
	case api.CheckHealthy:
		want = Healthy
	case api.CheckFailing:
		want = Failing
	}
	if e.written != want {
		if werr := fsutil.WriteAtomic(render.TrackFile(r.dir, name), []byte(want), FileMode); werr != nil {
			r.log.Error("write track file", "op", "check", "check", name, "err", werr)
		} else {
			e.written = want
		}
	}
	st := e.statusLocked()
	r.mu.Unlock()
	if changed {
		if st.State == api.CheckFailing {
			r.log.Warn("check failing", "op", "check", "check", name, "state", st.State, "reason", st.Reason)
		} else {
			r.log.Info("check "+st.State, "op", "check", "check", name, "state", st.State, "from", prev)
		}
		if r.onChange != nil {
			r.onChange(st)
		}
	}
	return true
}

// toSpec is the check.Spec of a metadata check.
func toSpec(c vrrp.Check) check.Spec {
	return check.Spec{
		Kind: c.Kind, Process: c.Process, URL: c.URL, ExpectStatus: c.ExpectStatus,
		Address: c.Address, Command: c.Command, RestartUnit: c.RestartUnit,
		Timeout: c.EffectiveTimeout().Duration(),
	}
}
