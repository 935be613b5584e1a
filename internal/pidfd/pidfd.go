// Package pidfd owns waiting for a process to exit through a pidfd
// (pidfd_open(2), Linux 5.3 and later): Open opens one and puts it in Go's
// poller, so that a wait costs no thread and can be cancelled, and Wait
// returns as soon as one of several pidfds polls readable, which a pidfd
// does once its process has exited (a SIGKILL included). Open says where
// pidfds cannot be used (ErrUnsupported), so that a caller can notice the
// exit another way, as internal/check (polling /proc) and agent/keepalived
// (the agent's reconcile loop) do.
package pidfd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsupported is returned (wrapped, with the cause) by Open where a
// process cannot be waited for through a pidfd: pidfd_open(2) is missing
// (ENOSYS: Linux before 5.3), refused (EPERM: a seccomp filter) or does
// not know PIDFD_NONBLOCK (EINVAL: Linux before 5.10), or Go's poller
// cannot wait on the pidfd. The caller must notice the exit another way.
var ErrUnsupported = errors.New("pidfd: not available here")

// ErrNoProcess is returned (wrapped, with ESRCH) by Open when no process
// has the pid: it has exited and been reaped, or never ran.
var ErrNoProcess = errors.New("pidfd: process gone")

// FD is a pidfd in Go's poller. It is waited for by one Wait at a time;
// Close releases it.
type FD struct {
	pid int
	f   *os.File
	rc  syscall.RawConn
}

// Open opens a pidfd (non-blocking, close-on-exec) for the process pid.
// Its error wraps ErrNoProcess when no process has the pid, ErrUnsupported
// where pidfds cannot be used; another error (EMFILE, ENOMEM) says this
// pidfd could not be opened, and is returned with the errno. A process
// that has exited but is not reaped yet (a zombie) is opened, and its
// pidfd polls readable at once.
func Open(pid int) (*FD, error) {
	return open(pid, unix.PidfdOpen)
}

// open is Open with pidfd_open(2) passed in; tests give it failures.
func open(pid int, pidfdOpen func(pid, flags int) (int, error)) (*FD, error) {
	fd, err := pidfdOpen(pid, unix.PIDFD_NONBLOCK)
	switch {
	case errors.Is(err, unix.ESRCH):
		return nil, fmt.Errorf("%w: pidfd_open %d: %w", ErrNoProcess, pid, err)
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM),
		errors.Is(err, unix.EINVAL) && pid > 0: // a pid ≤ 0 is EINVAL too, and the caller's mistake
		return nil, fmt.Errorf("%w: pidfd_open %d: %w", ErrUnsupported, pid, err)
	case err != nil:
		return nil, fmt.Errorf("pidfd: pidfd_open %d: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))
	// A pidfd in Go's poller can be waited for with a deadline, which is
	// how Wait is cancelled; one that is not (no epoll support) cannot be.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrUnsupported, f.Name(), err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrUnsupported, f.Name(), err)
	}
	return &FD{pid: pid, f: f, rc: rc}, nil
}

// Pid returns the pid the pidfd was opened for.
func (p *FD) Pid() int { return p.pid }

// Close closes the pidfd.
func (p *FD) Close() error { return p.f.Close() }

// Exited reports whether the pidfd polls POLLIN now: its process has
// exited, for certain. Wait also returns on an error condition, which is
// no exit.
func (p *FD) Exited() bool {
	exited := false
	if err := p.rc.Control(func(fd uintptr) {
		r, err := poll(int(fd))
		exited = err == nil && r&unix.POLLIN != 0
	}); err != nil {
		return false
	}
	return exited
}

// Wait returns when one of fds polls readable, with that FD, or with
// ctx's error when ctx ends first; an exit seen as ctx ends is returned
// rather than ctx's error. A pidfd polls readable once its process has
// exited, but an error condition (POLLERR, POLLHUP or POLLNVAL without
// POLLIN, or poll(2) failing, none of them expected) ends the wait too, so
// that the caller looks at the process again rather than wait blind:
// FD.Exited tells a certain exit apart. Another error is the poller's
// (an FD closed during the wait). The FDs stay open, and can be waited
// for again.
func Wait(ctx context.Context, fds ...*FD) (*FD, error) {
	if len(fds) == 0 {
		return nil, errors.New("pidfd: Wait without a pidfd")
	}
	type woken struct {
		fd  *FD
		err error
	}
	results := make(chan woken, len(fds))
	for _, p := range fds {
		go func() {
			// Read waits in the poller until the function says done.
			err := p.rc.Read(func(fd uintptr) bool { return readable(int(fd)) })
			results <- woken{p, err}
		}()
	}
	var got []woken
	select {
	case r := <-results:
		got = append(got, r)
	case <-ctx.Done():
	}
	// A deadline in the past ends the other waits; each is waited for.
	for _, p := range fds {
		_ = p.f.SetReadDeadline(time.Unix(1, 0))
	}
	for len(got) < len(fds) {
		got = append(got, <-results)
	}
	for _, p := range fds {
		_ = p.f.SetReadDeadline(time.Time{})
	}
	for _, r := range got {
		if r.err == nil {
			return r.fd, nil
		}
	}
	// A wait woken before its Read began did not poll at all.
	for _, p := range fds {
		if p.ready() {
			return p, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Only the first to return failed on its own: the others were woken.
	return nil, fmt.Errorf("pidfd: wait for %s: %w", got[0].fd.f.Name(), got[0].err)
}

// ready reports whether the pidfd polls readable now, as Wait's Read
// sees it.
func (p *FD) ready() bool {
	ok := false
	if err := p.rc.Control(func(fd uintptr) { ok = readable(int(fd)) }); err != nil {
		return false
	}
	return ok
}

// readable reports whether fd polls readable now.
func readable(fd int) bool {
	r, err := poll(fd)
	// An error other than EINTR (none is expected) ends the wait: the
	// caller looks at the process again rather than wait blind.
	return err != nil || r != 0
}

// poll polls fd for POLLIN without blocking and returns its revents
// (0: nothing yet), retrying on EINTR.
func poll(fd int) (int16, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(pfd, 0)
		if !errors.Is(err, unix.EINTR) {
			return pfd[0].Revents, err
		}
	}
}
