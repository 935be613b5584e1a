package lab

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// startStack builds the lab with the seed's group and both guests running,
// and waits until nginx-master owns the VIP everywhere.
func startStack(t *testing.T, p Profile) *Stack {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/keepalived"); err != nil {
		t.Skip("skipping: keepalived is not installed")
	}
	l := newLab(t, binaries(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := l.NewStack(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.DumpLogs(tWriter{t})
		}
	})
	if err := s.Seed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, g := range s.Topo.Guests {
		if err := s.StartGuest(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WaitOwner(ctx, s.Topo.Guest("nginx-master"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitOwner fails the test unless g comes to own the VIP everywhere.
func waitOwner(t *testing.T, s *Stack, g *Guest) {
	t.Helper()
	if err := s.WaitOwner(context.Background(), g, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// checkHistory asserts that g's agent recorded a transition to one of
// roles after since, that its history is a gap-free chain (sequence
// numbers 1, 2, 3, ... with timestamps in order, each transition starting
// from the previous one's role) and that every event is delivered.
func checkHistory(t *testing.T, s *Stack, g *Guest, since time.Time, roles ...vrrp.Role) {
	t.Helper()
	ctx := context.Background()
	var hist []vrrp.Transition
	err := s.Poll(ctx, 20*time.Second, "history of "+g.Name+" delivered", func() (bool, error) {
		st, err := s.AgentStatus(ctx, g)
		if err != nil {
			return false, nil // the agent may be restarting
		}
		if hist, err = s.AgentHistory(ctx, g); err != nil {
			return false, nil
		}
		return st.Unreported == 0, nil
	})
	if err != nil {
		t.Fatalf("%v (history %+v)", err, hist)
	}
	found := false
	for i, tr := range hist {
		if tr.Seq != uint64(i+1) {
			t.Fatalf("%s history seq %d at index %d: an event is missing (%+v)", g.Name, tr.Seq, i, hist)
		}
		if i > 0 {
			prev := hist[i-1]
			if tr.At.Before(prev.At) {
				t.Errorf("%s history: seq %d at %s is before seq %d at %s", g.Name, tr.Seq, tr.At, prev.Seq, prev.At)
			}
			if tr.From != prev.To {
				t.Errorf("%s history: seq %d from %s, but seq %d went to %s", g.Name, tr.Seq, tr.From, prev.Seq, prev.To)
			}
		}
		if tr.At.After(since) {
			for _, r := range roles {
				if tr.To == r {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("%s history has no transition to %v after %s: %+v", g.Name, roles, since.Format(time.RFC3339Nano), hist)
	}
}

func TestFailoverScenarios(t *testing.T) {
	cases := []struct {
		name string
		// fault breaks nginx-master; it returns the roles its agent must
		// record (or nil when its agent cannot record anything).
		fault func(t *testing.T, s *Stack, master *Guest) []vrrp.Role
	}{
		{"health check fails", func(t *testing.T, s *Stack, m *Guest) []vrrp.Role {
			if err := s.Web(m).Stop(); err != nil {
				t.Fatal(err)
			}
			return []vrrp.Role{vrrp.RoleBackup}
		}},
		{"keepalived SIGTERM", func(t *testing.T, s *Stack, m *Guest) []vrrp.Role {
			if err := s.KillKeepalived(m, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			return []vrrp.Role{vrrp.RoleStop, vrrp.RoleBackup, vrrp.RoleFault}
		}},
		{"keepalived SIGKILL leaves the VIP, the agent removes it", func(t *testing.T, s *Stack, m *Guest) []vrrp.Role {
			if err := s.KillKeepalived(m, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return []vrrp.Role{vrrp.RoleStop}
		}},
		{"master's link cut", func(t *testing.T, s *Stack, m *Guest) []vrrp.Role {
			if err := s.IP(m.Host.ID, "link", "set", m.HostEnd, "down"); err != nil {
				t.Fatal(err)
			}
			return []vrrp.Role{vrrp.RoleFault, vrrp.RoleBackup}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startStack(t, ProfileDefault)
			m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
			t0 := time.Now()
			roles := tc.fault(t, s, m)
			waitOwner(t, s, sl)
			checkHistory(t, s, sl, t0, vrrp.RoleMaster)
			if roles != nil && tc.name != "master's link cut" {
				checkHistory(t, s, m, t0, roles...)
			}
		})
	}
}

func TestAgentDeadDuringMove(t *testing.T) {
	s := startStack(t, ProfileDefault)
	m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	// The new master's agent is down: its notify events go to the spool
	// and hostsync learns the move from keepalived's own GARP.
	if err := s.Agent(sl).Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s.Web(m).Stop(); err != nil {
		t.Fatal(err)
	}
	waitOwner(t, s, sl)
	// Back up, the agent drains its spool: the move is in its history.
	if err := s.StartAgent(context.Background(), sl); err != nil {
		t.Fatal(err)
	}
	checkHistory(t, s, sl, t0, vrrp.RoleMaster)
	checkHistory(t, s, m, t0, vrrp.RoleBackup)
	waitOwner(t, s, sl)
}

func TestHostsyncRestartedDuringMove(t *testing.T) {
	s := startStack(t, ProfileDefault)
	m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	ctx := context.Background()
	// The new master's host is down while the VIP moves: its agent keeps
	// the claim in its outbox until hostsync is back.
	h := sl.Host
	if err := s.Hostsync(h).Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s.Web(m).Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Poll(ctx, 30*time.Second, "VIP on "+sl.Name, func() (bool, error) {
		hs, err := s.VIPHolders()
		return err == nil && len(hs) == 1 && hs[0] == sl, err
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.StartHostsync(ctx, h); err != nil {
		t.Fatal(err)
	}
	waitOwner(t, s, sl)
	checkHistory(t, s, sl, t0, vrrp.RoleMaster)
	checkHistory(t, s, m, t0, vrrp.RoleBackup)
	// The restarted hostsync has the claim too: its registry names the
	// new owner.
	if err := s.Poll(ctx, 20*time.Second, h.ID+" registry owner", func() (bool, error) {
		v, err := s.GroupView(ctx, h)
		return err == nil && v.Owner != nil && v.Owner.Name == sl.Name, nil
	}); err != nil {
		t.Fatal(err)
	}
}
