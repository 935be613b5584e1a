package state

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// storeWithHistory writes an agent.db with a few transitions (several
// transactions, so pages 2 and 3 hold live data) and returns its path.
func storeWithHistory(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.db")
	s, err := OpenStore(path, StoreOptions{Outbox: true})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, r := range []vrrp.Role{vrrp.RoleBackup, vrrp.RoleMaster, vrrp.RoleBackup, vrrp.RoleMaster, vrrp.RoleFault, vrrp.RoleBackup, vrrp.RoleMaster} {
		if _, _, err := s.Record(vrrp.Transition{To: r, At: at.Add(time.Duration(i) * time.Second), Source: sourceNotify}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenStoreDamaged is issue 11, defect 4 for agent.db: 256 random
// bytes over page 2 made OpenStore panic, over page 3 "invalid freelist
// page" panicked, and a zero-length file became a new database silently.
// Each is now an error naming the file and what to do, and no panic.
func TestOpenStoreDamaged(t *testing.T) {
	testutil.RequireDamagedRefused(t, storeWithHistory, func(path string) (io.Closer, error) {
		return OpenStore(path, StoreOptions{Outbox: true})
	})
}

// copyFixture copies a file of testdata/upgrade into a temp dir.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "upgrade", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenStoreFrom612e5b9 opens an agent.db written by commit 612e5b9
// (testdata/upgrade/agent-612e5b9.db: 7 transitions, 1..4 delivered,
// 5..7 in the outbox, an apply recorded): history, outbox and state are
// intact, the database gains an epoch that stays across reopens, and the
// sequence goes on at 8.
func TestOpenStoreFrom612e5b9(t *testing.T) {
	path := copyFixture(t, "agent-612e5b9.db")
	s, err := OpenStore(path, StoreOptions{Outbox: true})
	if err != nil {
		t.Fatal(err)
	}
	hist, err := s.History(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 7 || hist[0].Seq != 1 || hist[6].Seq != 7 || hist[6].To != vrrp.RoleMaster || hist[6].Group != "nginx" {
		t.Fatalf("history = %+v, want seq 1..7 ending MASTER of nginx", hist)
	}
	pending, err := s.Pending(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 3 || pending[0].Seq != 5 || pending[2].Seq != 7 {
		t.Fatalf("outbox = %+v, want seq 5..7", pending)
	}
	st, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	if st.LastSeq != 7 || st.Role != vrrp.RoleMaster || st.Member != "nginx-master" || st.VIP != "192.0.2.10" ||
		st.AppliedHash != "sha256:fixture" || st.Revision != 4 || len(st.Scripts) != 1 {
		t.Fatalf("state = %+v", st)
	}
	epoch := s.Epoch()
	if len(epoch) != 16 {
		t.Fatalf("epoch = %q, want 16 hex digits", epoch)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	rec, _, err := s.Record(vrrp.Transition{To: vrrp.RoleBackup, At: time.Now(), Source: sourceNotify}, "")
	if err != nil || rec.Seq != 8 {
		t.Fatalf("record after the upgrade: seq %d, %v; want 8", rec.Seq, err)
	}
	if err := s.AckReport(api.ReportOutcome{Seq: 5, Epoch: epoch, Result: api.ReportAccepted}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(path, StoreOptions{Outbox: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Epoch() != epoch {
		t.Errorf("epoch changed across a reopen: %q, then %q", epoch, s.Epoch())
	}
	if n, _ := s.PendingCount(); n != 3 {
		t.Errorf("outbox has %d entries, want 3 (6, 7, 8)", n)
	}
	if rs, _ := s.Reports(); len(rs) != 1 || rs[0].Seq != 5 {
		t.Errorf("reports = %+v, want seq 5", rs)
	}
}

// TestAckReportKeepsTheLast: only the last maxReports answers are kept,
// in arrival order (a new database's seq 1 after the old one's 20).
func TestAckReportKeepsTheLast(t *testing.T) {
	s := openTestStore(t, StoreOptions{Outbox: true})
	for seq := uint64(1); seq <= 20; seq++ {
		if err := s.AckReport(api.ReportOutcome{Seq: seq, Result: api.ReportAccepted}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AckReport(api.ReportOutcome{Seq: 1, Epoch: "new", Result: api.ReportAccepted}); err != nil {
		t.Fatal(err)
	}
	rs, err := s.Reports()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != maxReports || rs[0].Seq != 21-maxReports+1 || rs[len(rs)-1].Epoch != "new" {
		t.Fatalf("reports = %+v, want the last %d, the new epoch's last", rs, maxReports)
	}
}
