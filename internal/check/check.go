// Package check is the health-check runtime behind `vipctl check`, which the
// rendered keepalived vrrp_script scripts run: a process is running (by its
// /proc comm name), an HTTP GET answers with the expected status, a TCP
// connect succeeds, or a command exits 0. When a check fails and a systemd
// unit is named, the unit is restarted once and the check judged again
// until the timeout, as the seed's check_httpd.sh does with nginx.
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
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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
	// Log receives the restart decisions; nil discards them.
	Log *slog.Logger
}

// Run runs s with a zero Checker.
func Run(ctx context.Context, s Spec) error {
	var c Checker
	return c.Run(ctx, s)
}

// Run judges s: nil when healthy, an error wrapping ErrUnhealthy when not,
// or one wrapping ErrInvalid for a bad Spec.
func (c *Checker) Run(ctx context.Context, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	err := c.probe(ctx, s)
	if err == nil {
		return nil
	}
	if s.RestartUnit == "" {
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	log := c.logger()
	log.Warn("check failed, restarting unit", "op", "restart", "unit", s.RestartUnit, "err", err)
	if rerr := c.restarter().RestartUnit(ctx, s.RestartUnit); rerr != nil {
		return fmt.Errorf("%w: %w; restart of %s failed: %w", ErrUnhealthy, err, s.RestartUnit, rerr)
	}
	poll := c.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if err = c.probe(ctx, s); err == nil {
			log.Info("healthy after restart", "op", "restart", "unit", s.RestartUnit)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w, still after restarting %s", ErrUnhealthy, err, s.RestartUnit)
		case <-tick.C:
		}
	}
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
	root := c.ProcRoot
	if root == "" {
		root = "/proc"
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("process %s: scan %s: %w", name, root, err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(root, e.Name(), "comm"))
		if err != nil || strings.TrimSuffix(string(comm), "\n") != name {
			continue // gone meanwhile, or another process
		}
		if !zombie(filepath.Join(root, e.Name(), "stat")) {
			return nil
		}
	}
	return fmt.Errorf("process %s is not running", name)
}

// zombie reports whether /proc/PID/stat says the process is a zombie or
// dead. The state follows the last ')' (comm may itself hold parentheses).
func zombie(statPath string) bool {
	stat, err := os.ReadFile(statPath)
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	st := stat[i+2]
	return st == 'Z' || st == 'X'
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
		return fmt.Errorf("http %s: %w", s.URL, err)
	}
	req.Header.Set("User-Agent", "vipkeeper-check")
	client := c.Client
	if client == nil {
		client = defaultClient()
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http %s: %w", s.URL, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("http %s answered %d, want %d", s.URL, resp.StatusCode, want)
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
		return fmt.Errorf("tcp %s: %w", addr, err)
	}
	return conn.Close()
}

// maxStderr bounds the command output kept for the error message.
const maxStderr = 4 << 10

func probeExec(ctx context.Context, argv []string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
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
