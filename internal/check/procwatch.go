package check

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultExitPoll is how often WaitExit looks at the watched processes
// where pidfd_open(2) is not available (Linux before 5.3, a seccomp
// filter refusing it, or a ProcRoot other than /proc): an exit is then
// noticed within this time, 50 ms on average. With pidfds it is noticed
// as it happens (well under a millisecond).
const DefaultExitPoll = 100 * time.Millisecond

// How WaitExit watches (its first result).
const (
	// WatchPidfd: a pidfd per process, readable when the process exits.
	WatchPidfd = "pidfd"
	// WatchPoll: /proc/PID/stat read every ExitPoll.
	WatchPoll = "poll"
	// WatchNone: no live process had the name; WaitExit returned at once.
	WatchNone = "none"
)

// WaitExit returns when one of the live processes whose comm is name
// exits (nil), at once when none runs (nil, WatchNone), or when ctx ends
// (ctx's error, the processes still running). how says how the processes
// were watched: WatchPidfd, or WatchPoll where pidfds are not available.
// A caller judges the check again when it returns: another process of the
// same name may still run.
func (c *Checker) WaitExit(ctx context.Context, name string) (how string, err error) {
	procs, err := c.processes(name)
	if err != nil {
		return WatchNone, err
	}
	if len(procs) == 0 {
		return WatchNone, nil
	}
	if c.ProcRoot == "" || filepath.Clean(c.ProcRoot) == "/proc" {
		w, err := c.openPidfds(name, procs)
		switch {
		case errors.Is(err, errExited):
			return WatchPidfd, nil
		case err == nil:
			defer w.close()
			c.noteWatching(WatchPidfd, len(procs))
			return WatchPidfd, w.wait(ctx)
		}
		c.logger().Debug("pidfd not available, polling for the process's exit", "op", "check", "process", name, "err", err)
	}
	c.noteWatching(WatchPoll, len(procs))
	return WatchPoll, c.pollExit(ctx, procs)
}

// errExited says a watched process exited while its pidfd was opened.
var errExited = errors.New("check: process exited")

// pidfdWatch holds one pidfd per watched process, each in Go's poller.
type pidfdWatch struct {
	files []*os.File
}

// openPidfds opens a pidfd for each of procs. It returns errExited when
// one has exited meanwhile, and another error when pidfds cannot be used
// (the caller polls instead).
func (c *Checker) openPidfds(name string, procs []proc) (*pidfdWatch, error) {
	open := c.pidfdOpen
	if open == nil {
		open = func(pid int) (int, error) { return unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK) }
	}
	w := &pidfdWatch{}
	for _, p := range procs {
		fd, err := open(p.pid)
		if errors.Is(err, unix.ESRCH) {
			w.close()
			return nil, errExited
		}
		if err != nil {
			w.close()
			return nil, fmt.Errorf("check: pidfd_open %d: %w", p.pid, err)
		}
		f := os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(p.pid))
		w.files = append(w.files, f)
		// A pidfd in Go's poller can wait with a deadline; one that is
		// not (no epoll support) cannot be cancelled: poll instead.
		if err := f.SetReadDeadline(time.Time{}); err != nil {
			w.close()
			return nil, fmt.Errorf("check: pidfd %d: %w", p.pid, err)
		}
		// The pid may have been reused between the scan and the open:
		// the pidfd is the process of that pid now, which must still be
		// the one scanned.
		if !c.same(p, name) {
			w.close()
			return nil, errExited
		}
	}
	return w, nil
}

// wait returns nil when one of the processes has exited, or ctx's error.
func (w *pidfdWatch) wait(ctx context.Context) error {
	conns := make([]syscall.RawConn, 0, len(w.files))
	for _, f := range w.files {
		rc, err := f.SyscallConn()
		if err != nil {
			return fmt.Errorf("check: %s: %w", f.Name(), err)
		}
		conns = append(conns, rc)
	}
	exited := make(chan struct{}, len(w.files))
	var wg sync.WaitGroup
	for _, rc := range conns {
		wg.Go(func() {
			// Read waits in the poller until the function says done; a
			// pidfd is readable once its process has exited.
			err := rc.Read(func(fd uintptr) bool { return readable(int(fd)) })
			if err == nil {
				exited <- struct{}{}
			}
		})
	}
	var err error
	select {
	case <-exited:
	case <-ctx.Done():
		err = ctx.Err()
	}
	for _, f := range w.files {
		_ = f.SetReadDeadline(time.Now()) // wakes the other waiters
	}
	wg.Wait()
	return err
}

func (w *pidfdWatch) close() {
	for _, f := range w.files {
		f.Close()
	}
}

// readable reports whether fd polls readable now.
func readable(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		// An error other than EINTR (none is expected) ends the wait:
		// the caller judges the check again rather than wait blind.
		return err != nil || n > 0 && pfd[0].Revents != 0
	}
}

// pollExit reads each process's stat every ExitPoll until one is gone, a
// zombie, or its pid belongs to another process.
func (c *Checker) pollExit(ctx context.Context, procs []proc) error {
	every := c.ExitPoll
	if every <= 0 {
		every = DefaultExitPoll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		for _, p := range procs {
			if !c.alive(p) {
				return nil
			}
		}
	}
}

// alive reports whether p still runs (not a zombie, same start time).
func (c *Checker) alive(p proc) bool {
	st, start, ok := readStat(filepath.Join(c.procRoot(), strconv.Itoa(p.pid), "stat"))
	return ok && st != 'Z' && st != 'X' && start == p.start
}

// same reports whether p still runs under name.
func (c *Checker) same(p proc, name string) bool {
	comm, err := os.ReadFile(filepath.Join(c.procRoot(), strconv.Itoa(p.pid), "comm"))
	return err == nil && strings.TrimSuffix(string(comm), "\n") == name && c.alive(p)
}

func (c *Checker) noteWatching(how string, n int) {
	if c.watching != nil {
		c.watching(how, n)
	}
}
