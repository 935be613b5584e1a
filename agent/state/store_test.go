package state

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// openTestStore opens a store under t.TempDir(), closed in t.Cleanup.
func openTestStore(t *testing.T, opts StoreOptions) *Store {
	t.Helper()
	s, err := OpenStore(filepath.Join(t.TempDir(), "agent.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var t0 = time.Date(2025, 3, 1, 12, 4, 5, 0, time.UTC)

func tr(to vrrp.Role, sec int) vrrp.Transition {
	return vrrp.Transition{Group: "nginx", Member: "nginx-master", To: to, At: t0.Add(time.Duration(sec) * time.Second), Source: sourceNotify}
}

func TestStoreRecordAssignsSeqAndState(t *testing.T) {
	s := openTestStore(t, StoreOptions{Outbox: true})
	st, err := s.State()
	if err != nil || st.Role != vrrp.RoleUnknown || st.LastSeq != 0 {
		t.Fatalf("fresh state = %+v, %v; want UNKNOWN, seq 0", st, err)
	}
	for i, to := range []vrrp.Role{vrrp.RoleBackup, vrrp.RoleMaster, vrrp.RoleMaster, vrrp.RoleFault} {
		rec, dup, err := s.Record(tr(to, i), "")
		if err != nil || dup {
			t.Fatalf("Record %d: %v dup=%v", i, err, dup)
		}
		if rec.Seq != uint64(i+1) {
			t.Errorf("Record %d got seq %d, want %d", i, rec.Seq, i+1)
		}
	}
	st, _ = s.State()
	if st.Role != vrrp.RoleFault || st.LastSeq != 4 || !st.Since.Equal(t0.Add(3*time.Second)) || !st.LastAt.Equal(t0.Add(3*time.Second)) {
		t.Errorf("state = %+v", st)
	}
	// MASTER → MASTER keeps the since of the first MASTER.
	s2 := openTestStore(t, StoreOptions{})
	s2.Record(tr(vrrp.RoleMaster, 0), "")
	s2.Record(tr(vrrp.RoleMaster, 9), "")
	if st, _ := s2.State(); !st.Since.Equal(t0) {
		t.Errorf("since = %v after a same-role record, want %v", st.Since, t0)
	}
}

func TestStoreHistoryBounded(t *testing.T) {
	s := openTestStore(t, StoreOptions{HistoryLimit: 5})
	for i := range 12 {
		if _, _, err := s.Record(tr(vrrp.RoleBackup, i), ""); err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.History(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 5 || h[0].Seq != 8 || h[4].Seq != 12 {
		t.Fatalf("history seqs = %v, want 8..12 oldest first", seqs(h))
	}
	h, _ = s.History(2)
	if len(h) != 2 || h[0].Seq != 11 || h[1].Seq != 12 {
		t.Errorf("History(2) = %v, want [11 12]", seqs(h))
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

func TestStoreOutbox(t *testing.T) {
	t.Run("enabled", func(t *testing.T) {
		s := openTestStore(t, StoreOptions{Outbox: true})
		for i := range 3 {
			s.Record(tr(vrrp.RoleMaster, i), "")
		}
		if n, _ := s.PendingCount(); n != 3 {
			t.Fatalf("PendingCount = %d, want 3", n)
		}
		if err := s.Ack(2); err != nil {
			t.Fatal(err)
		}
		p, err := s.Pending(10)
		if err != nil || len(p) != 2 || p[0].Seq != 1 || p[1].Seq != 3 {
			t.Fatalf("Pending = %v, %v; want [1 3]", seqs(p), err)
		}
		p, _ = s.Pending(1)
		if len(p) != 1 || p[0].Seq != 1 {
			t.Errorf("Pending(1) = %v", seqs(p))
		}
	})
	t.Run("disabled", func(t *testing.T) {
		s := openTestStore(t, StoreOptions{Outbox: false})
		s.Record(tr(vrrp.RoleMaster, 0), "")
		if n, _ := s.PendingCount(); n != 0 {
			t.Errorf("PendingCount = %d with reporting off, want 0", n)
		}
	})
}

func TestStoreSpoolDedup(t *testing.T) {
	s := openTestStore(t, StoreOptions{Outbox: true})
	if _, dup, err := s.Record(tr(vrrp.RoleMaster, 0), "a.notify.json"); err != nil || dup {
		t.Fatalf("first: %v dup=%v", err, dup)
	}
	if _, dup, err := s.Record(tr(vrrp.RoleMaster, 0), "a.notify.json"); err != nil || !dup {
		t.Fatalf("second: %v dup=%v, want dup", err, dup)
	}
	if st, _ := s.State(); st.LastSeq != 1 {
		t.Errorf("LastSeq = %d after a duplicate, want 1", st.LastSeq)
	}
	if err := s.ForgetSpool("a.notify.json"); err != nil {
		t.Fatal(err)
	}
	if _, dup, _ := s.Record(tr(vrrp.RoleBackup, 1), "a.notify.json"); dup {
		t.Error("forgotten spool name still a duplicate")
	}
}

func TestStoreSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	s, err := OpenStore(path, StoreOptions{Outbox: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Record(tr(vrrp.RoleBackup, 0), "")
	s.Record(tr(vrrp.RoleMaster, 1), "")
	if err := s.SetApplied(Applied{Hash: "abc", Revision: 7, Scripts: []string{"notify.sh"}, Member: "m1", Group: "nginx", VIP: "192.0.2.10/24", At: t0}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = OpenStore(path, StoreOptions{Outbox: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, _ := s.State()
	if st.Role != vrrp.RoleMaster || st.LastSeq != 2 || st.AppliedHash != "abc" || st.Revision != 7 || st.Member != "m1" || st.VIP != "192.0.2.10/24" {
		t.Errorf("state after reopen = %+v", st)
	}
	rec, _, _ := s.Record(tr(vrrp.RoleBackup, 2), "")
	if rec.Seq != 3 {
		t.Errorf("seq after reopen = %d, want 3", rec.Seq)
	}
	if n, _ := s.PendingCount(); n != 3 {
		t.Errorf("outbox after reopen = %d, want 3", n)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

func TestStoreLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	s, err := OpenStore(path, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = OpenStore(path, StoreOptions{Timeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrStoreLocked) {
		t.Fatalf("second open: %v, want ErrStoreLocked", err)
	}
}

func seqs(ts []vrrp.Transition) []uint64 {
	out := make([]uint64, len(ts))
	for i, t := range ts {
		out[i] = t.Seq
	}
	return out
}

// sourceNotify is agent.SourceNotify (importing agent would be a cycle);
// the store records Source without interpreting it.
const sourceNotify = "notify"
