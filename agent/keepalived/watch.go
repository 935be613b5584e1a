package keepalived

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipkeeper/vipkeeper/internal/pidfd"
	"github.com/vipkeeper/vipkeeper/internal/wait"
)

// ErrNoPidfd is returned (wrapped) by Watcher.Wait where keepalived's
// process cannot be watched through a pidfd: pidfd.Open failed other than
// for a process gone, most often with pidfd.ErrUnsupported (pidfd_open(2)
// missing before Linux 5.3 or refused by a seccomp filter, or a pidfd the
// poller cannot wait on). The caller must notice keepalived's exit another
// way (the agent's reconcile loop). It matches errors.ErrUnsupported.
var ErrNoPidfd = fmt.Errorf("keepalived: cannot watch keepalived's process through a pidfd: %w", errors.ErrUnsupported)

// MainProcess is a Keepalived that can name its main process.
// PIDFileKeepalived and SystemdKeepalived are.
type MainProcess interface {
	// MainPID returns the pid of keepalived's main process, 0 when
	// keepalived does not run: no pid, or the pid is not a live
	// keepalived (recycled, or a zombie not reaped yet).
	MainPID(ctx context.Context) (int, error)
}

// How often Watcher.Wait looks for a keepalived to watch while none runs.
const (
	// DefaultRecheck is the interval without inotify (systemd's MainPID
	// over D-Bus; a pid file whose directory cannot be watched). It is
	// shorter than the fastest master-down timer VRRP allows a new
	// keepalived (3 × 0.1 s advert + skew), so a keepalived that
	// starts is watched before it can take the VIP.
	DefaultRecheck = 200 * time.Millisecond
	// DefaultInotifyRecheck is the backstop interval while the pid file's
	// directory is watched with inotify, which wakes Wait as soon as the
	// pid file is written or renamed into place.
	DefaultInotifyRecheck = 2 * time.Second
)

// Watcher notices the exit of keepalived's main process as it happens:
// the process is opened as a pidfd (pidfd_open(2)) and waited for in Go's
// poller, so an exit (a SIGKILL included) wakes Wait at once. A reload
// (SIGHUP) keeps the process and is not an exit.
//
// While no keepalived runs, Wait waits for one to start: for
// PIDFileKeepalived the pid file's directory is watched with inotify
// (IN_CLOSE_WRITE, IN_MOVED_TO of the pid file) with a re-check every
// DefaultInotifyRecheck as a backstop; for other sources (systemd's
// MainPID) MainPID is asked every DefaultRecheck.
//
// A Watcher is used by one goroutine at a time.
type Watcher struct {
	// Armed, when set, is called with the pid each time Wait starts
	// watching a keepalived process.
	Armed func(pid int)

	src     MainProcess
	pidFile string // "" : no inotify
	// recheck and inotifyRecheck are the re-check intervals without and
	// with inotify; tests change them.
	recheck, inotifyRecheck time.Duration
	// open is pidfd.Open; tests replace it.
	open func(pid int) (*pidfd.FD, error)
	// exited is the pid whose exit Wait reported last, while the source
	// still names it: systemd's MainPID (and a pid file) name a dead
	// main process until they catch up, and an unreaped process still
	// looks like keepalived, so Wait must not report that exit again
	// (nor spin on it). Cleared once the source names another pid or none.
	exited int
}

// NewWatcher returns a Watcher of k's main process; an error matching
// errors.ErrUnsupported when k cannot name its main process.
func NewWatcher(k Keepalived) (*Watcher, error) {
	switch k := k.(type) {
	case *PIDFileKeepalived:
		return &Watcher{src: k, pidFile: k.PIDFile, recheck: DefaultRecheck, inotifyRecheck: DefaultInotifyRecheck}, nil
	case MainProcess:
		return &Watcher{src: k, recheck: DefaultRecheck}, nil
	}
	return nil, fmt.Errorf("keepalived: %T cannot name keepalived's process: %w", k, errors.ErrUnsupported)
}

// MainPID returns the pid of keepalived's main process now, 0 when none
// runs.
func (w *Watcher) MainPID(ctx context.Context) (int, error) {
	return w.src.MainPID(ctx)
}

// Wait blocks until the keepalived main process that runs now, or the
// next one to start, exits, and returns its pid: with a nil error, the
// kernel said that process has exited (its pidfd polled readable, or it
// was gone or recycled when Wait opened it). It returns ctx's error
// when ctx ends; ErrNoPidfd (with the pid of the running keepalived) where
// pidfds are not available; and MainPID's error when the source cannot
// tell whether keepalived runs (the caller retries). A process that exits
// while Wait opens it counts as an exit.
func (w *Watcher) Wait(ctx context.Context) (int, error) {
	var dir *dirWatch
	defer func() { dir.close() }()
	triedDir := false
	for {
		pid, err := w.src.MainPID(ctx)
		if err != nil {
			return 0, err
		}
		if pid != w.exited {
			w.exited = 0
		}
		if pid != 0 && pid != w.exited {
			err := w.waitExit(ctx, pid)
			if err == nil {
				w.exited = pid
			}
			return pid, err
		}
		if w.pidFile != "" && !triedDir {
			triedDir = true
			if dir, err = watchDir(w.pidFile); err == nil {
				continue // the pid file may have been written before the watch: look again
			}
			dir = nil // re-check only
		}
		if err := w.sleep(ctx, dir); err != nil {
			return 0, err
		}
	}
}

// sleep returns when the pid file may have changed or at the next
// re-check, or with ctx's error.
func (w *Watcher) sleep(ctx context.Context, dir *dirWatch) error {
	if dir != nil && dir.alive() {
		return dir.wait(ctx, time.Now().Add(w.inotifyRecheck))
	}
	return wait.Sleep(ctx, w.recheck)
}

// waitExit returns nil once pid has exited, ctx's error, or ErrNoPidfd.
func (w *Watcher) waitExit(ctx context.Context, pid int) error {
	open := w.open
	if open == nil {
		open = pidfd.Open
	}
	fd, err := open(pid)
	if errors.Is(err, pidfd.ErrNoProcess) {
		return nil // exited (and reaped) since MainPID named it
	}
	// Any other error, pidfd.ErrUnsupported or not, leaves the exit to
	// the caller's other means.
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoPidfd, err)
	}
	defer fd.Close()
	// Between MainPID and pidfd_open the process may have exited and its
	// pid been recycled: the pidfd then names another process.
	if !isKeepalived(pid) {
		return nil
	}
	if w.Armed != nil {
		w.Armed(pid)
	}
	if _, err := pidfd.Wait(ctx, fd); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("keepalived: wait for keepalived (pid %d): %w", pid, err)
	}
	// Wait ends on a poll error too: only POLLIN says the process has
	// exited, which the caller may act on as certain.
	if !fd.Exited() {
		return fmt.Errorf("keepalived: pidfd of keepalived (pid %d) woke without an exit", pid)
	}
	return nil
}

// dirWatch is an inotify watch of the pid file's directory.
type dirWatch struct {
	f    *os.File
	name string // the pid file's base name
	dead bool   // the watch was removed (the directory went away)
}

func watchDir(pidFile string) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("keepalived: inotify: %w", err)
	}
	dir := filepath.Dir(pidFile)
	// IN_CREATE is left out: a new pid file is empty until it is written.
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("keepalived: inotify watch %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), "inotify:"+dir)
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("keepalived: inotify %s: %w", dir, err)
	}
	return &dirWatch{f: f, name: filepath.Base(pidFile)}, nil
}

func (d *dirWatch) alive() bool { return d != nil && !d.dead }

func (d *dirWatch) close() {
	if d != nil {
		d.f.Close()
	}
}

// wait returns nil when the pid file was written or renamed into place,
// when deadline passes or the watch ends; ctx's error when ctx ends.
func (d *dirWatch) wait(ctx context.Context, deadline time.Time) error {
	if err := d.f.SetReadDeadline(deadline); err != nil {
		d.dead = true
		return nil
	}
	stop := context.AfterFunc(ctx, func() { _ = d.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		n, err := d.f.Read(buf)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			d.dead = true
			return nil
		}
		for _, ev := range parseInotify(buf[:n]) {
			if ev.mask&unix.IN_IGNORED != 0 {
				d.dead = true
				return nil
			}
			if ev.name == d.name {
				return nil
			}
		}
	}
}

type inotifyEvent struct {
	mask uint32
	name string
}

// parseInotify decodes struct inotify_event records (wd, mask, cookie,
// len, then len bytes of NUL-padded name).
func parseInotify(b []byte) []inotifyEvent {
	var out []inotifyEvent
	for len(b) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(b[4:8])
		n := int(binary.NativeEndian.Uint32(b[12:16]))
		end := unix.SizeofInotifyEvent + n
		if end > len(b) {
			break
		}
		name := b[unix.SizeofInotifyEvent:end]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, inotifyEvent{mask: mask, name: string(name)})
		b = b[end:]
	}
	return out
}
