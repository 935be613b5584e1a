package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/agent/metadata"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/daemon"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

var httpClientNoProxy = http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}

func TestApplyWritesAndReloadsOnlyOnChange(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	st := h.status()
	if st.Group != "web" || st.Member != "web-1" || st.VIP != "192.0.2.10/24" || st.ConfigHash == "" || st.LastError != "" {
		t.Fatalf("status after first apply = %+v", st)
	}
	conf, err := os.ReadFile(h.cfg.Keepalived.Config)
	if err != nil {
		t.Fatal(err)
	}
	want, err := render.Render(testMeta(1), render.Options{
		Self: "web-1", Interface: "eth0", ScriptsDir: h.cfg.Keepalived.ScriptsDir, Vipctl: h.cfg.Vipctl,
		NotifySocket: h.cfg.Socket, SpoolDir: h.cfg.SpoolDir, VersionedScripts: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(conf) != string(want.Config) || st.ConfigHash != want.Hash {
		t.Errorf("installed config differs from render's output")
	}
	if fi, _ := os.Stat(h.cfg.Keepalived.Config); fi.Mode().Perm() != render.ConfigMode {
		t.Errorf("config mode %v", fi.Mode().Perm())
	}
	for _, s := range want.Scripts {
		p := filepath.Join(want.ScriptsDir, s.Name)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != os.FileMode(s.Mode) {
			t.Errorf("script %s: %v %v", s.Name, fi, err)
		}
	}
	if n := h.ka.reloadCount(); n != 1 {
		t.Errorf("reloads after first apply = %d, want 1", n)
	}
	if h.val.calls != 1 || h.val.bad != "" {
		t.Errorf("validator calls %d (%s), want 1 on the staged files", h.val.calls, h.val.bad)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.StateDir, "stage")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging dir left behind: %v", err)
	}

	t.Run("same document again: no write, no reload", func(t *testing.T) {
		before := h.snapshot()
		h.writeMeta(metaJSON(t, testMeta(1)))
		st := h.refresh() // forced: fetched, rendered and compared again
		if st.LastError != "" || st.Revision != 1 {
			t.Fatalf("status = %+v", st)
		}
		if n := h.ka.reloadCount(); n != 1 {
			t.Errorf("reloads = %d, want still 1", n)
		}
		if after := h.snapshot(); !mapsEqual(before, after) {
			t.Error("files were rewritten although the content is the same")
		}
	})
	t.Run("changed content: written and reloaded once", func(t *testing.T) {
		m := testMeta(3)
		m.Checks = append(m.Checks, vrrp.Check{Name: "chk_proc", Kind: vrrp.CheckProcess, Process: "nginx"})
		h.writeMeta(metaJSON(t, m))
		st := h.refresh()
		if st.LastError != "" || st.Revision != 3 {
			t.Fatalf("status = %+v", st)
		}
		if n := h.ka.reloadCount(); n != 2 {
			t.Errorf("reloads = %d, want 2", n)
		}
		if _, err := os.Stat(filepath.Join(liveScriptsDir(t, h), render.CheckScriptName("chk_proc"))); err != nil {
			t.Error(err)
		}
		h.refresh()
		if n := h.ka.reloadCount(); n != 2 {
			t.Errorf("reloads after an unchanged refresh = %d, want 2", n)
		}
	})
	t.Run("a check removed: its script is removed", func(t *testing.T) {
		h.writeMeta(metaJSON(t, testMeta(4)))
		if st := h.refresh(); st.LastError != "" {
			t.Fatal(st.LastError)
		}
		if _, err := os.Stat(filepath.Join(liveScriptsDir(t, h), render.CheckScriptName("chk_proc"))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("removed check's script still referenced: %v", err)
		}
	})
	t.Run("READY once, STATUS sentence", func(t *testing.T) {
		msgs := h.sd.messages()
		ready := 0
		for _, m := range msgs {
			if m == "READY=1" {
				ready++
			}
		}
		if ready != 1 {
			t.Errorf("READY=1 sent %d times: %q", ready, msgs)
		}
		waitFor(t, "a STATUS= sentence", func() bool {
			return slices.ContainsFunc(h.sd.messages(), func(m string) bool {
				return strings.HasPrefix(m, "STATUS=UNKNOWN of web") && strings.Contains(m, "VIP 192.0.2.10/24 not on eth0, 0 unreported events")
			})
		})
		waitFor(t, "a watchdog ping", func() bool { return slices.Contains(h.sd.messages(), "WATCHDOG=1") })
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestBadMetadataChangesNothing(t *testing.T) {
	newer := strings.Replace(string(metaJSON(t, testMeta(9))), `"version": 1`, `"version": 2`, 1)
	badPrio := strings.Replace(string(metaJSON(t, testMeta(9))), `"priority": 99`, `"priority": 300`, 1)
	tests := []struct {
		name   string
		doc    string
		target error  // errors.Is target, when the class is exported
		msg    string // what status must say
	}{
		{"invalid JSON", `{"version": 1, "group": `, vrrp.ErrSyntax, "malformed metadata"},
		{"unknown field", strings.Replace(string(metaJSON(t, testMeta(9))), `"version": 1,`, `"version": 1, "vipp": "x",`, 1), vrrp.ErrSyntax, "vipp"},
		{"invalid field", badPrio, nil, "members[1].priority"},
		{"newer version", newer, vrrp.ErrUnsupportedVersion, "version 2"},
		{"self not a member", strings.ReplaceAll(string(metaJSON(t, testMeta(9))), `web-1`, `web-3`), ErrMemberUnknown, "web-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startTestAgent(t, metaJSON(t, testMeta(1)))
			waitFor(t, "first apply", func() bool { return h.status().Ready })
			before := h.snapshot()
			reloads := h.ka.reloadCount()

			h.writeMeta([]byte(tt.doc))
			st := h.refresh()
			if !strings.Contains(st.LastError, tt.msg) || st.LastErrorAt.IsZero() {
				t.Errorf("status error = %q, want it to mention %q", st.LastError, tt.msg)
			}
			if !strings.Contains(st.Sentence, "last apply failed") {
				t.Errorf("sentence %q does not say the apply failed", st.Sentence)
			}
			if st.Revision != 1 || st.Group != "web" {
				t.Errorf("status lost the last good metadata: %+v", st)
			}
			if after := h.snapshot(); !mapsEqual(before, after) {
				t.Error("files changed on disk")
			}
			if n := h.ka.reloadCount(); n != reloads {
				t.Errorf("keepalived reloaded (%d → %d)", reloads, n)
			}
			if tt.target != nil {
				err := h.apply(context.Background(), true)
				if !errors.Is(err, tt.target) {
					t.Errorf("apply error %v is not %v", err, tt.target)
				}
			}
			// Fixed metadata clears the error.
			h.writeMeta(metaJSON(t, testMeta(10)))
			if st := h.refresh(); st.LastError != "" || st.Revision != 10 {
				t.Errorf("after a good document: %+v", st)
			}
		})
	}
}

func TestConfigTestFailureKeepsFiles(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	before := h.snapshot()
	h.val.mu.Lock()
	h.val.err = errors.New("agent: keepalived --config-test failed (exit 5): Unknown keyword")
	h.val.mu.Unlock()
	m := testMeta(2)
	m.VirtualRouterID = 52
	h.writeMeta(metaJSON(t, m))
	st := h.refresh()
	if !strings.Contains(st.LastError, "config-test") {
		t.Errorf("status error = %q", st.LastError)
	}
	if !mapsEqual(before, h.snapshot()) {
		t.Error("files changed although validation failed")
	}
	if n := h.ka.reloadCount(); n != 1 {
		t.Errorf("reloads = %d, want 1", n)
	}
}

func TestReloadFailureRetried(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	h.ka.mu.Lock()
	h.ka.err = errors.New("boom")
	h.ka.mu.Unlock()
	m := testMeta(2)
	m.VirtualRouterID = 52
	h.writeMeta(metaJSON(t, m))
	if st := h.refresh(); !strings.Contains(st.LastError, "boom") {
		t.Fatalf("status error = %q", st.LastError)
	}
	h.ka.mu.Lock()
	h.ka.err = nil
	h.ka.mu.Unlock()
	// Files are already in place; the next pass must still reload.
	if st := h.refresh(); st.LastError != "" {
		t.Fatal(st.LastError)
	}
	if n := h.ka.reloadCount(); n != 2 {
		t.Errorf("reloads = %d, want 2 (first apply, retried reload)", n)
	}
}

func TestMemberAutoDetect(t *testing.T) {
	h := startTestAgent(t, nil, func(c *Config, _ *deps) { c.Member = "" })
	h.link.set("192.0.2.12/24", "2001:db8::12/64")
	h.writeMeta(metaJSON(t, testMeta(1)))
	if st := h.refresh(); st.Member != "web-2" || st.LastError != "" {
		t.Fatalf("status = %+v, want member web-2", st)
	}
	h.link.set("198.51.100.7/24")
	m := testMeta(2)
	m.VirtualRouterID = 9
	h.writeMeta(metaJSON(t, m))
	st := h.refresh()
	if !strings.Contains(st.LastError, "set member") {
		t.Errorf("status error = %q, want an auto-detect failure", st.LastError)
	}
}

func TestChecksReplace(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)), func(c *Config, _ *deps) {
		c.ChecksMode = ChecksReplace
		c.Checks = []CheckConfig{{Name: "chk_local", Kind: "exec", Command: []string{"/bin/true"}}}
	})
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	conf, _ := os.ReadFile(h.cfg.Keepalived.Config)
	if strings.Contains(string(conf), "chk_web") || !strings.Contains(string(conf), "chk_local") {
		t.Errorf("replace mode: config has the group check or lacks the local one:\n%s", conf)
	}
}

func TestNotifyRecordsTransitions(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	h.link.set("192.0.2.11/24", "192.0.2.10/24")
	h.hook("INSTANCE", "VI_web", "BACKUP", "100")
	h.hook("INSTANCE", "VI_web", "BACKUP", "100") // same role: not recorded
	h.hook("GROUP", "G", "MASTER", "100")         // sync groups: ignored
	h.hook("INSTANCE", "VI_web", "MASTER", "100")
	// A hook that ran before the last recorded event, delivered late.
	res, err := h.client.Notify(context.Background(), api.NotifyRequest{Args: []string{"INSTANCE", "VI_web", "FAULT", "100"}, At: time.Now().Add(-time.Hour)})
	if err != nil || res.Outcome != "stale" {
		t.Fatalf("late notify: %+v %v, want outcome stale", res, err)
	}
	hist := h.history()
	if len(hist) != 2 {
		t.Fatalf("history = %+v, want BACKUP then MASTER", hist)
	}
	b, m := hist[0], hist[1]
	if b.From != vrrp.RoleUnknown || b.To != vrrp.RoleBackup || m.From != vrrp.RoleBackup || m.To != vrrp.RoleMaster {
		t.Errorf("roles: %+v %+v", b, m)
	}
	if m.Seq != b.Seq+1 || m.Group != "web" || m.Member != "web-1" || m.Instance != "VI_web" || m.Priority != 100 || m.Source != SourceNotify || !m.VIPPresent || m.At.IsZero() {
		t.Errorf("MASTER transition = %+v", m)
	}
	st := h.status()
	if st.Role != vrrp.RoleMaster || !st.Since.Equal(m.At) || !st.VIPPresent {
		t.Errorf("status = %+v", st)
	}
	if !strings.HasPrefix(st.Sentence, "MASTER of web since ") || !strings.Contains(st.Sentence, "VIP 192.0.2.10/24 on eth0, 0 unreported events") {
		t.Errorf("sentence = %q", st.Sentence)
	}

	t.Run("clock stepped back: events still recorded", func(t *testing.T) {
		h.mu.Lock()
		h.lastAt = time.Now().Add(time.Hour) // the last transition now lies in the future
		h.mu.Unlock()
		res, err := h.client.Notify(context.Background(), api.NotifyRequest{Args: []string{"INSTANCE", "VI_web", "FAULT", "100"}, At: time.Now()})
		if err != nil || res.Outcome != "recorded" {
			t.Errorf("notify after a clock step: %+v %v, want recorded", res, err)
		}
		h.hook("INSTANCE", "VI_web", "MASTER", "100")
	})
	t.Run("bad arguments are refused", func(t *testing.T) {
		_, err := h.client.Notify(context.Background(), api.NotifyRequest{Args: []string{"INSTANCE", "VI_web", "LEADER", "1"}})
		if !errors.Is(err, control.ErrRejected) {
			t.Errorf("err = %v, want a 4xx", err)
		}
	})
	t.Run("history and role survive a restart", func(t *testing.T) {
		h.restart()
		if st := h.status(); st.Role != vrrp.RoleMaster || st.Member != "web-1" || st.Group != "web" {
			t.Errorf("status after restart = %+v", st)
		}
		h.hook("INSTANCE", "VI_web", "BACKUP", "100")
		hist := h.history()
		if len(hist) != 5 || hist[4].Seq != m.Seq+3 || hist[4].From != vrrp.RoleMaster {
			t.Errorf("history after restart = %+v", hist)
		}
	})
}

func TestSpoolDrainedAtStart(t *testing.T) {
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	base := time.Now().Add(-time.Minute)
	var files []string
	for i, s := range []string{"BACKUP", "MASTER", "BACKUP"} {
		p, err := control.SpoolWrite(spool, api.NotifyRequest{Args: []string{"INSTANCE", "VI_web", s, "100"}, At: base.Add(time.Duration(i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	garbage := filepath.Join(spool, "00000000000000000001-1-x.notify.json")
	os.WriteFile(garbage, []byte("not json"), 0o600)

	h := startTestAgent(t, metaJSON(t, testMeta(1)), func(c *Config, _ *deps) { c.SpoolDir = spool })
	hist := h.history()
	var roles []vrrp.Role
	for _, tr := range hist {
		roles = append(roles, tr.To)
	}
	if !slices.Equal(roles, []vrrp.Role{vrrp.RoleBackup, vrrp.RoleMaster, vrrp.RoleBackup}) {
		t.Fatalf("recorded %v, want the spool in order", roles)
	}
	for i, tr := range hist {
		if !tr.At.Equal(base.Add(time.Duration(i) * time.Second)) {
			t.Errorf("transition %d at %v, want the hook's time", i, tr.At)
		}
	}
	for _, f := range files {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed after recording", f)
		}
	}
	if _, err := os.Stat(garbage + ".invalid"); err != nil {
		t.Errorf("invalid spool file not set aside: %v", err)
	}
}

func TestSpoolRecordedButNotDeleted(t *testing.T) {
	// A crash after recording a spooled event but before deleting its
	// file must not record the event twice.
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	p, err := control.SpoolWrite(h.cfg.SpoolDir, api.NotifyRequest{Args: []string{"INSTANCE", "VI_web", "MASTER", "100"}, At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	req, n, _ := control.DecodeNotify(data)
	if _, outcome, err := h.notify(req, n, filepath.Base(p)); err != nil || outcome != notifyRecorded {
		t.Fatalf("first record: %v %v", outcome, err)
	}
	// Pretend the role moved on, so that only the spool key prevents a duplicate.
	h.mu.Lock()
	h.role = vrrp.RoleBackup
	h.mu.Unlock()
	h.drainSpool()
	if hist := h.history(); len(hist) != 1 {
		t.Errorf("history = %+v, want the event once", hist)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Error("spool file not removed")
	}
}

func TestReconcileStaleVIP(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	h.link.set("192.0.2.11/24", "192.0.2.10/24")
	h.hook("INSTANCE", "VI_web", "MASTER", "100")
	h.ka.setRunning(false) // keepalived killed: the VIP stays behind
	waitFor(t, "STOP recorded", func() bool { return h.status().Role == vrrp.RoleStop })
	if got := h.link.removedAddrs(); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("192.0.2.10")}) {
		t.Errorf("removed %v, want the VIP", got)
	}
	hist := h.history()
	last := hist[len(hist)-1]
	if last.From != vrrp.RoleMaster || last.To != vrrp.RoleStop || last.VIPPresent || last.Source != SourceReconcile ||
		!strings.Contains(last.Note, "keepalived is not running; removed the stale VIP 192.0.2.10/24 from eth0") {
		t.Errorf("transition = %+v", last)
	}
	if st := h.status(); st.VIPPresent || st.Keepalived {
		t.Errorf("status = %+v", st)
	}
}

func TestReconcileKeepalivedStoppedWithoutVIP(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	h.hook("INSTANCE", "VI_web", "BACKUP", "99")
	h.ka.setRunning(false)
	waitFor(t, "STOP recorded", func() bool { return h.status().Role == vrrp.RoleStop })
	hist := h.history()
	if last := hist[len(hist)-1]; last.Note != "keepalived is not running" || len(h.link.removedAddrs()) != 0 {
		t.Errorf("transition = %+v, removed %v", last, h.link.removedAddrs())
	}
	// Once STOP is recorded, nothing more is.
	n := len(hist)
	h.reconcile(context.Background())
	h.reconcile(context.Background())
	if len(h.history()) != n {
		t.Error("STOP recorded again")
	}
}

func TestReconcileMasterWithoutVIP(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)), shortGrace)
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	h.hook("INSTANCE", "VI_web", "MASTER", "100") // but the VIP is not on eth0
	waitFor(t, "the mismatch recorded", func() bool { return len(h.history()) == 2 })
	hist := h.history()
	last := hist[1]
	if last.From != vrrp.RoleMaster || last.To != vrrp.RoleMaster || last.VIPPresent || last.Source != SourceNetlink ||
		!strings.Contains(last.Note, "MASTER without the VIP 192.0.2.10/24 on eth0") {
		t.Errorf("transition = %+v", last)
	}
	if st := h.status(); !strings.Contains(st.Sentence, "VIP 192.0.2.10/24 missing from eth0") {
		t.Errorf("sentence = %q", st.Sentence)
	}
	// Recorded once, not on every reconcile.
	h.reconcile(context.Background())
	if len(h.history()) != 2 {
		t.Error("mismatch recorded twice")
	}

	t.Run("VIP without MASTER", func(t *testing.T) {
		h.hook("INSTANCE", "VI_web", "BACKUP", "100")
		h.link.set("192.0.2.11/24", "192.0.2.10/24")
		waitFor(t, "MASTER from netlink", func() bool { return h.status().Role == vrrp.RoleMaster })
		hist := h.history()
		last := hist[len(hist)-1]
		if last.From != vrrp.RoleBackup || last.Source != SourceNetlink || !last.VIPPresent || !strings.Contains(last.Note, "without a MASTER notify") {
			t.Errorf("transition = %+v", last)
		}
	})
}

// claimServer is a fake hostsync claims endpoint.
type claimServer struct {
	mu     sync.Mutex
	down   bool
	seen   map[uint64]int
	order  []uint64
	member string
}

func (s *claimServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path != api.PathClaims || r.Method != http.MethodPost {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if s.down {
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(api.Error{Error: "hostsync: not ready"})
		return
	}
	body, _ := io.ReadAll(r.Body)
	var c api.Claim
	if err := json.Unmarshal(body, &c); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.member = c.Transition.Member
	s.seen[c.Transition.Seq]++
	dup := s.seen[c.Transition.Seq] > 1
	if !dup {
		s.order = append(s.order, c.Transition.Seq)
	}
	json.NewEncoder(w).Encode(api.ClaimResult{Accepted: true, Duplicate: dup})
}

func (s *claimServer) setDown(d bool) {
	s.mu.Lock()
	s.down = d
	s.mu.Unlock()
}

func TestOutboxDeliversExactlyOnceAfterOutage(t *testing.T) {
	cs := &claimServer{seen: map[uint64]int{}, down: true}
	srv := httptest.NewServer(cs)
	defer srv.Close()
	h := startTestAgent(t, metaJSON(t, testMeta(1)), func(c *Config, _ *deps) {
		c.Report.URL = srv.URL + api.PathClaims
	})
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	roles := []string{"BACKUP", "MASTER", "BACKUP", "MASTER", "FAULT", "BACKUP"}
	for _, r := range roles {
		h.hook("INSTANCE", "VI_web", r, "100")
	}
	waitFor(t, "the report error in status", func() bool { return strings.Contains(h.status().ReportError, "503") })
	if st := h.status(); st.Unreported != len(roles) {
		t.Fatalf("unreported = %d, want %d", st.Unreported, len(roles))
	}
	// The outage outlives an agent restart.
	h.restart()
	if st := h.status(); st.Unreported != len(roles) {
		t.Fatalf("unreported after restart = %d, want %d", st.Unreported, len(roles))
	}
	cs.setDown(false)
	waitFor(t, "the outbox to drain", func() bool { return h.status().Unreported == 0 })
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !slices.Equal(cs.order, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Errorf("delivered %v, want 1..6 in order", cs.order)
	}
	for seq, n := range cs.seen {
		if n != 1 {
			t.Errorf("seq %d delivered %d times", seq, n)
		}
	}
	if cs.member != "web-1" {
		t.Errorf("claims carry member %q", cs.member)
	}
	if st := h.status(); st.ReportError != "" {
		t.Errorf("report error not cleared: %q", st.ReportError)
	}
}

func TestHTTPSourceETag(t *testing.T) {
	var mu sync.Mutex
	doc := metaJSON(t, testMeta(1))
	etag := `"1"`
	var gets, notModified int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		gets++
		if r.Header.Get("If-None-Match") == etag {
			notModified++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Write(doc)
	}))
	defer srv.Close()
	h := startTestAgent(t, nil, func(c *Config, d *deps) {
		c.Metadata.File = ""
		c.Metadata.URL = srv.URL + api.PathMetadata
		d.source = &metadata.HTTPSource{URL: c.Metadata.URL, Client: &httpClientNoProxy}
	})
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	if err := h.apply(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if notModified != 1 {
		t.Errorf("304 answers = %d, want 1 (If-None-Match sent)", notModified)
	}
	m := testMeta(2)
	m.VirtualRouterID = 77
	doc, etag = metaJSON(t, m), `"2"`
	mu.Unlock()
	if err := h.apply(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if st := h.status(); st.Revision != 2 || h.ka.reloadCount() != 2 {
		t.Errorf("after a new ETag: revision %d reloads %d", st.Revision, h.ka.reloadCount())
	}
	if got := h.cfg.ReportURL(); got != srv.URL+api.PathClaims {
		t.Errorf("ReportURL = %q", got)
	}
}

// TestMetadataTooLargeInStatus: a document over the size limit shows in
// the agent's status as too large, not as "unexpected end of JSON input".
func TestMetadataTooLargeInStatus(t *testing.T) {
	big := `{"version": 1, "pad": "` + strings.Repeat("x", vrrp.MaxDocumentSize) + `"}`
	h := startTestAgent(t, []byte(big))
	waitFor(t, "the error in status", func() bool { return h.status().LastError != "" })
	if st := h.status(); !strings.Contains(st.LastError, "too large") || strings.Contains(st.LastError, "unexpected end of JSON") {
		t.Errorf("status error %q", st.LastError)
	}
}

func TestStatusSentence(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 30, 0, 0, time.Local)
	since := time.Date(2025, 3, 1, 12, 4, 5, 0, time.Local)
	tests := []struct {
		name string
		st   api.AgentStatus
		want string
	}{
		{"master", api.AgentStatus{Group: "nginx", Role: vrrp.RoleMaster, Since: since, VIP: "192.0.2.10/24", Interface: "eth0", VIPPresent: true},
			"MASTER of nginx since 12:04:05, VIP 192.0.2.10/24 on eth0, 0 unreported events"},
		{"backup one event", api.AgentStatus{Group: "nginx", Role: vrrp.RoleBackup, Since: since, VIP: "192.0.2.10/24", Interface: "eth0", Unreported: 1},
			"BACKUP of nginx since 12:04:05, VIP 192.0.2.10/24 not on eth0, 1 unreported event"},
		{"older day", api.AgentStatus{Group: "nginx", Role: vrrp.RoleBackup, Since: since.AddDate(0, 0, -1), VIP: "192.0.2.10/24", Interface: "eth0"},
			"BACKUP of nginx since 2025-02-28 12:04:05, VIP 192.0.2.10/24 not on eth0, 0 unreported events"},
		{"backup still holding", api.AgentStatus{Group: "nginx", Role: vrrp.RoleBackup, Since: since, VIP: "192.0.2.10/24", Interface: "eth0", VIPPresent: true},
			"BACKUP of nginx since 12:04:05, VIP 192.0.2.10/24 still on eth0, 0 unreported events"},
		{"waiting", api.AgentStatus{}, "waiting for metadata"},
		{"no metadata", api.AgentStatus{LastError: "x"}, "no metadata yet: x"},
		{"errors", api.AgentStatus{Group: "g", Role: vrrp.RoleMaster, VIP: "192.0.2.10/24", Interface: "eth0", LastError: "bad", ReportError: "503"},
			"MASTER of g, VIP 192.0.2.10/24 missing from eth0, 0 unreported events; last apply failed: bad; report failing: 503"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sentence(tt.st, now); got != tt.want {
				t.Errorf("sentence = %q\n                want %q", got, tt.want)
			}
		})
	}
}

func TestControlSocketRefusesSecondAgent(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	if _, err := listenControl(h.cfg.Socket); !errors.Is(err, daemon.ErrSocketInUse) {
		t.Errorf("second listen: %v", err)
	}
	// A stale socket file (agent gone) is replaced.
	h.stop()
	stale, err := net.Listen("unix", h.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(h.cfg.Socket); err != nil {
		t.Fatal(err)
	}
	ln, err := listenControl(h.cfg.Socket)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()
}
