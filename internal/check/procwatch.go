package check

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/internal/pidfd"
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
	fds []*pidfd.FD
}

// openPidfds opens a pidfd for each of procs. It returns errExited when
// one has exited meanwhile, and another error when pidfds cannot be used
// (the caller polls instead).
func (c *Checker) openPidfds(name string, procs []proc) (*pidfdWatch, error) {
	open := c.pidfdOpen
	if open == nil {
		open = pidfd.Open
	}
	w := &pidfdWatch{}
	for _, p := range procs {
		fd, err := open(p.pid)
		if errors.Is(err, pidfd.ErrNoProcess) {
			w.close()
			return nil, errExited
		}
		// Any other error, pidfd.ErrUnsupported or not, has the caller
		// poll instead.
		if err != nil {
			w.close()
			return nil, fmt.Errorf("check: %w", err)
		}
		w.fds = append(w.fds, fd)
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
// A pidfd that wakes on an error condition rather than an exit counts as
// an exit: the caller judges the check again rather than wait blind.
func (w *pidfdWatch) wait(ctx context.Context) error {
	_, err := pidfd.Wait(ctx, w.fds...)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("check: %w", err)
	}
	return err
}

func (w *pidfdWatch) close() {
	for _, fd := range w.fds {
		fd.Close()
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
