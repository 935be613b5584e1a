package agent

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/internal/fsutil"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// trackIn puts the agent's track directory under dir.
func trackIn(dir string) harnessOpt {
	return func(c *Config, _ *deps) { c.TrackDir = dir }
}

// resignMeta is testMeta with a resign check probing addr every 100 ms
// (and the weighted check of testMeta, which keepalived runs).
func resignMeta(rev uint64, addr string) *vrrp.Metadata {
	m := testMeta(rev)
	m.Checks = append(m.Checks, vrrp.Check{
		Name: "chk_port", Kind: vrrp.CheckTCP, Address: addr, Interval: 100, OnFailure: vrrp.OnFailureResign,
	})
	return m
}

func checkOf(st api.AgentStatus, name string) (api.CheckStatus, bool) {
	for _, c := range st.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return api.CheckStatus{}, false
}

// TestAgentRunsResignChecks: the agent runs the group's resign checks
// (not the weighted one, which keepalived runs): each track file exists
// when keepalived.conf referring to it is installed, saying "1" for a
// service not seen healthy; the verdicts show in status; a FAULT is
// recorded naming the failing check; a clean stop writes "1".
func TestAgentRunsResignChecks(t *testing.T) {
	ln := testutil.AcceptingListener(t)
	track := filepath.Join(t.TempDir(), "track")
	trackFile := render.TrackFile(track, "chk_port")
	// chk_flag's service is up once its flag file exists: down at first.
	flag := filepath.Join(t.TempDir(), "up")
	flagFile := render.TrackFile(track, "chk_flag")
	m := resignMeta(1, ln.Addr().String())
	m.Checks = append(m.Checks, vrrp.Check{
		Name: "chk_flag", Kind: vrrp.CheckExec, Command: []string{"/usr/bin/test", "-e", flag}, Interval: 100,
	})

	// What the track files said when keepalived.conf was written.
	var mu sync.Mutex
	var atInstall []string
	var confPath string
	seeInstall := func(c *Config, d *deps) {
		d.writeFile = func(path string, data []byte, mode os.FileMode) error {
			if path == confPath {
				mu.Lock()
				for _, f := range []string{flagFile, trackFile} {
					b, err := os.ReadFile(f)
					if err != nil {
						atInstall = append(atInstall, "missing: "+err.Error())
					} else {
						atInstall = append(atInstall, string(b))
					}
				}
				mu.Unlock()
			}
			return fsutil.WriteAtomic(path, data, mode)
		}
	}
	h := startTestAgent(t, metaJSON(t, m), trackIn(track), func(c *Config, d *deps) {
		confPath = c.Keepalived.Config
		seeInstall(c, d)
	})
	st := h.refresh()
	if st.LastError != "" {
		t.Fatalf("apply failed: %s", st.LastError)
	}
	mu.Lock()
	got := append([]string(nil), atInstall...)
	mu.Unlock()
	if len(got) != 2 || got[0] != "1\n" || strings.HasPrefix(got[1], "missing") {
		t.Fatalf("track files of chk_flag, chk_port when keepalived.conf was installed: %q, want \"1\\n\" and present", got)
	}
	conf, err := os.ReadFile(h.cfg.Keepalived.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{flagFile, trackFile} {
		if !strings.Contains(string(conf), f) {
			t.Errorf("keepalived.conf does not track %s:\n%s", f, conf)
		}
	}

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both checks healthy", func() bool {
		a, _ := checkOf(h.status(), "chk_port")
		b, _ := checkOf(h.status(), "chk_flag")
		return a.State == api.CheckHealthy && b.State == api.CheckHealthy
	})
	st = h.status()
	if len(st.Checks) != 2 || st.Checks[0].Name != "chk_flag" || st.Checks[1].Name != "chk_port" {
		t.Errorf("status lists %+v, want the resign checks chk_flag and chk_port, sorted", st.Checks)
	}
	c, _ := checkOf(st, "chk_port")
	if c.Kind != "tcp" || c.OnFailure != vrrp.OnFailureResign || c.Since.IsZero() || c.LastRun.IsZero() {
		t.Errorf("status of chk_port: %+v", c)
	}
	if b, _ := os.ReadFile(trackFile); string(b) != "0\n" {
		t.Errorf("track file %q once healthy, want %q", b, "0\n")
	}

	// The service goes away: failing, and keepalived's FAULT is recorded
	// with the reason.
	ln.Close()
	waitFor(t, "chk_port failing", func() bool {
		c, _ := checkOf(h.status(), "chk_port")
		return c.State == api.CheckFailing
	})
	if b, _ := os.ReadFile(trackFile); string(b) != "1\n" {
		t.Errorf("track file %q once failing, want %q", b, "1\n")
	}
	want := "check chk_port failing: connect " + ln.Addr().String() + ": connection refused"
	c, _ = checkOf(h.status(), "chk_port")
	if c.Reason != strings.TrimPrefix(want, "check chk_port failing: ") {
		t.Errorf("reason %q", c.Reason)
	}
	if !strings.Contains(h.status().Sentence, want) {
		t.Errorf("sentence %q does not name the failing check", h.status().Sentence)
	}
	h.hook("INSTANCE", "VI_web", "MASTER", "100")
	h.hook("INSTANCE", "VI_web", "FAULT", "0")
	hist := h.history()
	last := hist[len(hist)-1]
	if last.To != vrrp.RoleFault || last.Note != want {
		t.Errorf("last transition %s with note %q, want FAULT with %q", last.To, last.Note, want)
	}

	h.stop()
	for _, f := range []string{flagFile, trackFile} {
		if b, _ := os.ReadFile(f); string(b) != "1\n" {
			t.Errorf("%s: %q after a clean stop, want %q", f, b, "1\n")
		}
	}
}

// TestAgentChecksAcrossRevisions: a new revision that changes the resign
// check's interval keeps its verdict (the file stays "0"), one that drops
// it stops it and removes its file once installed.
func TestAgentChecksAcrossRevisions(t *testing.T) {
	ln := testutil.AcceptingListener(t)
	track := filepath.Join(t.TempDir(), "track")
	trackFile := render.TrackFile(track, "chk_port")
	h := startTestAgent(t, metaJSON(t, resignMeta(1, ln.Addr().String())), trackIn(track))
	h.refresh()
	waitFor(t, "chk_port healthy", func() bool {
		c, _ := checkOf(h.status(), "chk_port")
		return c.State == api.CheckHealthy
	})
	since := func() api.CheckStatus { c, _ := checkOf(h.status(), "chk_port"); return c }().Since

	m := resignMeta(2, ln.Addr().String())
	m.Checks[1].Interval = 200
	m.Checks[1].Fall = 3
	h.writeMeta(metaJSON(t, m))
	if st := h.refresh(); st.LastError != "" || st.Revision != 2 {
		t.Fatalf("revision 2 not applied: %+v", st)
	}
	c, ok := checkOf(h.status(), "chk_port")
	if !ok || c.State != api.CheckHealthy || !c.Since.Equal(since) {
		t.Errorf("after a new interval: %+v, want healthy since %v", c, since)
	}
	if b, _ := os.ReadFile(trackFile); string(b) != "0\n" {
		t.Errorf("track file %q after the update, want %q kept", b, "0\n")
	}

	h.writeMeta(metaJSON(t, testMeta(3)))
	if st := h.refresh(); st.LastError != "" || len(st.Checks) != 0 {
		t.Fatalf("revision 3: error %q, checks %+v, want none", st.LastError, st.Checks)
	}
	if _, err := os.Stat(trackFile); !os.IsNotExist(err) {
		t.Errorf("the dropped check's track file is still there: %v", err)
	}
}

// TestMissingTrackDirReloadsOnce: an agent that finds its track directory
// missing at start (keepalived, running already, dropped its track files)
// creates it and reloads keepalived once on the first apply, even though
// nothing it renders changed; a restart with the directory present does
// not reload.
func TestMissingTrackDirReloadsOnce(t *testing.T) {
	ln := testutil.AcceptingListener(t)
	track := filepath.Join(t.TempDir(), "track")
	h := startTestAgent(t, metaJSON(t, resignMeta(1, ln.Addr().String())), trackIn(track))
	h.refresh()
	if fi, err := os.Stat(track); err != nil || !fi.IsDir() {
		t.Fatalf("track directory: %v", err)
	}
	base := h.ka.reloadCount()

	// Same files, the directory gone as after a reboot's empty /run while
	// keepalived kept running: one reload, on the unchanged apply.
	h.stop()
	if err := os.RemoveAll(track); err != nil {
		t.Fatal(err)
	}
	h.start(h.cfg, h.d)
	h.refresh()
	if got := h.ka.reloadCount(); got != base+1 {
		t.Fatalf("reloads after a start without the track directory: %d, want %d", got, base+1)
	}
	h.refresh()
	if got := h.ka.reloadCount(); got != base+1 {
		t.Fatalf("a second unchanged apply reloaded again: %d reloads, want %d", got, base+1)
	}

	// The directory there: an unchanged apply does not reload.
	h.restart()
	h.refresh()
	if got := h.ka.reloadCount(); got != base+1 {
		t.Fatalf("reloads after a start with the track directory: %d, want %d", got, base+1)
	}
}
