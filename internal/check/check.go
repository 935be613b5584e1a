// Package check is the health-check runtime behind `vipctl check` (which
// the rendered keepalived vrrp_script scripts run) and the agent's own
// check runner: a process is running (by its /proc comm name), an HTTP GET
// answers with the expected status, a TCP connect succeeds, or a command
// exits 0. When a check fails and a systemd unit is named, the unit is
// restarted once and the check judged again, as the seed's check_httpd.sh
// does with nginx. WaitExit notices a process check's process exiting as
// it happens (pidfd), so that a runner need not wait for its next probe.
package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/internal/pidfd"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// DefaultTimeout bounds a check whose Spec.Timeout is zero; it is vrrp's
// default check interval, which keepalived also uses as the script timeout.
const DefaultTimeout = 2 * time.Second

// DefaultPollInterval is how often a check is judged again after a restart.
const DefaultPollInterval = 200 * time.Millisecond

var (
	// ErrUnhealthy is returned (wrapped, with the reason) when the service
	// is not healthy, including after a restart that did not help.
	ErrUnhealthy = errors.New("check: unhealthy")
	// ErrInvalid is returned (wrapped) when a Spec is incomplete or breaks
	// the rules of vrrp.ValidateCheck.
	ErrInvalid = errors.New("check: invalid check")
)

// Spec is one check to run.
type Spec struct {
	Kind vrrp.CheckKind
	// Process is the /proc/PID/comm name to look for (kind process).
	Process string
	// URL is fetched with GET (kind http); redirects are not followed.
	URL string
	// ExpectStatus is the status the URL must answer; zero means 200.
	ExpectStatus int
	// Address is host:port to connect to (kind tcp).
	Address string
	// Command is an absolute path and its arguments (kind exec).
	Command []string
	// RestartUnit is a systemd service restarted once when the check fails.
	RestartUnit string
	// Timeout bounds the whole run, restart included; zero means DefaultTimeout.
	Timeout time.Duration
}

// Validate checks s with the rules vrrp applies to a metadata check.
func (s Spec) Validate() error {
	if s.Timeout < 0 {
		return fmt.Errorf("%w: timeout %s is negative", ErrInvalid, s.Timeout)
	}
	c := vrrp.Check{
		Name: "check", Kind: s.Kind, Process: s.Process, URL: s.URL, ExpectStatus: s.ExpectStatus,
		Address: s.Address, Command: s.Command, RestartUnit: s.RestartUnit,
	}
	if err := vrrp.ValidateCheck("check", c); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// UnitRestarter restarts a systemd unit and returns when the restart job
// has finished (nil) or failed.
type UnitRestarter interface {
	RestartUnit(ctx context.Context, unit string) error
}

// Checker runs checks. The zero value is ready to use with the real /proc,
// systemd and network.
type Checker struct {
	// ProcRoot is the proc file system to scan; empty means "/proc".
	ProcRoot string
	// Restarter restarts units; nil means a Systemd restarter.
	Restarter UnitRestarter
	// Client makes HTTP requests; nil means a client without proxy,
	// keep-alive or redirects.
	Client *http.Client
	// PollInterval is the pause between judgements after a restart; zero
	// means DefaultPollInterval.
	PollInterval time.Duration
	// ExitPoll is how often WaitExit looks at the processes where pidfds
	// are not available; zero means DefaultExitPoll.
	ExitPoll time.Duration
	// Log receives the restart decisions; nil discards them.
	Log *slog.Logger

	// pidfdOpen opens a pidfd (nil: pidfd.Open); tests replace it to
	// take the polling path.
	pidfdOpen func(pid int) (*pidfd.FD, error)
	// watching, when set, is told how WaitExit watches and how many
	// processes, once it waits.
	watching func(how string, n int)
}

// Run runs s with a zero Checker.
func Run(ctx context.Context, s Spec) error {
	var c Checker
	return c.Run(ctx, s)
}

// Run judges s: nil when healthy, an error wrapping ErrUnhealthy when not,
// or one wrapping ErrInvalid for a bad Spec. With s.RestartUnit, a failing
// service is restarted once and judged again (Recover); s.Timeout bounds
// the whole run.
func (c *Checker) Run(ctx context.Context, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()

	err := c.probe(ctx, s)
	if err == nil {
		return nil
	}
	if s.RestartUnit == "" {
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	return c.recover(ctx, s, err)
}

// Probe judges s once, bounded by s.Timeout, without restarting anything:
// nil when healthy, an error wrapping ErrUnhealthy (Reason gives its text)
// when not, or one wrapping ErrInvalid for a bad Spec.
func (c *Checker) Probe(ctx context.Context, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	if err := c.probe(ctx, s); err != nil {
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	return nil
}

// Recover restarts s.RestartUnit once, after a judgement failed with cause,
// and judges s again every PollInterval (each probe bounded by s.Timeout)
// until it is healthy (nil) or ctx ends (an error wrapping ErrUnhealthy
// that names cause and the restart). The caller bounds the whole with ctx.
func (c *Checker) Recover(ctx context.Context, s Spec, cause error) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.RestartUnit == "" {
		return fmt.Errorf("%w: restart: no restart unit", ErrInvalid)
	}
	// The cause may come from Probe already wrapped in ErrUnhealthy.
	return c.recover(ctx, s, unwrapUnhealthy(cause))
}

func (c *Checker) recover(ctx context.Context, s Spec, cause error) error {
	log := c.logger()
	log.Warn("check failed, restarting unit", "op", "restart", "unit", s.RestartUnit, "err", cause)
	if rerr := c.restarter().RestartUnit(ctx, s.RestartUnit); rerr != nil {
		return fmt.Errorf("%w: %w; restart of %s failed: %w", ErrUnhealthy, cause, s.RestartUnit, rerr)
	}
	poll := c.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	err := cause
	for {
		pctx, cancel := context.WithTimeout(ctx, s.timeout())
		perr := c.probe(pctx, s)
		cancel()
		if perr == nil {
			log.Info("healthy after restart", "op", "restart", "unit", s.RestartUnit)
			return nil
		}
		if ctx.Err() == nil {
			err = perr // a probe cut short by ctx says less than the last whole one
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w, still after restarting %s", ErrUnhealthy, err, s.RestartUnit)
		case <-tick.C:
		}
	}
}

// unwrapUnhealthy strips the ErrUnhealthy wrapping Probe adds, so that a
// cause is not named "unhealthy" twice.
func unwrapUnhealthy(err error) error {
	if w, ok := err.(interface{ Unwrap() []error }); ok {
		if errs := w.Unwrap(); len(errs) == 2 && errs[0] == ErrUnhealthy {
			return errs[1]
		}
	}
	return err
}

// Reason is the text of a judgement's error without the "check:
// unhealthy:" prefix, e.g. "GET http://127.0.0.1/: connection refused".
func Reason(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimPrefix(unwrapUnhealthy(err).Error(), ErrUnhealthy.Error()+": ")
}

func (s Spec) timeout() time.Duration {
	if s.Timeout == 0 {
		return DefaultTimeout
	}
	return s.Timeout
}

func (c *Checker) logger() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

func (c *Checker) restarter() UnitRestarter {
	if c.Restarter == nil {
		return &Systemd{Log: c.Log}
	}
	return c.Restarter
}

// probe judges s once.
func (c *Checker) probe(ctx context.Context, s Spec) error {
	switch s.Kind {
	case vrrp.CheckProcess:
		return c.probeProcess(s.Process)
	case vrrp.CheckHTTP:
		return c.probeHTTP(ctx, s)
	case vrrp.CheckTCP:
		return probeTCP(ctx, s.Address)
	case vrrp.CheckExec:
		return probeExec(ctx, s.Command)
	}
	return fmt.Errorf("%w: kind %q", ErrInvalid, s.Kind)
}

// probeProcess looks for a live process whose comm is exactly name, as
// `ps -C name` does; zombies do not count.
func (c *Checker) probeProcess(name string) error {
	procs, err := c.processes(name)
	if err != nil {
		return err
	}
	if len(procs) == 0 {
		return fmt.Errorf("process %s is not running", name)
	}
	return nil
}

// proc is one live process found by its comm.
type proc struct {
	pid int
	// start is /proc/PID/stat's starttime, which tells a reused pid apart.
	start string
}

// processes lists the live (not zombie) processes whose comm is exactly
// name. It reads one file per process, /proc/PID/stat, which holds the
// comm (in parentheses), the state and the start time.
func (c *Checker) processes(name string) ([]proc, error) {
	root := c.procRoot()
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("process %s: scan %s: %w", name, root, err)
	}
	var out []proc
	buf := make([]byte, 1024)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStatInto(filepath.Join(root, e.Name(), "stat"), buf)
		if !ok || st.comm != name {
			continue // gone meanwhile, or another process
		}
		if st.state != 'Z' && st.state != 'X' {
			out = append(out, proc{pid: pid, start: st.start})
		}
	}
	return out, nil
}

func (c *Checker) procRoot() string {
	if c.ProcRoot == "" {
		return "/proc"
	}
	return c.ProcRoot
}

// zombie reports whether /proc/PID/stat says the process is a zombie or
// dead.
func zombie(statPath string) bool {
	st, _, ok := readStat(statPath)
	return ok && (st == 'Z' || st == 'X')
}

// readStat reads the state and the start time of /proc/PID/stat; ok is
// false when the file cannot be read or parsed.
func readStat(statPath string) (state byte, start string, ok bool) {
	st, ok := readStatInto(statPath, make([]byte, 1024))
	return st.state, st.start, ok
}

// stat is what the checks use of /proc/PID/stat.
type stat struct {
	comm  string
	state byte
	start string
}

// readStatInto reads /proc/PID/stat using buf. comm is field 2, between
// the first '(' and the last ')' (comm may itself hold parentheses); the
// fields after it are state (field 3) and, 19 further, starttime (22).
func readStatInto(statPath string, buf []byte) (stat, bool) {
	f, err := os.Open(statPath)
	if err != nil {
		return stat{}, false
	}
	n, err := io.ReadFull(f, buf)
	f.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return stat{}, false
	}
	b := buf[:n]
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i || j+2 >= len(b) {
		return stat{}, false
	}
	st := stat{comm: string(b[i+1 : j]), state: b[j+2]}
	if fields := bytes.Fields(b[j+1:]); len(fields) > 19 {
		st.start = string(fields[19])
	}
	return st, true
}

// maxBody bounds what is read of an HTTP answer.
const maxBody = 64 << 10

func (c *Checker) probeHTTP(ctx context.Context, s Spec) error {
	want := s.ExpectStatus
	if want == 0 {
		want = http.StatusOK
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", s.URL, err)
	}
	req.Header.Set("User-Agent", "vipkeeper-check")
	client := c.Client
	if client == nil {
		client = defaultClient()
	}
	resp, err := client.Do(req)
	if err != nil {
		return failure("GET "+s.URL, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("GET %s answered %d, want %d", s.URL, resp.StatusCode, want)
	}
	return nil
}

// defaultClient asks the service itself: no proxy from the environment, no
// pooled connections, and the first answer is judged (no redirects).
func defaultClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DisableKeepAlives = true
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func probeTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return failure("connect "+addr, err)
	}
	return conn.Close()
}

// failure is op's error err, its text shortened to the cause a person
// needs ("GET http://127.0.0.1/: connection refused" rather than the
// whole chain of url, net and syscall errors); err stays wrapped.
func failure(op string, err error) error {
	return &shortError{msg: op + ": " + shortCause(err), err: err}
}

type shortError struct {
	msg string
	err error
}

func (e *shortError) Error() string { return e.msg }
func (e *shortError) Unwrap() error { return e.err }

func shortCause(err error) string {
	var se *os.SyscallError
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &se):
		return se.Err.Error()
	case errors.As(err, &dns):
		return dns.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// maxStderr bounds the command output kept for the error message.
const maxStderr = 4 << 10

func probeExec(ctx context.Context, argv []string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return failure("command "+argv[0], ctx.Err())
		}
		if last := lastLine(stderr.Bytes()); last != "" {
			return fmt.Errorf("command %s: %w: %s", argv[0], err, last)
		}
		return fmt.Errorf("command %s: %w", argv[0], err)
	}
	return nil
}

// limitedBuffer keeps the last maxStderr bytes written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.b = append(l.b, p...)
	if len(l.b) > maxStderr {
		l.b = l.b[len(l.b)-maxStderr:]
	}
	return len(p), nil
}

func (l *limitedBuffer) Bytes() []byte { return l.b }

// lastLine is the last non-empty line of b, printable and at most 200 bytes.
func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	s := strings.TrimSpace(lines[len(lines)-1])
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "")
	}
	return s
}
