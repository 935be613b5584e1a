package check

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// fakeBus is a system bus connection that answers a restart job with result.
type fakeBus struct {
	mu     sync.Mutex
	calls  [][2]string // unit, mode
	err    error
	result string
	closed bool
}

func (b *fakeBus) RestartUnitContext(_ context.Context, name, mode string, ch chan<- string) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, [2]string{name, mode})
	if b.err != nil {
		return 0, b.err
	}
	ch <- b.result
	return 1, nil
}

func (b *fakeBus) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// recordingSystemctl is a fallback command that writes its arguments to a
// file, run through sh so that no file in the temp dir is executed.
func recordingSystemctl(t *testing.T, exitCode string) ([]string, string) {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		testutil.SkipUnprivileged(t, "no sh")
	}
	out := filepath.Join(t.TempDir(), "args")
	return []string{sh, "-c", `printf '%s\n' "$@" > "$0"; echo systemctl said no >&2; exit ` + exitCode, out}, out
}

func TestSystemdOverBus(t *testing.T) {
	tests := []struct {
		name    string
		bus     *fakeBus
		wantErr string
	}{
		{"job done", &fakeBus{result: "done"}, ""},
		{"job failed", &fakeBus{result: "failed"}, "systemd job failed"},
		{"call refused", &fakeBus{err: errors.New("Unit nginx.service not found.")}, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, argsFile := recordingSystemctl(t, "0")
			s := &Systemd{
				Systemctl: argv,
				Log:       testLogger(t),
				dial:      func(context.Context) (busConn, error) { return tt.bus, nil },
			}
			err := s.RestartUnit(context.Background(), "nginx.service")
			if tt.wantErr == "" && err != nil {
				t.Fatalf("RestartUnit: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("RestartUnit error %v, want one containing %q", err, tt.wantErr)
			}
			if len(tt.bus.calls) != 1 || tt.bus.calls[0] != [2]string{"nginx.service", "replace"} {
				t.Errorf("bus calls %v, want one RestartUnit(nginx.service, replace)", tt.bus.calls)
			}
			if !tt.bus.closed {
				t.Error("bus connection not closed")
			}
			if _, err := os.Stat(argsFile); !os.IsNotExist(err) {
				t.Error("systemctl ran although the bus was reachable")
			}
		})
	}
}

func TestSystemdFallsBackToSystemctl(t *testing.T) {
	noBus := func(context.Context) (busConn, error) {
		return nil, errors.New("dial unix /run/dbus/system_bus_socket: connect: no such file or directory")
	}
	t.Run("success", func(t *testing.T) {
		argv, argsFile := recordingSystemctl(t, "0")
		s := &Systemd{Systemctl: argv, Log: testLogger(t), dial: noBus}
		if err := s.RestartUnit(context.Background(), "nginx.service"); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(argsFile)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "restart\nnginx.service\n" {
			t.Errorf("systemctl arguments %q, want restart nginx.service", got)
		}
	})
	t.Run("failure carries its output", func(t *testing.T) {
		argv, _ := recordingSystemctl(t, "5")
		s := &Systemd{Systemctl: argv, dial: noBus}
		err := s.RestartUnit(context.Background(), "nginx.service")
		if err == nil || !strings.Contains(err.Error(), "systemctl said no") {
			t.Fatalf("error %v, want systemctl's output", err)
		}
	})
}
