package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// TestCheckBackstop: with --agent-socket, vipctl check exits 0 without
// probing while the agent answers, and probes (here a command that fails
// and leaves a mark) when the agent is gone, hung or failing.
func TestCheckBackstop(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	_, live := startFakeAgent(t)

	// A socket that accepts connections (the kernel's backlog) but never
	// answers: a SIGSTOPped or hung agent.
	hung := filepath.Join(t.TempDir(), "hung.sock")
	ln, err := net.Listen("unix", hung)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	failing := filepath.Join(t.TempDir(), "failing.sock")
	fln, err := net.Listen("unix", failing)
	if err != nil {
		t.Fatal(err)
	}
	fsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"error":"agent: state database closed"}`))
	})}
	go fsrv.Serve(fln)
	t.Cleanup(func() { fsrv.Close() })

	tests := []struct {
		name   string
		socket string
		probed bool
	}{
		{"agent answers", live, false},
		{"no agent", filepath.Join(t.TempDir(), "absent.sock"), true},
		{"agent hung", hung, true},
		{"agent failing", failing, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mark := filepath.Join(t.TempDir(), "probed")
			code, _, stderr := vipctl(t, "check", "exec", "--agent-socket", tt.socket, "--timeout", "5", "--",
				sh, "-c", `touch "$1"; echo service down >&2; exit 1`, "sh", mark)
			_, statErr := os.Stat(mark)
			if probed := statErr == nil; probed != tt.probed {
				t.Errorf("probed %v, want %v", probed, tt.probed)
			}
			wantCode := exitOK
			if tt.probed {
				wantCode = exitFailure
			}
			if code != wantCode {
				t.Errorf("exit %d, want %d; stderr %q", code, wantCode, stderr)
			}
			if tt.probed && !strings.Contains(stderr, "service down") {
				t.Errorf("stderr %q does not carry the probe's reason", stderr)
			}
		})
	}

	t.Run("bad usage is refused before asking the agent", func(t *testing.T) {
		code, _, stderr := vipctl(t, "check", "process", "--name", "a b", "--agent-socket", live)
		if code != exitUsage || !strings.Contains(stderr, "check.process") {
			t.Errorf("exit %d stderr %q, want %d naming the field", code, stderr, exitUsage)
		}
	})
}

// TestStatusShowsChecks: vipctl status prints each check the agent runs
// with its state, since when and the reason of the last failure.
func TestStatusShowsChecks(t *testing.T) {
	f, sock := startFakeAgent(t)
	since := time.Date(2025, 3, 1, 12, 4, 5, 0, time.UTC)
	f.status = api.AgentStatus{Group: "web", Member: "web-1", Role: vrrp.RoleFault, Checks: []api.CheckStatus{
		{Name: "nginx", Kind: "http", OnFailure: "resign", State: api.CheckFailing, Since: since, Reason: "GET http://127.0.0.1/: connection refused"},
		{Name: "port", Kind: "tcp", OnFailure: "resign", State: api.CheckHealthy, Since: since},
	}}
	code, stdout, stderr := vipctl(t, "status", "--socket", sock)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"CHECK nginx", "failing since " + fmtTime(since) + " (http, on_failure resign): GET http://127.0.0.1/: connection refused",
		"CHECK port", "healthy since " + fmtTime(since) + " (tcp, on_failure resign)\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, stdout)
		}
	}
}
