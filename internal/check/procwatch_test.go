package check

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/internal/pidfd"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// uniqueName is a comm name no other process on the machine has.
func uniqueName(tb testing.TB) string {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return "vkw" + hex.EncodeToString(b) // 13 bytes, within comm's 15
}

// child is a real process with a unique comm name (sleep under another
// name); kill ends it and reaps it.
type child struct {
	cmd  *exec.Cmd
	once sync.Once
}

func startNamed(tb testing.TB, name string) *child {
	tb.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		testutil.SkipUnprivileged(tb, "no sleep binary")
	}
	link := filepath.Join(tb.TempDir(), name)
	if err := os.Symlink(sleep, link); err != nil {
		tb.Fatal(err)
	}
	c := &child{cmd: exec.Command(link, "300")}
	if err := c.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.kill)
	return c
}

func (c *child) kill() {
	c.once.Do(func() {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	})
}

// refuse is pidfd.Open where pidfd_open(2) fails with errno (ENOSYS:
// an old kernel; EPERM: a seccomp filter).
func refuse(errno error) func(int) (*pidfd.FD, error) {
	return func(pid int) (*pidfd.FD, error) {
		return nil, fmt.Errorf("%w: pidfd_open %d: %w", pidfd.ErrUnsupported, pid, errno)
	}
}

// noticeLatency starts a process, waits until WaitExit watches it and
// then delay more, kills it (SIGKILL, not reaped: a crashed service's
// process) and returns how long WaitExit took to return after the kill,
// and how it watched.
func noticeLatency(tb testing.TB, c *Checker, delay time.Duration) (time.Duration, string) {
	tb.Helper()
	name := uniqueName(tb)
	ch := startNamed(tb, name)
	watching := make(chan string, 1)
	c.watching = func(how string, n int) {
		if n != 1 {
			tb.Errorf("watching %d processes, want 1", n)
		}
		watching <- how
	}
	type result struct {
		at  time.Time
		how string
		err error
	}
	done := make(chan result, 1)
	go func() {
		how, err := c.WaitExit(context.Background(), name)
		done <- result{time.Now(), how, err}
	}()
	var mode string
	select {
	case mode = <-watching:
	case r := <-done:
		tb.Fatalf("WaitExit returned (%s, %v) before the process was killed", r.how, r.err)
	}
	time.Sleep(delay) // where in a poll interval the fault falls
	killed := time.Now()
	if err := ch.cmd.Process.Signal(unix.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	r := <-done
	ch.kill()
	if r.err != nil || r.how != mode {
		tb.Fatalf("WaitExit = (%s, %v), want (%s, nil)", r.how, r.err, mode)
	}
	return r.at.Sub(killed), r.how
}

// TestWaitExitRealChild kills a real process and checks that WaitExit
// notices, through a pidfd and, with pidfd_open refused, by polling. The
// latency is logged (go test -v), not asserted.
func TestWaitExitRealChild(t *testing.T) {
	for _, tt := range []struct {
		name   string
		open   func(int) (*pidfd.FD, error)
		want   string
		reason string
	}{
		{"pidfd", nil, WatchPidfd, ""},
		{"poll on ENOSYS", refuse(unix.ENOSYS), WatchPoll, "old kernel"},
		{"poll on EPERM", refuse(unix.EPERM), WatchPoll, "seccomp"},
		{"poll on EMFILE", func(pid int) (*pidfd.FD, error) {
			return nil, fmt.Errorf("pidfd: pidfd_open %d: %w", pid, unix.EMFILE)
		}, WatchPoll, "no pidfd to spare"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &Checker{pidfdOpen: tt.open, Log: testLogger(t)}
			lat, how := noticeLatency(t, c, 0)
			if how != tt.want {
				t.Fatalf("watched by %s, want %s", how, tt.want)
			}
			t.Logf("exit noticed %v after SIGKILL (%s)", lat, how)
		})
	}
}

// TestWaitExitSeveral: with two processes of the name, one exiting ends
// the wait, and the check is still healthy for the other.
func TestWaitExitSeveral(t *testing.T) {
	name := uniqueName(t)
	a, b := startNamed(t, name), startNamed(t, name)
	_ = b
	c := &Checker{Log: testLogger(t)}
	watching := make(chan int, 1)
	c.watching = func(_ string, n int) { watching <- n }
	done := make(chan error, 1)
	go func() { _, err := c.WaitExit(context.Background(), name); done <- err }()
	if n := <-watching; n != 2 {
		t.Fatalf("watching %d processes, want 2", n)
	}
	a.kill()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.Probe(context.Background(), Spec{Kind: vrrp.CheckProcess, Process: name}); err != nil {
		t.Errorf("one of two processes left, but: %v", err)
	}
}

func TestWaitExitNoneRunning(t *testing.T) {
	c := &Checker{Log: testLogger(t)}
	how, err := c.WaitExit(context.Background(), uniqueName(t))
	if how != WatchNone || err != nil {
		t.Errorf("WaitExit = (%s, %v), want (none, nil) at once", how, err)
	}
}

// TestWaitExitCancelled: ctx ending stops the wait while the process runs.
func TestWaitExitCancelled(t *testing.T) {
	for _, open := range []func(int) (*pidfd.FD, error){nil, refuse(unix.ENOSYS)} {
		name := uniqueName(t)
		ch := startNamed(t, name)
		ctx, cancel := context.WithCancel(context.Background())
		c := &Checker{pidfdOpen: open, Log: testLogger(t)}
		c.watching = func(string, int) { cancel() }
		how, err := c.WaitExit(ctx, name)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: WaitExit = %v, want context.Canceled", how, err)
		}
		if err := ch.cmd.Process.Signal(unix.Signal(0)); err != nil {
			t.Errorf("%s: the process is gone: %v", how, err)
		}
	}
}

// TestWaitExitPollFakeProc: with a ProcRoot other than /proc the pids are
// not this machine's: WaitExit polls, and notices the exit at the next
// poll, a zombie too.
func TestWaitExitPollFakeProc(t *testing.T) {
	for _, tt := range []struct {
		name string
		exit func(p *fakeProc)
	}{
		{"gone", func(p *fakeProc) { os.RemoveAll(filepath.Join(p.root, "42")) }},
		{"zombie", func(p *fakeProc) { p.add("42", "nginx", "Z") }},
		{"pid reused", func(p *fakeProc) {
			p.add("42", "nginx", "S")
			stat := "42 (nginx) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 999 0"
			os.WriteFile(filepath.Join(p.root, "42", "stat"), []byte(stat), 0o644)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newFakeProc(t)
				p.add("42", "nginx", "S")
				c := &Checker{ProcRoot: p.root, ExitPoll: 100 * time.Millisecond, Log: testLogger(t)}
				var got struct {
					how string
					err error
					at  time.Time
				}
				done := make(chan struct{})
				go func() {
					got.how, got.err = c.WaitExit(context.Background(), "nginx")
					got.at = time.Now()
					close(done)
				}()
				time.Sleep(250 * time.Millisecond)
				synctest.Wait()
				select {
				case <-done:
					t.Fatalf("WaitExit returned (%s, %v) while the process runs", got.how, got.err)
				default:
				}
				exited := time.Now()
				tt.exit(p)
				<-done
				if got.how != WatchPoll || got.err != nil {
					t.Fatalf("WaitExit = (%s, %v), want (poll, nil)", got.how, got.err)
				}
				if d := got.at.Sub(exited); d > c.ExitPoll {
					t.Errorf("noticed %v after the exit, want within the poll interval %v", d, c.ExitPoll)
				}
			})
		})
	}
}

// BenchmarkWaitExit measures how long after a SIGKILL WaitExit notices the
// exit: notice-µs is the mean, p50-µs and max-µs the median and worst. The
// kills fall evenly over a poll interval after the watch starts.
func BenchmarkWaitExit(b *testing.B) {
	for _, bb := range []struct {
		name string
		open func(int) (*pidfd.FD, error)
	}{
		{"pidfd", nil},
		{"poll", refuse(unix.ENOSYS)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			var lats []time.Duration
			for i := 0; b.Loop(); i++ {
				c := &Checker{pidfdOpen: bb.open}
				lat, _ := noticeLatency(b, c, time.Duration(i%10)*DefaultExitPoll/10)
				lats = append(lats, lat)
			}
			sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
			var sum time.Duration
			for _, l := range lats {
				sum += l
			}
			us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
			b.ReportMetric(us(sum/time.Duration(len(lats))), "notice-µs")
			b.ReportMetric(us(lats[len(lats)/2]), "p50-µs")
			b.ReportMetric(us(lats[len(lats)-1]), "max-µs")
			b.ReportMetric(0, "ns/op")
		})
	}
}
