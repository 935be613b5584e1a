package keepalived

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/internal/pidfd"
)

// startHUPProof starts a process named keepalived that survives SIGHUP
// (a reload), as keepalived does; it is killed and reaped when the test
// ends.
func startHUPProof(t *testing.T) *testutil.StandIn {
	t.Helper()
	return testutil.StartStandIn(t, "keepalived")
}

// waitResult is one return of Watcher.Wait.
type waitResult struct {
	pid int
	err error
	at  time.Time
}

// watching runs w.Wait in a loop until the test ends, sending each
// return on the first channel and each armed pid on the second.
func watching(t *testing.T, w *Watcher) (<-chan waitResult, <-chan int) {
	t.Helper()
	results := make(chan waitResult, 16)
	armed := make(chan int, 16)
	w.Armed = func(pid int) { armed <- pid }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			pid, err := w.Wait(ctx)
			if ctx.Err() != nil {
				return
			}
			results <- waitResult{pid, err, time.Now()}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return results, armed
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// none fails if ch has a value now.
func none[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %v", what, v)
	default:
	}
}

func TestWatcherPIDFile(t *testing.T) {
	t.Run("SIGKILL is an exit, SIGHUP is not", func(t *testing.T) {
		ka := startHUPProof(t)
		k := &PIDFileKeepalived{PIDFile: writePID(t, ka.Pid())}
		w, err := NewWatcher(k)
		if err != nil {
			t.Fatal(err)
		}
		results, armed := watching(t, w)
		if pid := recv(t, armed, "the watch"); pid != ka.Pid() {
			t.Fatalf("armed on pid %d, want %d", pid, ka.Pid())
		}
		// A reload keeps the process: no exit, no second watch.
		if err := k.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if running, _ := k.Running(context.Background()); !running {
			t.Fatal("the stand-in did not survive SIGHUP")
		}
		killed := time.Now()
		if err := ka.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		r := recv(t, results, "the exit")
		if r.err != nil || r.pid != ka.Pid() {
			t.Fatalf("Wait = %d, %v; want %d, nil", r.pid, r.err, ka.Pid())
		}
		t.Logf("SIGKILL → Wait returned after %s", r.at.Sub(killed))
		none(t, armed, "second watch (the SIGHUP counted as an exit)")
		// Not reaped yet (a zombie) or gone: either way no keepalived.
		if pid, err := w.MainPID(context.Background()); pid != 0 || err != nil {
			t.Errorf("MainPID after the exit = %d, %v", pid, err)
		}
		none(t, results, "second exit")
	})

	t.Run("a keepalived that starts later is watched through inotify", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "run", "keepalived.pid")
		if err := os.MkdirAll(filepath.Dir(pidFile), 0o755); err != nil {
			t.Fatal(err)
		}
		w, err := NewWatcher(&PIDFileKeepalived{PIDFile: pidFile})
		if err != nil {
			t.Fatal(err)
		}
		w.inotifyRecheck = time.Hour // only inotify can wake it
		results, armed := watching(t, w)
		// A pid file in place (renamed) and one written in place.
		for _, how := range []string{"rename", "write"} {
			ka := startHUPProof(t)
			data := []byte(strconv.Itoa(ka.Pid()) + "\n")
			if how == "rename" {
				tmp := pidFile + ".tmp"
				if err := os.WriteFile(tmp, data, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, pidFile); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(pidFile, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if pid := recv(t, armed, how+": the watch"); pid != ka.Pid() {
				t.Fatalf("%s: armed on %d, want %d", how, pid, ka.Pid())
			}
			ka.Cmd.Process.Kill()
			if r := recv(t, results, how+": the exit"); r.err != nil || r.pid != ka.Pid() {
				t.Fatalf("%s: Wait = %d, %v", how, r.pid, r.err)
			}
		}
	})

	t.Run("a process of another name is not watched", func(t *testing.T) {
		other := startNamed(t, "notkeepalived")
		pidFile := writePID(t, other.Process.Pid)
		w, err := NewWatcher(&PIDFileKeepalived{PIDFile: pidFile})
		if err != nil {
			t.Fatal(err)
		}
		w.inotifyRecheck = time.Hour
		results, armed := watching(t, w)
		ka := startHUPProof(t)
		// The next write of the pid file wakes the watcher: had it
		// watched the other process, it would have armed on it first.
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(ka.Pid())), 0o644); err != nil {
			t.Fatal(err)
		}
		if pid := recv(t, armed, "the watch"); pid != ka.Pid() {
			t.Fatalf("armed on %d, want keepalived %d", pid, ka.Pid())
		}
		none(t, results, "exit")
	})
}

func TestWatcherSystemd(t *testing.T) {
	f := &fakeSystemd{load: "loaded", active: "inactive"}
	k := &SystemdKeepalived{Unit: "keepalived.service", dial: func(context.Context) (systemdConn, error) { return f, nil }}
	w, err := NewWatcher(k)
	if err != nil {
		t.Fatal(err)
	}
	w.recheck = 10 * time.Millisecond
	results, armed := watching(t, w)
	for i := range 2 { // a start, and a restart after the SIGKILL
		ka := startHUPProof(t)
		f.setMainPID(ka.Pid())
		if pid := recv(t, armed, "the watch"); pid != ka.Pid() {
			t.Fatalf("start %d: armed on %d, want MainPID %d", i, pid, ka.Pid())
		}
		ka.Cmd.Process.Kill()
		if r := recv(t, results, "the exit"); r.err != nil || r.pid != ka.Pid() {
			t.Fatalf("start %d: Wait = %d, %v", i, r.pid, r.err)
		}
		// systemd has not noticed yet: MainPID still names the dead
		// process, which is no keepalived any more.
		if pid, err := w.MainPID(context.Background()); pid != 0 || err != nil {
			t.Errorf("start %d: MainPID of the dead process = %d, %v", i, pid, err)
		}
		f.setMainPID(0)
	}
}

func TestWatcherFallbacks(t *testing.T) {
	// pidfd.Open's errors where pidfds cannot be used, and where this
	// one cannot be opened: the watcher gives up on pidfds for both.
	for _, tt := range []struct {
		name  string
		errno error
		unsup bool
	}{
		{"no pidfd_open", unix.ENOSYS, true},
		{"too many open files", unix.EMFILE, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ka := startHUPProof(t)
			w, err := NewWatcher(&PIDFileKeepalived{PIDFile: writePID(t, ka.Pid())})
			if err != nil {
				t.Fatal(err)
			}
			w.open = func(pid int) (*pidfd.FD, error) {
				if tt.unsup {
					return nil, fmt.Errorf("%w: pidfd_open %d: %w", pidfd.ErrUnsupported, pid, tt.errno)
				}
				return nil, fmt.Errorf("pidfd: pidfd_open %d: %w", pid, tt.errno)
			}
			pid, err := w.Wait(context.Background())
			if !errors.Is(err, ErrNoPidfd) || !errors.Is(err, errors.ErrUnsupported) || !errors.Is(err, tt.errno) ||
				errors.Is(err, pidfd.ErrUnsupported) != tt.unsup || pid != ka.Pid() {
				t.Errorf("Wait = %d, %v; want ErrNoPidfd for %d", pid, err, ka.Pid())
			}
		})
	}
	t.Run("exited before the pidfd was opened", func(t *testing.T) {
		ka := startHUPProof(t)
		w, err := NewWatcher(&PIDFileKeepalived{PIDFile: writePID(t, ka.Pid())})
		if err != nil {
			t.Fatal(err)
		}
		w.open = func(pid int) (*pidfd.FD, error) {
			return nil, fmt.Errorf("%w: pidfd_open %d: %w", pidfd.ErrNoProcess, pid, unix.ESRCH)
		}
		if pid, err := w.Wait(context.Background()); err != nil || pid != ka.Pid() {
			t.Errorf("Wait = %d, %v; want the exit of %d", pid, err, ka.Pid())
		}
	})
	t.Run("cannot name the process", func(t *testing.T) {
		if _, err := NewWatcher(reloadOnly{}); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("NewWatcher = %v, want ErrUnsupported", err)
		}
	})
	t.Run("garbage pid file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "k.pid")
		os.WriteFile(p, []byte("abc"), 0o644)
		w, _ := NewWatcher(&PIDFileKeepalived{PIDFile: p})
		if _, err := w.Wait(context.Background()); err == nil {
			t.Error("Wait on a garbage pid file did not fail")
		}
	})
}

type reloadOnly struct{}

func (reloadOnly) Running(context.Context) (bool, error) { return true, nil }
func (reloadOnly) Reload(context.Context) error          { return nil }

func TestWatcherCancel(t *testing.T) {
	for _, running := range []bool{true, false} {
		t.Run("running="+strconv.FormatBool(running), func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "keepalived.pid")
			w, err := NewWatcher(&PIDFileKeepalived{PIDFile: pidFile})
			if err != nil {
				t.Fatal(err)
			}
			armed := make(chan int, 1)
			w.Armed = func(pid int) { armed <- pid }
			if running {
				ka := startHUPProof(t)
				os.WriteFile(pidFile, []byte(strconv.Itoa(ka.Pid())), 0o644)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := w.Wait(ctx)
				done <- err
			}()
			if running {
				recv(t, armed, "the watch")
			}
			cancel()
			if err := recv(t, done, "Wait to return"); !errors.Is(err, context.Canceled) {
				t.Errorf("Wait = %v, want context.Canceled", err)
			}
		})
	}
}

func TestParseInotify(t *testing.T) {
	rec := func(mask uint32, name string, pad int) []byte {
		b := make([]byte, unix.SizeofInotifyEvent+len(name)+pad)
		binary.NativeEndian.PutUint32(b[4:], mask)
		binary.NativeEndian.PutUint32(b[12:], uint32(len(name)+pad))
		copy(b[unix.SizeofInotifyEvent:], name)
		return b
	}
	b := append(rec(unix.IN_CLOSE_WRITE, "keepalived.pid", 2), rec(unix.IN_IGNORED, "", 0)...)
	b = append(b, 1, 2, 3) // a truncated record is dropped
	got := parseInotify(b)
	if len(got) != 2 || got[0].name != "keepalived.pid" || got[0].mask != unix.IN_CLOSE_WRITE || got[1].mask != unix.IN_IGNORED {
		t.Errorf("parseInotify = %+v", got)
	}
}

// staticSource names one pid whatever happens, as systemd's MainPID does
// for a moment after its main process died.
type staticSource struct{ pid int }

func (s staticSource) MainPID(context.Context) (int, error) { return s.pid, nil }

// TestWatcherReportsAnExitOnce: while the source still names a main
// process whose exit Wait reported, Wait reports nothing more (it used to
// report the same exit again at once, in a loop) until the source names
// another process.
func TestWatcherReportsAnExitOnce(t *testing.T) {
	ka := startHUPProof(t)
	pid := ka.Pid()
	ka.Cmd.Process.Kill()
	<-ka.Done // reaped: the pid names no process now
	w := &Watcher{src: staticSource{pid}, recheck: time.Millisecond}
	if got, err := w.Wait(t.Context()); got != pid || err != nil {
		t.Fatalf("first Wait = %d, %v; want the exit of %d", got, err, pid)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if got, err := w.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Wait = %d, %v; want it to wait (the exit was reported)", got, err)
	}
	next := startHUPProof(t)
	w.src = staticSource{next.Pid()}
	results := make(chan error, 1)
	go func() {
		_, err := w.Wait(t.Context())
		results <- err
	}()
	next.Cmd.Process.Kill()
	if err := <-results; err != nil {
		t.Fatalf("Wait on the next keepalived: %v", err)
	}
}
