package pidfd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// TestOpenErrors maps pidfd_open(2)'s failures to the sentinels.
func TestOpenErrors(t *testing.T) {
	for _, tt := range []struct {
		name   string
		pid    int
		errno  error
		unsup  bool
		noProc bool
	}{
		{"ENOSYS: Linux before 5.3", 42, unix.ENOSYS, true, false},
		{"EPERM: a seccomp filter", 42, unix.EPERM, true, false},
		{"EINVAL: no PIDFD_NONBLOCK before 5.10", 42, unix.EINVAL, true, false},
		{"EINVAL: pid 0", 0, unix.EINVAL, false, false},
		{"ESRCH: gone", 42, unix.ESRCH, false, true},
		{"EMFILE: out of descriptors", 42, unix.EMFILE, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var gotPid, gotFlags int
			fd, err := open(tt.pid, func(pid, flags int) (int, error) {
				gotPid, gotFlags = pid, flags
				return -1, tt.errno
			})
			if fd != nil || !errors.Is(err, tt.errno) ||
				errors.Is(err, ErrUnsupported) != tt.unsup || errors.Is(err, ErrNoProcess) != tt.noProc {
				t.Errorf("open = %v, %v; want errno %v, ErrUnsupported %v, ErrNoProcess %v", fd, err, tt.errno, tt.unsup, tt.noProc)
			}
			if gotPid != tt.pid || gotFlags != unix.PIDFD_NONBLOCK {
				t.Errorf("pidfd_open(%d, %#x), want (%d, PIDFD_NONBLOCK)", gotPid, gotFlags, tt.pid)
			}
		})
	}

	t.Run("a descriptor the poller cannot wait on", func(t *testing.T) {
		// A regular file cannot be added to epoll: a pidfd that cannot
		// be either could not be waited for with a deadline.
		f, err := os.Create(filepath.Join(t.TempDir(), "plain"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
		p, err := open(42, func(int, int) (int, error) { return fd, nil })
		if p != nil || !errors.Is(err, ErrUnsupported) {
			t.Errorf("open = %v, %v; want ErrUnsupported", p, err)
		}
		// open closed it.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
			t.Errorf("the descriptor is still open: %v", err)
		}
	})
}

// openOrSkip opens pid's pidfd, skipping the test where the kernel has
// none.
func openOrSkip(t *testing.T, pid int) *FD {
	t.Helper()
	p, err := Open(pid)
	if errors.Is(err, ErrUnsupported) {
		testutil.SkipUnprivileged(t, "no pidfds on this kernel: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if p.Pid() != pid {
		t.Fatalf("Pid = %d, want %d", p.Pid(), pid)
	}
	return p
}

type waitResult struct {
	fd  *FD
	err error
}

// waitAsync runs Wait in a goroutine; the result arrives on the channel.
func waitAsync(ctx context.Context, fds ...*FD) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		fd, err := Wait(ctx, fds...)
		ch <- waitResult{fd, err}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan waitResult) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return")
		panic("unreachable")
	}
}

func TestWaitExit(t *testing.T) {
	t.Run("SIGKILL", func(t *testing.T) {
		s := testutil.StartStandIn(t, "pidfdtest")
		p := openOrSkip(t, s.Pid())
		if p.Exited() {
			t.Fatal("Exited before the kill")
		}
		done := waitAsync(context.Background(), p)
		s.Signal(t, syscall.SIGKILL)
		if r := recv(t, done); r.fd != p || r.err != nil {
			t.Fatalf("Wait = %v, %v; want the killed process's pidfd", r.fd, r.err)
		}
		if !p.Exited() {
			t.Error("Exited = false after the exit")
		}
	})

	t.Run("exited, not reaped", func(t *testing.T) {
		cmd := exec.Command("/bin/sh", "-c", "exit 3")
		if err := cmd.Start(); err != nil {
			testutil.SkipUnprivileged(t, "needs /bin/sh: %v", err)
		}
		// Not reaped until the end: a zombie, or on its way to being one.
		t.Cleanup(func() { cmd.Wait() })
		p := openOrSkip(t, cmd.Process.Pid)
		if r := recv(t, waitAsync(context.Background(), p)); r.fd != p || r.err != nil {
			t.Fatalf("Wait = %v, %v; want the exited process's pidfd", r.fd, r.err)
		}
		if !p.Exited() {
			t.Error("Exited = false for a zombie")
		}
	})

	t.Run("reaped before the open", func(t *testing.T) {
		s := testutil.StartStandIn(t, "pidfdtest")
		s.Signal(t, syscall.SIGKILL)
		<-s.Done
		if p, err := Open(s.Pid()); !errors.Is(err, ErrNoProcess) || !errors.Is(err, unix.ESRCH) {
			if errors.Is(err, ErrUnsupported) {
				testutil.SkipUnprivileged(t, "no pidfds on this kernel: %v", err)
			}
			t.Errorf("Open = %v, %v; want ErrNoProcess", p, err)
		}
	})
}

// TestWaitSeveral: the first of several processes to exit ends the wait,
// with its pidfd; the others still run.
func TestWaitSeveral(t *testing.T) {
	a, b := testutil.StartStandIn(t, "pidfdtest"), testutil.StartStandIn(t, "pidfdtest")
	pa, pb := openOrSkip(t, a.Pid()), openOrSkip(t, b.Pid())
	done := waitAsync(context.Background(), pa, pb)
	b.Signal(t, syscall.SIGKILL)
	if r := recv(t, done); r.fd != pb || r.err != nil {
		t.Fatalf("Wait = %v, %v; want b's pidfd %v", r.fd, r.err, pb)
	}
	if pa.Exited() {
		t.Error("a Exited, but it runs")
	}
	// The pidfds can be waited for again: b's has exited.
	if fd, err := Wait(context.Background(), pa, pb); fd != pb || err != nil {
		t.Errorf("second Wait = %v, %v; want b's pidfd at once", fd, err)
	}
}

func TestWaitCancel(t *testing.T) {
	s := testutil.StartStandIn(t, "pidfdtest")
	p := openOrSkip(t, s.Pid())

	ctx, cancel := context.WithCancel(context.Background())
	done := waitAsync(ctx, p)
	cancel()
	if r := recv(t, done); r.fd != nil || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Wait = %v, %v; want context.Canceled", r.fd, r.err)
	}
	if err := s.Cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the process is gone: %v", err)
	}

	// The cancelled wait left the pidfd ready for another.
	done = waitAsync(context.Background(), p)
	s.Signal(t, syscall.SIGKILL)
	if r := recv(t, done); r.fd != p || r.err != nil {
		t.Fatalf("Wait after a cancelled one = %v, %v; want the exit", r.fd, r.err)
	}

	// An exit seen as ctx ends is returned rather than ctx's error.
	if fd, err := Wait(ctx, p); fd != p || err != nil {
		t.Errorf("Wait with ctx ended after the exit = %v, %v; want the exit", fd, err)
	}
}

func TestWaitNothing(t *testing.T) {
	if fd, err := Wait(context.Background()); fd != nil || err == nil {
		t.Errorf("Wait() = %v, %v; want an error", fd, err)
	}
}
