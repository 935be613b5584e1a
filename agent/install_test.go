package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vipkeeper/vipkeeper/internal/fsutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

var errInjected = errors.New("injected: no space left on device")

// faultyWriter is the agent's file-writing seam; it fails the failAt-th
// write (1-based, counted since arm) and passes every other one through.
type faultyWriter struct {
	mu     sync.Mutex
	failAt int // 0: never fail
	n      int
	failed string // the path of the failed write
}

func (w *faultyWriter) arm(n int) {
	w.mu.Lock()
	w.failAt, w.n, w.failed = n, 0, ""
	w.mu.Unlock()
}

func (w *faultyWriter) write(path string, data []byte, mode os.FileMode) error {
	w.mu.Lock()
	w.n++
	fail := w.n == w.failAt
	if fail {
		w.failed = path
	}
	w.mu.Unlock()
	if fail {
		return errInjected
	}
	return fsutil.WriteAtomic(path, data, mode)
}

// reScriptPath matches the script paths keepalived.conf refers to.
var reScriptPath = regexp.MustCompile(`"(/[^"]+\.sh)"`)

// TestInstallFailureKeepsWholeOldSet fails every write of an install in
// turn (the directory filling up at that file): the previous
// keepalived.conf and every script it refers to stay byte-identical, no
// new file is left behind, keepalived is not reloaded and the error names
// the file. (Issue 11, defect 3: revision 11's check script landed under
// revision 10's keepalived.conf.)
func TestInstallFailureKeepsWholeOldSet(t *testing.T) {
	fw := &faultyWriter{}
	h := startTestAgent(t, metaJSON(t, testMeta(10)), func(_ *Config, d *deps) { d.writeFile = fw.write })
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	before := h.snapshot()
	reloads := h.ka.reloadCount()
	oldConf, err := os.ReadFile(h.cfg.Keepalived.Config)
	if err != nil {
		t.Fatal(err)
	}

	// Revision 11 changes the check's script and config and adds a check.
	m := testMeta(11)
	m.Checks[0].Address = "127.0.0.1:8080"
	m.Checks = append(m.Checks, vrrp.Check{Name: "chk_proc", Kind: vrrp.CheckProcess, Process: "nginx"})
	m.VirtualRouterID = 52
	h.writeMeta(metaJSON(t, m))

	for n := 1; ; n++ {
		if n > 20 {
			t.Fatal("the install never succeeded")
		}
		fw.arm(n)
		err := h.Refresh(context.Background())
		fw.mu.Lock()
		failed, writes := fw.failed, fw.n
		fw.mu.Unlock()
		if failed == "" {
			// The n-th write was past the last one: the install succeeded.
			if err != nil {
				t.Fatalf("apply with %d writes and no fault: %v", writes, err)
			}
			t.Logf("an install takes %d writes; each failed in turn", writes)
			break
		}
		if !errors.Is(err, errInjected) {
			t.Fatalf("write %d (%s) failed but the apply returned %v", n, failed, err)
		}
		if !strings.Contains(err.Error(), failed) {
			t.Errorf("write %d: error %q does not name the file %s", n, err, failed)
		}
		if after := h.snapshot(); !mapsEqual(before, after) {
			for p, v := range after {
				if before[p] != v {
					t.Errorf("write %d (%s) failed, yet %s is new or changed", n, failed, p)
				}
			}
			for p := range before {
				if _, ok := after[p]; !ok {
					t.Errorf("write %d (%s) failed, yet %s is gone", n, failed, p)
				}
			}
			t.FailNow()
		}
		if got := h.ka.reloadCount(); got != reloads {
			t.Fatalf("write %d failed, yet keepalived was reloaded (%d → %d)", n, reloads, got)
		}
		if st := h.status(); st.Revision != 10 || !strings.Contains(st.LastError, failed) {
			t.Errorf("status after failed write %d: revision %d, error %q", n, st.Revision, st.LastError)
		}
	}

	conf, err := os.ReadFile(h.cfg.Keepalived.Config)
	if err != nil {
		t.Fatal(err)
	}
	if string(conf) == string(oldConf) {
		t.Fatal("keepalived.conf was not replaced by the successful install")
	}
	if got := h.ka.reloadCount(); got != reloads+1 {
		t.Errorf("reloads = %d, want %d", got, reloads+1)
	}
	assertReferencedScripts(t, conf, 2)
}

// assertReferencedScripts checks that every script keepalived.conf refers
// to exists as a root-only executable (notify plus checks scripts).
func assertReferencedScripts(t *testing.T, conf []byte, checks int) {
	t.Helper()
	refs := reScriptPath.FindAllSubmatch(conf, -1)
	if len(refs) != checks+1 {
		t.Fatalf("keepalived.conf refers to %d scripts, want %d:\n%s", len(refs), checks+1, conf)
	}
	for _, r := range refs {
		p := string(r[1])
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("keepalived.conf refers to %s: %v", p, err)
			continue
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %v, want 0700", p, fi.Mode().Perm())
		}
		if di, err := os.Stat(filepath.Dir(p)); err != nil || di.Mode().Perm()&0o077 != 0 {
			t.Errorf("scripts directory %s: %v %v, want root-only", filepath.Dir(p), di.Mode(), err)
		}
	}
}

// liveScriptsDir is the scripts directory the installed keepalived.conf
// refers to.
func liveScriptsDir(t *testing.T, h *testAgent) string {
	t.Helper()
	conf, err := os.ReadFile(h.cfg.Keepalived.Config)
	if err != nil {
		t.Fatal(err)
	}
	m := reScriptPath.FindSubmatch(conf)
	if m == nil {
		t.Fatalf("keepalived.conf refers to no script:\n%s", conf)
	}
	return filepath.Dir(string(m[1]))
}

// TestRevisionOnlyChangeNoRewriteNoReload: two documents differing only in
// what keepalived does not read (the revision, an EIP associated) leave
// keepalived.conf and the scripts untouched (same bytes and mtime) and do
// not reload keepalived; the new revision is recorded in the agent's state.
func TestRevisionOnlyChangeNoRewriteNoReload(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(10)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	before := h.snapshot()
	reloads := h.ka.reloadCount()

	m := testMeta(11)
	m.EIP = netip.MustParseAddr("203.0.113.5")
	h.writeMeta(metaJSON(t, m))
	st := h.refresh()
	if st.LastError != "" || st.Revision != 11 {
		t.Fatalf("status = revision %d, error %q; want 11 and none", st.Revision, st.LastError)
	}
	if !mapsEqual(before, h.snapshot()) {
		t.Error("files rewritten for a revision that changes nothing keepalived reads")
	}
	if got := h.ka.reloadCount(); got != reloads {
		t.Errorf("keepalived reloaded (%d → %d)", reloads, got)
	}
	// The revision is durable: a restarted agent reports it.
	h.restart()
	if st := h.status(); st.Revision != 11 {
		t.Errorf("revision after restart = %d, want 11", st.Revision)
	}
}

// TestOldScriptsDirsPruned: after each successful apply only the live
// scripts directory and the one before it remain, and scripts an older
// agent wrote straight into scripts_dir are removed.
func TestOldScriptsDirsPruned(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, testMeta(1)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	base := h.cfg.Keepalived.ScriptsDir
	// What an agent before versioned directories left behind.
	legacy := filepath.Join(base, "check_chk_web.sh")
	if err := os.WriteFile(legacy, []byte("#!/bin/sh\nexit 0\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.scripts = []string{"check_chk_web.sh", "notify.sh"}
	h.mu.Unlock()

	var lives []string
	for rev := uint64(2); rev <= 5; rev++ {
		m := testMeta(rev)
		m.Checks[0].Address = fmt.Sprintf("127.0.0.1:%d", 8000+rev) // a new script each time
		h.writeMeta(metaJSON(t, m))
		if st := h.refresh(); st.LastError != "" {
			t.Fatal(st.LastError)
		}
		lives = append(lives, liveScriptsDir(t, h))
		conf, _ := os.ReadFile(h.cfg.Keepalived.Config)
		assertReferencedScripts(t, conf, 1)
	}
	ents, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{filepath.Base(lives[len(lives)-2]), filepath.Base(lives[len(lives)-1])}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("scripts_dir holds %v, want the live and the previous set %v", names, want)
	}
	if fi, err := os.Stat(base); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("scripts_dir %v %v, want root-only", fi.Mode(), err)
	}
}
