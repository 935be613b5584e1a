package keepalived

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// startNamed runs /bin/sleep under the given name, so that /proc/PID/comm
// says name, and returns its command (waited in t.Cleanup).
func startNamed(t *testing.T, name string) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		testutil.SkipUnprivileged(t, "needs sleep(1)")
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

func writePID(t *testing.T, pid int) string {
	p := filepath.Join(t.TempDir(), "keepalived.pid")
	if err := os.WriteFile(p, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPIDFileKeepalived(t *testing.T) {
	ctx := context.Background()
	t.Run("running keepalived is reloaded with SIGHUP", func(t *testing.T) {
		cmd := startNamed(t, "keepalived")
		k := &PIDFileKeepalived{PIDFile: writePID(t, cmd.Process.Pid)}
		if running, err := k.Running(ctx); err != nil || !running {
			t.Fatalf("Running = %v, %v", running, err)
		}
		if err := k.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait() // sleep dies of the SIGHUP
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGHUP {
			t.Errorf("process ended with %v, want SIGHUP", err)
		}
	})
	t.Run("recycled pid is not keepalived", func(t *testing.T) {
		cmd := startNamed(t, "notkeepalived")
		k := &PIDFileKeepalived{PIDFile: writePID(t, cmd.Process.Pid)}
		if running, _ := k.Running(ctx); running {
			t.Error("a process of another name counted as keepalived")
		}
		if err := k.Reload(ctx); !errors.Is(err, ErrNotRunning) {
			t.Errorf("Reload = %v, want ErrNotRunning", err)
		}
	})
	t.Run("missing pid file", func(t *testing.T) {
		k := &PIDFileKeepalived{PIDFile: filepath.Join(t.TempDir(), "none.pid")}
		if running, err := k.Running(ctx); running || err != nil {
			t.Errorf("Running = %v, %v", running, err)
		}
	})
	t.Run("garbage pid file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "k.pid")
		os.WriteFile(p, []byte("abc"), 0o644)
		k := &PIDFileKeepalived{PIDFile: p}
		if _, err := k.Running(ctx); err == nil || !strings.Contains(err.Error(), "not a pid") {
			t.Errorf("err = %v", err)
		}
	})
}

// fakeSystemd is a systemd D-Bus connection with one unit.
type fakeSystemd struct {
	mu      sync.Mutex
	load    string
	active  string
	mainPID uint32
	result  string
	reloads []string
	closed  bool
}

func (f *fakeSystemd) GetUnitPropertyContext(_ context.Context, unit, name string) (*sddbus.Property, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := map[string]string{"LoadState": f.load, "ActiveState": f.active}[name]
	return &sddbus.Property{Name: name, Value: dbus.MakeVariant(v)}, nil
}

func (f *fakeSystemd) GetServicePropertyContext(_ context.Context, unit, name string) (*sddbus.Property, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name != "MainPID" {
		return nil, errors.New("fake systemd: no service property " + name)
	}
	return &sddbus.Property{Name: name, Value: dbus.MakeVariant(f.mainPID)}, nil
}

func (f *fakeSystemd) setMainPID(pid int) {
	f.mu.Lock()
	f.mainPID = uint32(pid)
	f.mu.Unlock()
}

func (f *fakeSystemd) ReloadUnitContext(_ context.Context, name, mode string, ch chan<- string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads = append(f.reloads, name+" "+mode)
	ch <- f.result
	return 1, nil
}

func (f *fakeSystemd) Close() { f.closed = true }

func TestSystemdKeepalived(t *testing.T) {
	ctx := context.Background()
	f := &fakeSystemd{load: "loaded", active: "active", result: "done"}
	k := &SystemdKeepalived{Unit: "keepalived.service", dial: func(context.Context) (systemdConn, error) { return f, nil }}
	if ok, err := k.Loaded(ctx); !ok || err != nil {
		t.Fatalf("Loaded = %v %v", ok, err)
	}
	if err := k.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.reloads) != 1 || f.reloads[0] != "keepalived.service replace" {
		t.Errorf("reload jobs %v", f.reloads)
	}
	f.result = "failed"
	if err := k.Reload(ctx); err == nil || !strings.Contains(err.Error(), "job failed") {
		t.Errorf("failed job: %v", err)
	}
	f.active = "inactive"
	if running, _ := k.Running(ctx); running {
		t.Error("inactive unit counted as running")
	}
	if err := k.Reload(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Reload of an inactive unit = %v, want ErrNotRunning", err)
	}
	k.Close()
	if !f.closed {
		t.Error("connection not closed")
	}
}

// The D-Bus connection outlives the call that opened it: go-systemd closes
// a connection when its dial context ends, so the dial context must not
// end with the caller's (a regression: the first apply's 5 s context
// closed the connection and later reloads failed).
func TestSystemdKeepalivedConnOutlivesCall(t *testing.T) {
	f := &fakeSystemd{load: "loaded", active: "active", result: "done"}
	var dialCtx context.Context
	k := &SystemdKeepalived{Unit: "keepalived.service", dial: func(ctx context.Context) (systemdConn, error) {
		dialCtx = ctx
		return f, nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if _, err := k.Loaded(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if dialCtx == nil || dialCtx.Err() != nil {
		t.Fatalf("the connection's context ended with the call: %v", dialCtx)
	}
	if err := k.Reload(context.Background()); err != nil {
		t.Fatalf("reload after the first call's context ended: %v", err)
	}
}

func TestConfigTester(t *testing.T) {
	requireBinary(t, "keepalived")
	dir := t.TempDir()
	good := filepath.Join(dir, "good.conf")
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(good, []byte("global_defs {\n    router_id t1\n}\n"), 0o640)
	os.WriteFile(bad, []byte("global_defs {\n    router_id t1\n    bogus_keyword 1\n}\n"), 0o640)
	v := &ConfigTester{Binary: "keepalived"}
	if err := v.Validate(context.Background(), good); err != nil {
		t.Errorf("good config: %v", err)
	}
	err := v.Validate(context.Background(), bad)
	if !errors.Is(err, ErrConfigTest) || !strings.Contains(err.Error(), "bogus_keyword") {
		t.Errorf("bad config: %v, want ErrConfigTest naming the keyword", err)
	}
}

// requireBinary skips unless every named binary is installed (as
// the agent tests' requireBinary).
func requireBinary(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			testutil.SkipUnprivileged(t, "needs %s, which is not installed (apt-get install %s)", n, n)
		}
	}
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		line  string
		comm  string
		state byte
		ok    bool
	}{
		{"4242 (keepalived) S 1 4242 4242 0 -1", "keepalived", 'S', true},
		{"4242 (keepalived) Z 1 4242", "keepalived", 'Z', true},
		// A name may hold spaces and parentheses: it ends at the last ')'.
		{"77 (a) b (c) R 1", "a) b (c", 'R', true},
		{"77 (keepalived)", "", 0, false},
		{"77 keepalived S", "", 0, false},
		{"", "", 0, false},
	} {
		comm, state, ok := parseStat([]byte(tc.line))
		if comm != tc.comm || state != tc.state || ok != tc.ok {
			t.Errorf("parseStat(%q) = %q, %q, %v; want %q, %q, %v", tc.line, comm, state, ok, tc.comm, tc.state, tc.ok)
		}
	}
}

// A keepalived that has exited is no keepalived, whether its parent has
// reaped it yet or not (the watcher asks at either moment).
func TestIsKeepalivedAfterExit(t *testing.T) {
	ka := startHUPProof(t)
	if !isKeepalived(ka.Pid()) {
		t.Fatalf("the running stand-in (pid %d) is not seen as keepalived", ka.Pid())
	}
	other := testutil.StartStandIn(t, "sshd")
	if isKeepalived(other.Pid()) {
		t.Errorf("a process named sshd (pid %d) is seen as keepalived", other.Pid())
	}
	ka.Signal(t, syscall.SIGKILL)
	<-ka.Done // reaped
	if isKeepalived(ka.Pid()) {
		t.Errorf("the reaped stand-in (pid %d) is still seen as keepalived", ka.Pid())
	}
}

// An exited keepalived not reaped yet (a zombie) is no keepalived.
func TestIsKeepalivedZombie(t *testing.T) {
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		testutil.SkipUnprivileged(t, "needs /bin/sh: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "keepalived")
	if err := os.WriteFile(bin, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := os.StartProcess(bin, []string{bin, "-c", "exit 0"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Wait()
	// Wait for the exit without reaping: the process stays a zombie.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, p.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if stat, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/stat"); err != nil {
		t.Fatal(err)
	} else if _, state, _ := parseStat(stat); state != 'Z' {
		t.Fatalf("state %q, want a zombie", state)
	}
	if isKeepalived(p.Pid) {
		t.Errorf("the zombie (pid %d) is seen as keepalived", p.Pid)
	}
}
