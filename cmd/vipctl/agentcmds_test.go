package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// fakeAgent serves the agent's control socket and records notify requests.
type fakeAgent struct {
	mu       sync.Mutex
	notifies []api.NotifyRequest
	code     int // answer to notify; 0 means 200
	status   api.AgentStatus
	history  []vrrp.Transition
}

func startFakeAgent(t *testing.T) (*fakeAgent, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAgent{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathAgentNotify, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		var req api.NotifyRequest
		json.NewDecoder(r.Body).Decode(&req)
		f.notifies = append(f.notifies, req)
		if f.code != 0 {
			w.WriteHeader(f.code)
			json.NewEncoder(w).Encode(api.Error{Error: "agent: failing for the test"})
			return
		}
		json.NewEncoder(w).Encode(api.NotifyResult{Outcome: "recorded"})
	})
	mux.HandleFunc("GET "+api.PathAgentStatus, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(f.status)
	})
	mux.HandleFunc("GET "+api.PathAgentHistory, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(f.history)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f, sock
}

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestNotify(t *testing.T) {
	t.Run("bad arguments: exit 2, one line, nothing spooled", func(t *testing.T) {
		spool := filepath.Join(t.TempDir(), "spool")
		for _, args := range [][]string{
			{"INSTANCE", "VI_web", "LEADER", "100"},
			{"INSTANCE", "VI_web", "MASTER"},
			{"SOMETHING", "VI_web", "MASTER", "100"},
			{"INSTANCE", "VI web", "MASTER", "100"},
			{"INSTANCE", "VI_web", "MASTER", "256"},
		} {
			code, _, stderr := runCmd(append([]string{"notify", "--socket", "/nonexistent/agent.sock", "--spool", spool}, args...)...)
			if code != exitUsage {
				t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "vipctl notify: vrrp: notify") {
				t.Errorf("%q: stderr %q, want one clear line", args, stderr)
			}
			if _, err := os.Stat(spool); !os.IsNotExist(err) {
				t.Errorf("%q: spool dir created", args)
			}
		}
	})
	t.Run("agent up: handed over", func(t *testing.T) {
		f, sock := startFakeAgent(t)
		spool := filepath.Join(t.TempDir(), "spool")
		before := time.Now()
		code, _, stderr := runCmd("notify", "--socket", sock, "--spool", spool, "INSTANCE", "VI_web", "MASTER", "100")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.notifies) != 1 || strings.Join(f.notifies[0].Args, " ") != "INSTANCE VI_web MASTER 100" || f.notifies[0].At.Before(before) {
			t.Errorf("agent got %+v", f.notifies)
		}
		if names, _ := control.SpoolList(spool); len(names) != 0 {
			t.Errorf("spooled %v although the agent took the event", names)
		}
	})
	for _, tt := range []struct {
		name string
		sock func(t *testing.T) string
	}{
		{"agent down: spooled", func(t *testing.T) string { return filepath.Join(t.TempDir(), "none.sock") }},
		{"agent failing: spooled", func(t *testing.T) string {
			f, sock := startFakeAgent(t)
			f.code = http.StatusInternalServerError
			return sock
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spool := filepath.Join(t.TempDir(), "spool")
			start := time.Now()
			code, _, stderr := runCmd("notify", "--socket", tt.sock(t), "--spool", spool, "INSTANCE", "VI_web", "BACKUP", "99")
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if d := time.Since(start); d > notifyTimeout {
				t.Errorf("took %s, longer than the notify timeout", d)
			}
			names, err := control.SpoolList(spool)
			if err != nil || len(names) != 1 {
				t.Fatalf("spool = %v %v, want one event", names, err)
			}
			p := filepath.Join(spool, names[0])
			fi, _ := os.Stat(p)
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("spool file mode %v, want 0600", fi.Mode().Perm())
			}
			data, _ := os.ReadFile(p)
			req, n, err := control.DecodeNotify(data)
			if err != nil || n.State != vrrp.RoleBackup || n.Priority != 99 || req.At.Before(start) {
				t.Errorf("spooled %+v %+v %v", req, n, err)
			}
		})
	}
}

func TestStatusAndHistory(t *testing.T) {
	f, sock := startFakeAgent(t)
	since := time.Date(2025, 3, 1, 12, 4, 5, 0, time.UTC)
	f.status = api.AgentStatus{
		Group: "nginx", Member: "nginx-master", Role: vrrp.RoleMaster, Since: since, VIP: "192.0.2.10/24",
		Interface: "eth0", VIPPresent: true, Revision: 3, ConfigHash: "0123456789abcdef",
		LastError: "metadata from file:/m.json: vrrp: members[1].priority: 300 is out of range", LastErrorAt: since,
		Sentence: "MASTER of nginx since 12:04:05, VIP 192.0.2.10/24 on eth0, 0 unreported events; last apply failed: x",
	}
	f.history = []vrrp.Transition{
		{Seq: 1, Group: "nginx", Member: "nginx-master", From: vrrp.RoleUnknown, To: vrrp.RoleBackup, Priority: 100, At: since, Source: "notify"},
		{Seq: 2, Group: "nginx", Member: "nginx-master", From: vrrp.RoleBackup, To: vrrp.RoleMaster, Priority: 100, At: since.Add(time.Second), Source: "notify", VIPPresent: true},
	}
	t.Run("status table", func(t *testing.T) {
		code, out, stderr := runCmd("status", "--socket", sock)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"GROUP", "nginx", "ROLE", "MASTER", "192.0.2.10/24 on eth0", "0123456789ab", "members[1].priority: 300 is out of range", f.status.Sentence} {
			if !strings.Contains(out, want) {
				t.Errorf("status output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("status json", func(t *testing.T) {
		code, out, _ := runCmd("status", "--socket", sock, "--json")
		var st api.AgentStatus
		if code != exitOK || json.Unmarshal([]byte(out), &st) != nil || st.LastError != f.status.LastError || st.Role != vrrp.RoleMaster {
			t.Errorf("exit %d, output %s", code, out)
		}
	})
	t.Run("history", func(t *testing.T) {
		code, out, _ := runCmd("history", "--socket", sock)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != exitOK || len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ") || !strings.Contains(lines[2], "BACKUP") || !strings.Contains(lines[2], "MASTER") || !strings.Contains(lines[2], "present") {
			t.Errorf("exit %d, output:\n%s", code, out)
		}
		code, out, _ = runCmd("history", "--socket", sock, "--json")
		var h []vrrp.Transition
		if code != exitOK || json.Unmarshal([]byte(out), &h) != nil || len(h) != 2 {
			t.Errorf("json: exit %d, output %s", code, out)
		}
	})
	t.Run("agent down", func(t *testing.T) {
		code, _, stderr := runCmd("status", "--socket", filepath.Join(t.TempDir(), "none.sock"))
		if code != exitFailure || !strings.Contains(stderr, "agent unreachable") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		if code, _, _ := runCmd("history", "--limit", "0"); code != exitUsage {
			t.Errorf("--limit 0: exit %d", code)
		}
		if code, _, _ := runCmd("status", "extra"); code != exitUsage {
			t.Errorf("extra arg: exit %d", code)
		}
	})
}

// TestStatusShowsReportsNotTaken: vipctl status shows hostsync's answers
// to the last reports, and says when one was not taken (issue 11, defect
// 2: a duplicate answer used to leave "UNREPORTED 0" and nothing else).
func TestStatusShowsReportsNotTaken(t *testing.T) {
	f, sock := startFakeAgent(t)
	at := time.Date(2025, 3, 1, 12, 4, 5, 0, time.UTC)
	f.status = api.AgentStatus{
		Group: "nginx", Member: "nginx-slave", Role: vrrp.RoleMaster, Epoch: "0123456789abcdef", Sentence: "MASTER of nginx",
		Reports: []api.ReportOutcome{
			{Seq: 6, To: vrrp.RoleBackup, At: at, Result: api.ReportAccepted, Owner: "nginx-master"},
			{Seq: 7, To: vrrp.RoleMaster, At: at, Result: api.ReportDuplicate, Owner: "nginx-master"},
			{Seq: 8, To: vrrp.RoleMaster, At: at, Result: api.ReportNotAccepted, Owner: "nginx-master", Message: "split brain: nginx-master also claims MASTER"},
		},
	}
	code, out, stderr := runCmd("status", "--socket", sock)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"EPOCH", "0123456789abcdef", "REPORT 6", "accepted", "REPORT 7", "duplicate", "REPORT 8", "not accepted",
		"split brain: nginx-master also claims MASTER", "hostsync did not take 2 of the last 3 reports"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}
