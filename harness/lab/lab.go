// Package lab builds vipkeeper's network-namespace lab on one machine: two
// hypervisor hosts whose bridges form one L2 segment, a guest namespace per
// group member running real keepalived and vipkeeper-agent, a gateway that
// does the EIP NAT and routes the VIP toward the owner's host, and a client
// outside. The end-to-end tests and `make demo` use the same code.
//
// Every namespace name carries a random prefix so that concurrent labs do
// not collide; Close removes every namespace and ends every process the lab
// started, by PID, also after a failure. Namespaces and links are made
// through harness/netns. Needs root, ip(8) and keepalived.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/netns"
)

// ErrNotPrivileged is returned by New when the lab cannot be built here.
var ErrNotPrivileged = errors.New("lab: needs root and the ip command (iproute2)")

// Lab is one instance of the namespace lab.
type Lab struct {
	// immutable after New
	Prefix string // prefix of every namespace name, e.g. "vk3fa2"
	Dir    string // work directory: configs, state, logs
	Bin    string // directory holding the built binaries
	out    io.Writer
	ownDir bool // Dir was made by New: Close removes it

	mu         sync.Mutex // guards the fields below
	namespaces []string
	procs      []*Proc
	closed     bool
}

// Proc is a process the lab started inside a namespace.
type Proc struct {
	Name string
	NS   string
	Cmd  *exec.Cmd
	Log  string // path of its combined output

	done chan struct{}
	err  error
}

// Wait returns when the process ended.
func (p *Proc) Wait() error { <-p.done; return p.err }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// PID is the process id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Signal sends sig to the process if it still runs.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	return p.Cmd.Process.Signal(sig)
}

// Stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// Options configure New.
type Options struct {
	// Bin is the directory with vipkeeper-agent, vipkeeper-hostsync and
	// vipctl. Required.
	Bin string
	// Dir is the work directory; empty means a new one under /run so that
	// keepalived's script security accepts the scripts' paths, removed by
	// Close (a failed test dumps the logs first).
	Dir string
	// Out receives progress lines; nil discards them.
	Out io.Writer
}

// Privileged reports whether this process can build a lab.
func Privileged() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: running as uid %d", ErrNotPrivileged, os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: %v", ErrNotPrivileged, err)
	}
	return nil
}

// New prepares an empty lab (no namespaces yet).
func New(opts Options) (*Lab, error) {
	if err := Privileged(); err != nil {
		return nil, err
	}
	if opts.Bin == "" {
		return nil, errors.New("lab: Options.Bin is required")
	}
	bin, err := filepath.Abs(opts.Bin)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	prefix := "vk" + hex.EncodeToString(suffix[:])
	dir, ownDir := opts.Dir, opts.Dir == ""
	if dir == "" {
		if err := os.MkdirAll("/run/vipkeeper-lab", 0o755); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		dir = filepath.Join("/run/vipkeeper-lab", prefix)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	return &Lab{Prefix: prefix, Dir: dir, Bin: bin, out: out, ownDir: ownDir}, nil
}

// Logf prints a progress line.
func (l *Lab) Logf(format string, args ...any) {
	fmt.Fprintf(l.out, format+"\n", args...)
}

// NS is the full name of the lab namespace with short name n.
func (l *Lab) NS(n string) string { return l.Prefix + "-" + n }

// AddNS creates namespace n with loopback up; Close deletes it.
func (l *Lab) AddNS(n string) error {
	name := l.NS(n)
	if _, err := netns.IP("netns", "add", name); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, name)
	l.mu.Unlock()
	return l.IP(n, "link", "set", "lo", "up")
}

// IP runs `ip ARGS` inside namespace n.
func (l *Lab) IP(n string, args ...string) error {
	if _, err := netns.IPIn(l.NS(n), args...); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// Exec runs a command inside namespace n and returns its combined output.
func (l *Lab) Exec(ctx context.Context, n string, name string, args ...string) ([]byte, error) {
	out, err := netns.Exec(ctx, l.NS(n), name, args...)
	if err != nil {
		return out, fmt.Errorf("lab: %w", err)
	}
	return out, nil
}

// Veth creates a veth pair with end a (named an) in namespace na and end b
// (named bn) in namespace nb, both up.
func (l *Lab) Veth(na, an, nb, bn string) error {
	if err := netns.Veth(l.NS(na), an, l.NS(nb), bn); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// Sysctl writes a sysctl inside namespace n.
func (l *Lab) Sysctl(n, key, value string) error {
	if err := netns.Sysctl(l.NS(n), key, value); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// InNS runs fn on an OS thread switched into namespace n (netns.Run).
// Sockets fn creates stay in namespace n and can be used from any
// goroutine afterwards.
func (l *Lab) InNS(n string, fn func() error) error { return netns.Run(l.NS(n), fn) }

// Listen opens a listener inside namespace n.
func (l *Lab) Listen(n, network, addr string) (net.Listener, error) {
	return netns.Listen(l.NS(n), network, addr)
}

// HTTPClient is an HTTP client whose connections originate in namespace
// n, a new connection for every request (netns.HTTPClient).
func (l *Lab) HTTPClient(n string, timeout time.Duration) *http.Client {
	return netns.HTTPClient(l.NS(n), timeout)
}

// Start runs a long-lived process inside namespace n; its output goes to
// Dir/logs/NAME.log. The process is ended by Close.
func (l *Lab) Start(n, name string, env []string, argv ...string) (*Proc, error) {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, errors.New("lab: closed")
	}
	logDir := filepath.Join(l.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	cmd := netns.Command(l.NS(n), argv...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Its own process group, so Ctrl-C on the demo reaches the demo first
	// and the demo ends its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: start %s: %w", name, err)
	}
	p := &Proc{Name: name, NS: n, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// Close ends every process the lab started (by PID) and deletes every
// namespace it made. It is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	l.closed = true
	procs := l.procs
	nss := l.namespaces
	l.procs, l.namespaces = nil, nil
	l.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(3 * time.Second)
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if err := netns.Delete(nss[i]); err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	if l.ownDir {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists namespaces and processes of this lab still present
// (for tests asserting that Close cleaned up).
func (l *Lab) Leftovers() []string {
	var left []string
	for _, name := range netns.List(l.Prefix + "-") {
		left = append(left, "netns "+name)
	}
	return left
}
