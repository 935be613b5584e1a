package sdlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Timeouts of a container's life. A boot of the lab's minimal Debian takes
// a few seconds; the margins are for a CI machine whose two cores are busy
// with other tests.
const (
	// DefaultBootTimeout bounds Boot: nspawn start to systemd "running".
	DefaultBootTimeout = 120 * time.Second
	// poweroffTimeout is how long Close waits after `systemctl poweroff`
	// before it kills the container's init by PID.
	poweroffTimeout = 45 * time.Second
	// killWait is how long Close waits for nspawn after the kill.
	killWait = 15 * time.Second
)

// ErrExited is returned (wrapped) when the container's nspawn has exited.
var ErrExited = errors.New("sdlab: container exited")

// ErrDegraded is returned (wrapped) by Boot when the container booted but
// systemd reports it degraded (a unit failed): the error names the failed
// units, and the container is returned, running, to be looked into.
var ErrDegraded = errors.New("sdlab: container degraded")

// BootOptions are the optional settings of a container's boot.
type BootOptions struct {
	// UserData, when not nil, is the instance's cloud-init user-data (a
	// #cloud-config document): the container boots with a NoCloud seed
	// holding it (SeedDir) and the lab's cloud-init configuration
	// (LabCloudConfig), and cloud-init applies it during the boot, which
	// Boot waits for. Without it, cloud-init is disabled in the container
	// (CloudInitDisabled).
	UserData []byte
}

// machineName is a container's name: its hostname and nspawn machine name.
var machineName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)

// Container is a booted systemd container: systemd-nspawn --boot on an
// overlay of the lab's root file system, inside one of the lab's
// namespaces. Its methods are safe for concurrent use.
type Container struct {
	// immutable after Boot returns
	Name    string // hostname; nspawn knows it as PREFIX-Name
	NS      string // full name of its network namespace
	Console string // path of the console log (everything systemd printed)
	// BootTime is from starting nspawn to `systemctl is-system-running`
	// answering "running".
	BootTime time.Duration

	dir     string        // layers: upper, work, root
	root    string        // the overlay, nspawn's -D
	done    chan struct{} // closed when nspawn has exited
	readers sync.WaitGroup
	log     *slog.Logger

	mu       sync.Mutex    // guards the fields below
	nspawn   *os.Process   // nil until started
	notes    *net.UnixConn // nspawn's $NOTIFY_SOCKET, nil until started
	leader   int           // host pid of the container's PID 1
	ready    bool          // nspawn said READY=1: systemd finished booting
	status   string        // nspawn's last STATUS=
	waitErr  error         // nspawn's exit, once done is closed
	changed  chan struct{} // closed and replaced on every notify message
	mounted  bool          // the overlay is mounted
	cgroups  []string      // nspawn's own cgroups (see makeCgroups)
	closed   bool
	closeErr error
}

// Boot starts a container named name in the lab's namespace ns (a short
// name given to AddNS) and waits until systemd reports the system
// running: the boot transaction is over, cloud-init's stages included. A
// boot that ends "degraded" fails with ErrDegraded and names the failed
// units. The container is powered off by Close or Lab.Close.
func (l *Lab) Boot(ctx context.Context, name, ns string, opts BootOptions) (*Container, error) {
	if !machineName.MatchString(name) {
		return nil, fmt.Errorf("sdlab: container name %q: want a-z 0-9 -, at most 31, starting with a letter", name)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("sdlab: lab closed")
	}
	known := false
	for _, n := range l.namespaces {
		known = known || n == l.NS(ns)
	}
	for _, c := range l.containers {
		if c.Name == name {
			l.mu.Unlock()
			return nil, fmt.Errorf("sdlab: container %s exists", name)
		}
	}
	l.mu.Unlock()
	if !known {
		return nil, fmt.Errorf("sdlab: namespace %q is not one of this lab's", ns)
	}

	start := time.Now()
	c := &Container{
		Name:    name,
		NS:      l.NS(ns),
		dir:     filepath.Join(l.Dir, "containers", name),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		log:     l.log.With("container", name),
	}
	c.root = filepath.Join(c.dir, "root")
	c.Console = filepath.Join(c.dir, "console.log")
	l.mu.Lock()
	l.containers = append(l.containers, c)
	l.booted = append(l.booted, c)
	l.mu.Unlock()
	if err := c.start(l.rootfs, l.Prefix, opts); err != nil {
		return c, err
	}
	bctx, cancel := context.WithTimeout(ctx, DefaultBootTimeout)
	defer cancel()
	if err := c.waitBooted(bctx); err != nil {
		return c, fmt.Errorf("%w\n%s", err, c.consoleTail(30))
	}
	c.BootTime = time.Since(start)
	c.log.Info("booted", "op", "boot", "took", c.BootTime.Round(time.Millisecond))
	return c, nil
}

// start mounts the overlay, writes the seed and starts nspawn.
func (c *Container) start(rootfs, prefix string, opts BootOptions) error {
	seed, err := seedFiles(prefix+"-"+c.Name, c.Name, opts.UserData)
	if err != nil {
		return err
	}
	upper, work := filepath.Join(c.dir, "upper"), filepath.Join(c.dir, "work")
	for _, d := range []string{upper, work, c.root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("sdlab: %w", err)
		}
	}
	mountOpts := "lowerdir=" + rootfs + ",upperdir=" + upper + ",workdir=" + work
	if strings.ContainsAny(c.dir, ",:\\") {
		return fmt.Errorf("sdlab: work directory %q cannot hold overlay layers (',', ':' or '\\')", c.dir)
	}
	if err := unix.Mount("overlay", c.root, "overlay", 0, mountOpts); err == nil {
		c.mu.Lock()
		c.mounted = true
		c.mu.Unlock()
	} else {
		// Where the work directory cannot be an overlay's upper layer
		// (it is on an overlayfs itself, as in some CI containers), a
		// copy of the tree does: slower by a few seconds, a reflink
		// where the file system offers it.
		c.log.Info("overlay refused, copying the root file system", "op", "boot", "err", err)
		out, cerr := exec.Command("cp", "-a", "--reflink=auto", "--", rootfs+"/.", c.root+"/").CombinedOutput()
		if cerr != nil {
			return fmt.Errorf("sdlab: mount overlay on %s: %w; copying instead: %w: %s", c.root, err, cerr, bytes.TrimSpace(out))
		}
	}
	if err := writeSeed(c.root, seed); err != nil {
		return err
	}
	if opts.UserData != nil {
		c.log.Info("cloud-init seed written", "op", "boot", "dir", SeedDir, "bytes", len(opts.UserData))
	}

	// nspawn reports the container's PID 1 (X_NSPAWN_LEADER_PID) and, with
	// --notify-ready, READY=1 once systemd inside finished booting, on
	// $NOTIFY_SOCKET: an abstract socket of the host's namespace, where
	// nspawn itself stays.
	addr := &net.UnixAddr{Name: "@vipkeeper-sdlab/" + prefix + "/" + c.Name, Net: "unixgram"}
	notes, err := net.ListenUnixgram("unixgram", addr)
	if err != nil {
		return fmt.Errorf("sdlab: notify socket: %w", err)
	}
	// An abstract socket has no permissions: the kernel's credentials of
	// each sender tell nspawn's messages from anyone else's.
	if err := setPassCred(notes); err != nil {
		notes.Close()
		return err
	}
	c.mu.Lock()
	c.notes = notes
	c.mu.Unlock()
	console, err := os.OpenFile(c.Console, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		notes.Close()
		return fmt.Errorf("sdlab: %w", err)
	}
	defer console.Close() // nspawn has its own copy
	args := []string{
		"--quiet",
		"--directory=" + c.root,
		"--boot",
		// The machine name is unique on this machine (nspawn keeps
		// per-machine state under /run/systemd/nspawn); the hostname is
		// the container's name.
		"--machine=" + prefix + "-" + c.Name, "--hostname=" + c.Name,
		// No machined and no systemd as PID 1 on the machine itself (CI):
		// stay in the caller's cgroup, register nowhere.
		"--register=no", "--keep-unit",
		// The namespace made with `ip netns add`. (--private-network
		// would need the host's system bus.)
		"--network-namespace-path=/run/netns/" + c.NS,
		// keepalived adds the VIP, hostsync programs nftables and routes:
		// nspawn grants CAP_NET_ADMIN only with --private-network. The
		// namespace is the container's own.
		"--capability=CAP_NET_ADMIN",
		"--link-journal=no", "--resolv-conf=off", "--timezone=off",
		"--console=read-only",
		"--notify-ready=yes",
		// Arguments of the container's systemd.
		"systemd.log_color=0",
	}
	cgroups, err := makeCgroups(prefix + "-" + c.Name)
	if err != nil {
		notes.Close()
		return err
	}
	c.mu.Lock()
	c.cgroups = cgroups
	c.mu.Unlock()
	// sh moves itself into the container's cgroups, then becomes nspawn
	// (same pid: the notify socket's sender check holds).
	const enter = `n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ >"$1/cgroup.procs" || exit 125; shift; n=$((n - 1)); done
exec "$@"`
	shArgs := append([]string{"-c", enter, "sh", strconv.Itoa(len(cgroups))}, cgroups...)
	shArgs = append(append(shArgs, "systemd-nspawn"), args...)
	cmd := exec.Command("sh", shArgs...)
	cmd.Env = append(withoutEnv(os.Environ(), "NOTIFY_SOCKET"), "NOTIFY_SOCKET="+addr.Name)
	cmd.Stdout, cmd.Stderr = console, console
	// Its own process group (a Ctrl-C meant for the test does not reach
	// it), and SIGTERM when the test process dies, which nspawn turns
	// into an orderly poweroff of the container.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		notes.Close()
		return fmt.Errorf("sdlab: start systemd-nspawn: %w", err)
	}
	c.mu.Lock()
	c.nspawn = cmd.Process
	c.mu.Unlock()
	c.log.Info("starting", "op", "boot", "pid", cmd.Process.Pid, "netns", c.NS, "dir", c.dir)
	c.readers.Add(2)
	go func() {
		defer c.readers.Done()
		err := cmd.Wait()
		c.mu.Lock()
		c.waitErr = err
		c.mu.Unlock()
		close(c.done)
	}()
	go func() {
		defer c.readers.Done()
		c.readNotes(notes)
	}()
	return nil
}

// readNotes records what nspawn says on the notify socket until Close
// closes it.
func (c *Container) readNotes(notes *net.UnixConn) {
	buf := make([]byte, maxNotify+1)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		n, oobn, _, _, err := notes.ReadMsgUnix(buf, oob)
		if err != nil {
			return // closed by Close
		}
		if pid := senderPID(oob[:oobn]); c.process() == nil || pid != c.process().Pid {
			c.log.Info("ignoring a notify message from another process", "op", "notify", "pid", pid)
			continue
		}
		m, err := ParseNotify(buf[:n])
		if err != nil {
			c.log.Info("ignoring a notify message", "op", "notify", "err", err)
			continue
		}
		c.mu.Lock()
		if v, ok := m["X_NSPAWN_LEADER_PID"]; ok {
			if pid, err := strconv.Atoi(v); err == nil && pid > 1 {
				c.leader = pid
			}
		}
		if m["READY"] == "1" {
			c.ready = true
		}
		if s, ok := m["STATUS"]; ok {
			c.status = s
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
}

// setPassCred makes the kernel attach each sender's credentials.
func setPassCred(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("sdlab: notify socket: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		return fmt.Errorf("sdlab: notify socket: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("sdlab: notify socket SO_PASSCRED: %w", serr)
	}
	return nil
}

// senderPID is the pid in a datagram's SCM_CREDENTIALS, 0 without one.
func senderPID(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if cred, err := unix.ParseUnixCredentials(&m); err == nil {
			return int(cred.Pid)
		}
	}
	return 0
}

// waitBooted waits for READY=1 from nspawn, then for systemd's verdict.
func (c *Container) waitBooted(ctx context.Context) error {
	for {
		c.mu.Lock()
		ready, leader, changed := c.ready, c.leader, c.changed
		c.mu.Unlock()
		if ready && leader > 0 {
			break
		}
		select {
		case <-changed:
		case <-c.done:
			return fmt.Errorf("%w while booting: %v", ErrExited, c.exitErr())
		case <-ctx.Done():
			c.mu.Lock()
			status := c.status
			c.mu.Unlock()
			return fmt.Errorf("sdlab: %s did not finish booting (nspawn: %q): %w", c.Name, status, ctx.Err())
		}
	}
	// READY=1 comes when the boot transaction is done; is-system-running
	// --wait then answers at once: running, or degraded with failed units.
	out, _ := c.Output(ctx, "systemctl", "is-system-running", "--wait")
	state := strings.TrimSpace(out)
	if state == "running" {
		return nil
	}
	failed, _ := c.Output(ctx, "systemctl", "--failed", "--no-legend", "--plain")
	if state == "degraded" {
		return fmt.Errorf("%w: %s booted degraded, not running; failed units:\n%s", ErrDegraded, c.Name, failed)
	}
	return fmt.Errorf("sdlab: %s booted %q, not running; failed units:\n%s", c.Name, state, failed)
}

func (c *Container) exitErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waitErr
}

// Leader is the host pid of the container's PID 1 (systemd).
func (c *Container) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// Exited reports whether the container's nspawn has ended.
func (c *Container) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// process is nspawn's process, nil before it started.
func (c *Container) process() *os.Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nspawn
}

// pids are the processes of the container the lab started or learnt of.
func (c *Container) pids() []int {
	proc := c.process()
	if proc == nil || c.Exited() {
		// nspawn ends after the container's PID 1.
		return nil
	}
	p := []int{proc.Pid}
	if l := c.Leader(); l > 0 {
		p = append(p, l)
	}
	return p
}

// processAlive reports whether pid runs (and is not a zombie).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// Poweroff asks systemd in the container to power off and waits for the
// container to end; after timeout it kills the container's PID 1 (which
// ends every process in the container's PID namespace) and then nspawn,
// by PID. It returns how the container ended.
func (c *Container) Poweroff(ctx context.Context, timeout time.Duration) error {
	proc := c.process()
	if proc == nil || c.Exited() {
		return nil
	}
	start := time.Now()
	if c.Leader() > 0 {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		// `systemctl poweroff` returns once the job is queued; its
		// connection may drop as systemd goes down: ignore its error and
		// judge by nspawn's exit.
		_, _ = c.Output(pctx, "systemctl", "poweroff", "--no-block")
		cancel()
	} else {
		// Still booting, PID 1 unknown: nspawn turns SIGTERM into an
		// orderly poweroff.
		_ = proc.Signal(syscall.SIGTERM)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
		c.log.Info("powered off", "op", "poweroff", "took", time.Since(start).Round(time.Millisecond))
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	var errs []error
	errs = append(errs, fmt.Errorf("sdlab: %s did not power off within %s; killing it", c.Name, timeout))
	if l := c.Leader(); l > 0 {
		_ = syscall.Kill(l, syscall.SIGKILL)
	}
	select {
	case <-c.done:
	case <-time.After(killWait):
		_ = proc.Kill()
		select {
		case <-c.done:
		case <-time.After(killWait):
			errs = append(errs, fmt.Errorf("sdlab: systemd-nspawn %d of %s does not end", proc.Pid, c.Name))
		}
	}
	return errors.Join(errs...)
}

// Close powers the container off (Poweroff), stops the notify reader,
// unmounts the overlay and removes its layers. Safe to call more than
// once; later calls return the first call's result.
func (c *Container) Close() error {
	c.mu.Lock()
	if c.closed {
		err := c.closeErr
		c.mu.Unlock()
		return err
	}
	c.closed = true
	c.mu.Unlock()

	var errs []error
	if err := c.Poweroff(context.Background(), poweroffTimeout); err != nil {
		errs = append(errs, err)
	}
	c.mu.Lock()
	notes := c.notes
	c.mu.Unlock()
	if notes != nil {
		notes.Close()
	}
	if c.process() != nil && !c.Exited() {
		// nspawn outlived even SIGKILL: its Wait goroutine cannot end.
		errs = append(errs, fmt.Errorf("sdlab: %s still running; leaving its overlay mounted", c.Name))
	} else {
		c.readers.Wait()
		c.mu.Lock()
		cgroups := c.cgroups
		c.mu.Unlock()
		if err := removeCgroups(cgroups); err != nil {
			errs = append(errs, err)
		}
		if err := c.unmountRoot(); err != nil {
			errs = append(errs, err)
		} else if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("sdlab: %w", err))
		}
	}
	err := errors.Join(errs...)
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	return err
}

// unmountRoot unmounts the overlay, retrying while it is busy (a process
// that was inside may take a moment to be reaped), then detaching it.
func (c *Container) unmountRoot() error {
	c.mu.Lock()
	mounted := c.mounted
	c.mu.Unlock()
	if !mounted {
		return nil
	}
	var err error
	for range 20 {
		err = unix.Unmount(c.root, 0)
		if err == nil || errors.Is(err, unix.EINVAL) { // EINVAL: not mounted
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) {
		if derr := unix.Unmount(c.root, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("sdlab: unmount %s: %w", c.root, err)
		}
	}
	c.mu.Lock()
	c.mounted = false
	c.mu.Unlock()
	return nil
}

// consoleTail is the end of the console log, for error messages.
func (c *Container) consoleTail(lines int) string {
	data, err := os.ReadFile(c.Console)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "console of " + c.Name + " (last lines):\n" + strings.Join(all, "\n")
}

func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// ExitError is returned by the Container's command methods when the
// command ran and failed.
type ExitError struct {
	Container string
	Argv      []string
	Code      int    // exit status, -1 for a signal
	Stderr    string // what it wrote on stderr (at most 4 KiB)
	Err       error  // the *exec.ExitError
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("sdlab: %s: %s exited %d: %s", e.Container, strings.Join(e.Argv, " "), e.Code, strings.TrimSpace(e.Stderr))
}

func (e *ExitError) Unwrap() error { return e.Err }

// containerEnv is the environment of commands run inside: nothing of the
// test's own, the way a root shell on the machine would have it.
var containerEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
	"SYSTEMD_PAGER=", "PAGER=cat", "SYSTEMD_COLORS=0",
	"DEBIAN_FRONTEND=noninteractive",
}

// Command prepares argv to run inside the container (every namespace of
// its PID 1, its root) with a clean root environment and stdin from
// /dev/null unless set. Use Output or Run unless the caller needs more.
func (c *Container) Command(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"--target", strconv.Itoa(c.Leader()), "--all", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = containerEnv
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs argv inside the container with stdin and returns its stdout;
// a failure is an *ExitError carrying its stderr.
func (c *Container) Run(ctx context.Context, stdin io.Reader, argv ...string) (string, error) {
	if c.Leader() == 0 {
		return "", fmt.Errorf("sdlab: %s has no PID 1 yet", c.Name)
	}
	if c.Exited() {
		return "", fmt.Errorf("%w: %s", ErrExited, c.Name)
	}
	cmd := c.Command(ctx, argv...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &limitedBuffer{b: &stderr, max: 4 << 10}
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return stdout.String(), &ExitError{Container: c.Name, Argv: argv, Code: ee.ExitCode(), Stderr: stderr.String(), Err: err}
		}
		return stdout.String(), fmt.Errorf("sdlab: %s: %s: %w", c.Name, strings.Join(argv, " "), err)
	}
	return stdout.String(), nil
}

// Output runs argv inside the container and returns its stdout.
func (c *Container) Output(ctx context.Context, argv ...string) (string, error) {
	return c.Run(ctx, nil, argv...)
}

// Shell runs script with sh -c inside the container; args are $1, $2...
func (c *Container) Shell(ctx context.Context, script string, args ...string) (string, error) {
	return c.Run(ctx, nil, append([]string{"sh", "-c", script, "sh"}, args...)...)
}

// WriteFile writes data to path inside the container atomically (a
// temporary file in the same directory, renamed), creating the
// directories, with the owner ("user:group") and mode given, as the
// container's own tools see them. The path is resolved inside the
// container, so its symlinks cannot lead out of it.
func (c *Container) WriteFile(ctx context.Context, path string, data []byte, owner string, mode os.FileMode) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("sdlab: %s: path %q is not absolute", c.Name, path)
	}
	const script = `set -e
dir=$(dirname -- "$1")
mkdir -p -- "$dir"
tmp=$(mktemp -- "$1.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat >"$tmp"
chown -- "$2" "$tmp"
chmod -- "$3" "$tmp"
sync -- "$tmp"
mv -f -- "$tmp" "$1"
trap - EXIT`
	_, err := c.Run(ctx, bytes.NewReader(data), "sh", "-c", script, "sh", path, owner, fmt.Sprintf("%04o", mode.Perm()))
	return err
}

// ReadFile returns the content of path inside the container.
func (c *Container) ReadFile(ctx context.Context, path string) ([]byte, error) {
	out, err := c.Output(ctx, "cat", "--", path)
	return []byte(out), err
}

// Exists reports whether path exists inside the container (a symlink
// counts, whatever it points to).
func (c *Container) Exists(ctx context.Context, path string) (bool, error) {
	_, err := c.Output(ctx, "sh", "-c", `[ -e "$1" ] || [ -L "$1" ]`, "sh", path)
	var ee *ExitError
	if errors.As(err, &ee) && ee.Code == 1 {
		return false, nil
	}
	return err == nil, err
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		if len(p) > room {
			l.b.Write(p[:room])
		} else {
			l.b.Write(p)
		}
	}
	return len(p), nil
}
