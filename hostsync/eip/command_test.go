package eip

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// writeHook writes an executable shell script into a temp dir.
func writeHook(t *testing.T, body string) string {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		testutil.SkipUnprivileged(t, "needs /bin/sh for the hook scripts")
	}
	path := filepath.Join(t.TempDir(), "hook")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCommandApply(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	hook := writeHook(t, `cat > "$1/stdin"; printf '%s|' "$@" > "$1/args"; env > "$1/env"; echo applied`+"\n")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := NewCommand(CommandOptions{Path: hook, Args: []string{out, "--flag", "two words"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		mappings []Mapping
		want     string
	}{
		{"empty set is an empty array", nil, "[]\n"},
		{"mappings as JSON", []Mapping{
			{Group: "nginx", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10"), Owner: "nginx-master",
				OwnerMAC: "52:54:00:00:02:0b", OwnerHost: "host-a", NextHop: addr("198.51.100.20")},
			{Group: `x"; rm -rf /`, EIP: addr("203.0.113.6"), VIP: addr("192.0.2.20")},
		}, `[{"group":"nginx","eip":"203.0.113.5","vip":"192.0.2.10","owner":"nginx-master",` +
			`"owner_mac":"52:54:00:00:02:0b","owner_host":"host-a","next_hop":"198.51.100.20"},` +
			`{"group":"x\"; rm -rf /","eip":"203.0.113.6","vip":"192.0.2.20"}]` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.Apply(t.Context(), tc.mappings); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			got, err := os.ReadFile(filepath.Join(out, "stdin"))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("stdin (-want +got):\n%s", diff)
			}
			var back []Mapping
			if err := json.Unmarshal(got, &back); err != nil || len(back) != len(tc.mappings) {
				t.Errorf("stdin does not decode back into %d mappings: %v", len(tc.mappings), err)
			}
			args, _ := os.ReadFile(filepath.Join(out, "args"))
			if want := out + "|--flag|two words|"; string(args) != want {
				t.Errorf("args = %q, want %q", args, want)
			}
			env, _ := os.ReadFile(filepath.Join(out, "env"))
			for line := range strings.Lines(string(env)) {
				if k, _, _ := strings.Cut(line, "="); k != "PATH" && k != "PWD" && k != "SHLVL" && k != "_" {
					t.Errorf("hook environment has %q; want only PATH (and the shell's own)", strings.TrimSpace(line))
				}
			}
		})
	}
}

func TestCommandExitError(t *testing.T) {
	hook := writeHook(t, "cat >/dev/null; echo 'gateway refused 203.0.113.5' >&2; exit 3\n")
	c, err := NewCommand(CommandOptions{Path: hook, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Apply(t.Context(), []Mapping{{Group: "g", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10")}})
	var xe *ExitError
	if !errors.As(err, &xe) {
		t.Fatalf("Apply = %v, want *ExitError", err)
	}
	if xe.Code != 3 || xe.Stderr != "gateway refused 203.0.113.5" || xe.Path != hook {
		t.Errorf("ExitError = %+v, want code 3 with the hook's stderr", xe)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("ExitError does not unwrap to *exec.ExitError")
	}
}

func TestCommandStderrBounded(t *testing.T) {
	hook := writeHook(t, "cat >/dev/null; i=0; while [ $i -lt 2000 ]; do echo 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' >&2; i=$((i+1)); done; exit 1\n")
	c, err := NewCommand(CommandOptions{Path: hook})
	if err != nil {
		t.Fatal(err)
	}
	var xe *ExitError
	if err := c.Apply(t.Context(), nil); !errors.As(err, &xe) {
		t.Fatalf("Apply = %v, want *ExitError", err)
	}
	if len(xe.Stderr) > maxOutput+len("... (truncated)") || !strings.HasSuffix(xe.Stderr, "(truncated)") {
		t.Errorf("stderr kept %d bytes, want at most %d and a truncation mark", len(xe.Stderr), maxOutput)
	}
}

func TestCommandTimeoutKillsGroup(t *testing.T) {
	// The hook leaves a grandchild holding stdout: the timeout must kill
	// the whole group, or Apply would wait for the grandchild.
	hook := writeHook(t, "sleep 300 & sleep 300\n")
	c, err := NewCommand(CommandOptions{Path: hook, Timeout: 200 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Apply(t.Context(), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Apply = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("Apply took %s after a 200ms timeout", took)
	}
}

func TestCommandCancelled(t *testing.T) {
	hook := writeHook(t, "exit 0\n")
	c, err := NewCommand(CommandOptions{Path: hook})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Apply(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply = %v, want context.Canceled", err)
	}
}

func TestNewCommandOptions(t *testing.T) {
	for _, o := range []CommandOptions{
		{},
		{Path: "hook.sh"},
		{Path: "./bin/hook"},
		{Path: "/usr/local/bin/hook", Timeout: -time.Second},
	} {
		if _, err := NewCommand(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("NewCommand(%+v) = %v, want ErrInvalidOptions", o, err)
		}
	}
	if _, err := NewCommand(CommandOptions{Path: "/usr/local/bin/hook"}); err != nil {
		t.Errorf("NewCommand(absolute path) = %v", err)
	}
}
