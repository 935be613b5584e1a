package agent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vipkeeper/vipkeeper/api"
)

// epochServer answers claims like hostsync: idempotent by (epoch, seq),
// a new epoch starts a new stream, a claim without one is compared with
// the last seq. It records what it took.
type epochServer struct {
	mu     sync.Mutex
	epoch  string
	last   uint64
	taken  []api.Claim
	epochs map[string]bool
}

func (s *epochServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	var c api.Claim
	if err := json.Unmarshal(body, &c); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.epochs[c.Epoch] = true
	if c.Transition.Seq <= s.last && (c.Epoch == "" || c.Epoch == s.epoch) {
		json.NewEncoder(w).Encode(api.ClaimResult{Accepted: true, Duplicate: true, Owner: "web-2"})
		return
	}
	if c.Epoch != "" && c.Epoch != s.epoch {
		s.epoch, s.last = c.Epoch, 0
	}
	s.last = max(s.last, c.Transition.Seq)
	s.taken = append(s.taken, c)
	json.NewEncoder(w).Encode(api.ClaimResult{Accepted: true, Owner: "web-1"})
}

func (s *epochServer) takenCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.taken)
}

// TestResetStoreNewEpochReportsAccepted is the agent side of issue 11,
// defect 2: agent.db deleted between two runs. The new database has a new
// epoch, its reports (seq 1 again) are taken, and status shows hostsync's
// answer to each report.
func TestResetStoreNewEpochReportsAccepted(t *testing.T) {
	srv := &epochServer{epochs: map[string]bool{}}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	h := startTestAgent(t, metaJSON(t, testMeta(1)), func(c *Config, _ *deps) {
		c.Report.URL = hs.URL + api.PathClaims
	})
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	for _, r := range []string{"BACKUP", "MASTER", "BACKUP", "MASTER", "BACKUP"} {
		h.hook("INSTANCE", "VI_web", r, "100")
	}
	waitFor(t, "5 reports taken", func() bool { return srv.takenCount() == 5 })
	first := h.status()
	if first.Epoch == "" {
		t.Fatal("status shows no epoch")
	}

	// The operator deletes agent.db (or reinstalls, or reverts a snapshot
	// made before the agent ran).
	h.stop()
	if err := os.Remove(filepath.Join(h.cfg.StateDir, "agent.db")); err != nil {
		t.Fatal(err)
	}
	h.start(h.cfg, h.d)
	waitFor(t, "apply after the reset", func() bool { return h.status().Ready })
	h.hook("INSTANCE", "VI_web", "MASTER", "100")
	waitFor(t, "the outbox to drain", func() bool { st := h.status(); return st.Unreported == 0 && len(st.Reports) > 0 })

	st := h.status()
	if st.Epoch == "" || st.Epoch == first.Epoch {
		t.Fatalf("epoch after the reset = %q, want a new one (was %q)", st.Epoch, first.Epoch)
	}
	srv.mu.Lock()
	taken := append([]api.Claim(nil), srv.taken...)
	srv.mu.Unlock()
	if len(taken) != 6 {
		t.Fatalf("hostsync took %d claims, want 6 (5, then the new database's first)", len(taken))
	}
	last := taken[5]
	if last.Epoch != st.Epoch || last.Transition.Seq != 1 || last.Transition.To != "MASTER" {
		t.Fatalf("last claim taken = epoch %q seq %d %s, want epoch %q seq 1 MASTER", last.Epoch, last.Transition.Seq, last.Transition.To, st.Epoch)
	}
	r := st.Reports[len(st.Reports)-1]
	if r.Seq != 1 || r.Epoch != st.Epoch || r.Result != api.ReportAccepted || r.Owner != "web-1" {
		t.Fatalf("status report = %+v, want seq 1 of the new epoch accepted, owner web-1", r)
	}
}

// TestStatusShowsDuplicateReport: an answer "duplicate" (an agent.db put
// back from an old copy, same epoch) is not silent: status shows it.
func TestStatusShowsDuplicateReport(t *testing.T) {
	srv := &epochServer{epochs: map[string]bool{}, last: 100}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	h := startTestAgent(t, metaJSON(t, testMeta(1)), func(c *Config, _ *deps) {
		c.Report.URL = hs.URL + api.PathClaims
	})
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	srv.mu.Lock()
	srv.epoch = h.store.Epoch() // hostsync has seq 100 of this very database
	srv.mu.Unlock()
	h.hook("INSTANCE", "VI_web", "MASTER", "100")
	waitFor(t, "the report", func() bool { return len(h.status().Reports) == 1 })
	r := h.status().Reports[0]
	if r.Result != api.ReportDuplicate || r.Seq != 1 || r.To != "MASTER" || r.Owner != "web-2" {
		t.Fatalf("report = %+v, want seq 1 MASTER answered duplicate, owner web-2", r)
	}
}
