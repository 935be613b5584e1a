// Package keepalived drives the local keepalived daemon for
// vipkeeper-agent: whether it runs and how to reload it, through its pid
// file and SIGHUP (PIDFileKeepalived) or systemd over D-Bus
// (SystemdKeepalived), the exit of its main process as it happens
// (Watcher: a pidfd on the pid those name), and `keepalived --config-test`
// of a rendered configuration (ConfigTester). Which one the agent uses is the agent's
// choice (its keepalived.reload setting).
package keepalived

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// ErrNotRunning is returned (wrapped) by Keepalived.Reload when keepalived
// is not running; there is nothing to reload, it reads the files when it
// starts.
var ErrNotRunning = errors.New("keepalived: keepalived is not running")

// ErrConfigTest is returned (wrapped) when `keepalived --config-test`
// refuses a rendered configuration.
var ErrConfigTest = errors.New("keepalived: keepalived --config-test failed")

// Keepalived is the local keepalived daemon as the agent drives it.
// Implementations are safe for concurrent use.
type Keepalived interface {
	// Running reports whether keepalived runs.
	Running(ctx context.Context) (bool, error)
	// Reload makes a running keepalived re-read its configuration;
	// ErrNotRunning when it does not run.
	Reload(ctx context.Context) error
}

// Validator checks a keepalived.conf before it is installed.
type Validator interface {
	Validate(ctx context.Context, configPath string) error
}

// PIDFileKeepalived finds keepalived by its pid file and reloads it with SIGHUP.
type PIDFileKeepalived struct {
	PIDFile string
}

// pid returns keepalived's pid, or 0 when it does not run.
func (k *PIDFileKeepalived) pid() (int, error) {
	data, err := os.ReadFile(k.PIDFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("keepalived: read keepalived pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("keepalived: keepalived pid file %s: %q is not a pid", k.PIDFile, strings.TrimSpace(string(data)))
	}
	if !isKeepalived(pid) {
		return 0, nil // stale pid file, recycled pid or a zombie
	}
	return pid, nil
}

// isKeepalived reports whether pid is a live keepalived process: it
// exists, and where /proc tells, its name is keepalived (not a recycled
// pid) and it is not a zombie (exited, its parent has not reaped it yet).
// Name and state come from one read of /proc/PID/stat, and an entry that
// vanishes between kill(2) and that read is a process reaped meanwhile,
// not one /proc says nothing about.
func isKeepalived(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		// ENOENT, or ESRCH from a task torn down during the read: gone.
		// Any other failure (no /proc) leaves kill(2)'s answer.
		return !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ESRCH)
	}
	comm, state, ok := parseStat(stat)
	return !ok || (comm == "keepalived" && state != 'Z' && state != 'X')
}

// parseStat returns the command name and the state letter of a
// /proc/PID/stat line ("PID (COMM) S ..."); the name may hold spaces and
// parentheses, so it ends at the last ')'.
func parseStat(stat []byte) (comm string, state byte, ok bool) {
	open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if open < 0 || end < open || end+2 >= len(stat) {
		return "", 0, false
	}
	return string(stat[open+1 : end]), stat[end+2], true
}

// MainPID returns the pid the pid file names when it is a live keepalived
// process, else 0.
func (k *PIDFileKeepalived) MainPID(context.Context) (int, error) {
	return k.pid()
}

// Running reports whether the pid file names a live keepalived process.
func (k *PIDFileKeepalived) Running(context.Context) (bool, error) {
	pid, err := k.pid()
	return pid != 0, err
}

// Reload sends SIGHUP to keepalived's main process.
func (k *PIDFileKeepalived) Reload(context.Context) error {
	pid, err := k.pid()
	if err != nil {
		return err
	}
	if pid == 0 {
		return fmt.Errorf("%w (pid file %s)", ErrNotRunning, k.PIDFile)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("keepalived: reload keepalived (SIGHUP %d): %w", pid, err)
	}
	return nil
}

// systemdConn is the part of go-systemd's D-Bus connection the agent uses.
type systemdConn interface {
	GetUnitPropertyContext(ctx context.Context, unit, name string) (*sddbus.Property, error)
	GetServicePropertyContext(ctx context.Context, service, name string) (*sddbus.Property, error)
	ReloadUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	Close()
}

// SystemdKeepalived drives keepalived's systemd unit over D-Bus.
type SystemdKeepalived struct {
	Unit string
	// dial connects to systemd; replaced in tests.
	dial func(ctx context.Context) (systemdConn, error)

	mu   sync.Mutex
	conn systemdConn // guarded by mu; nil until first use or after an error
}

// NewSystemdKeepalived drives unit through the system bus.
func NewSystemdKeepalived(unit string) *SystemdKeepalived {
	return &SystemdKeepalived{Unit: unit, dial: func(ctx context.Context) (systemdConn, error) {
		return sddbus.NewWithContext(ctx)
	}}
}

func (k *SystemdKeepalived) getConn(ctx context.Context) (systemdConn, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn != nil {
		return k.conn, nil
	}
	// go-systemd ties the connection's life to the dial context: the
	// connection is kept across calls (and closed by Close), so it must not
	// end with this call's context, only inherit its values.
	c, err := k.dial(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("keepalived: connect to systemd: %w", err)
	}
	k.conn = c
	return c, nil
}

func (k *SystemdKeepalived) dropConn(c systemdConn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn == c {
		k.conn = nil
		c.Close()
	}
}

// Close releases the D-Bus connection.
func (k *SystemdKeepalived) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn != nil {
		k.conn.Close()
		k.conn = nil
	}
}

func (k *SystemdKeepalived) property(ctx context.Context, name string) (string, error) {
	c, err := k.getConn(ctx)
	if err != nil {
		return "", err
	}
	p, err := c.GetUnitPropertyContext(ctx, k.Unit, name)
	if err != nil {
		k.dropConn(c)
		return "", fmt.Errorf("keepalived: systemd %s %s: %w", k.Unit, name, err)
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("keepalived: systemd %s %s is %s, not a string", k.Unit, name, p.Value.Signature())
	}
	return s, nil
}

// Loaded reports whether systemd knows the unit.
func (k *SystemdKeepalived) Loaded(ctx context.Context) (bool, error) {
	s, err := k.property(ctx, "LoadState")
	return s == "loaded", err
}

// Running reports whether the unit is active (or reloading).
func (k *SystemdKeepalived) Running(ctx context.Context) (bool, error) {
	s, err := k.property(ctx, "ActiveState")
	if err != nil {
		return false, err
	}
	return s == "active" || s == "reloading", nil
}

// MainPID returns the pid of the unit's main process (systemd's MainPID),
// 0 when the unit has none or it is not a live keepalived (the process
// has exited and systemd has not noticed yet, or the pid was recycled).
func (k *SystemdKeepalived) MainPID(ctx context.Context) (int, error) {
	c, err := k.getConn(ctx)
	if err != nil {
		return 0, err
	}
	p, err := c.GetServicePropertyContext(ctx, k.Unit, "MainPID")
	if err != nil {
		k.dropConn(c)
		return 0, fmt.Errorf("keepalived: systemd %s MainPID: %w", k.Unit, err)
	}
	v, ok := p.Value.Value().(uint32)
	if !ok {
		return 0, fmt.Errorf("keepalived: systemd %s MainPID is %s, not a uint32", k.Unit, p.Value.Signature())
	}
	if v <= 1 || !isKeepalived(int(v)) {
		return 0, nil
	}
	return int(v), nil
}

// Reload runs systemd's ReloadUnit and waits for the job.
func (k *SystemdKeepalived) Reload(ctx context.Context) error {
	running, err := k.Running(ctx)
	if err != nil {
		return err
	}
	if !running {
		return fmt.Errorf("%w (unit %s inactive)", ErrNotRunning, k.Unit)
	}
	c, err := k.getConn(ctx)
	if err != nil {
		return err
	}
	ch := make(chan string, 1)
	if _, err := c.ReloadUnitContext(ctx, k.Unit, "replace", ch); err != nil {
		k.dropConn(c)
		return fmt.Errorf("keepalived: systemd reload %s: %w", k.Unit, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("keepalived: systemd reload %s: job %s", k.Unit, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("keepalived: systemd reload %s: %w", k.Unit, ctx.Err())
	}
}

// ConfigTester runs `keepalived --config-test -f FILE`.
type ConfigTester struct {
	Binary  string
	Timeout time.Duration
}

// Validate fails with ErrConfigTest and keepalived's messages when the
// configuration does not pass.
func (v *ConfigTester) Validate(ctx context.Context, configPath string) error {
	to := v.Timeout
	if to <= 0 {
		to = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	cmd := exec.CommandContext(ctx, v.Binary, "--config-test", "-f", configPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("keepalived: run %s --config-test: %w", v.Binary, err)
	}
	msg := strings.Join(strings.Fields(strings.ReplaceAll(out.String(), "\n", " | ")), " ")
	if len(msg) > 600 {
		msg = msg[:600] + "..."
	}
	return fmt.Errorf("%w (exit %d): %s", ErrConfigTest, ee.ExitCode(), msg)
}
