package lab

import (
	"context"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// startStack builds the lab with the seed's group and both guests running,
// and waits until nginx-master owns the VIP everywhere.
func startStack(t *testing.T, p Profile) *Stack {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/keepalived"); err != nil {
		testutil.SkipUnprivileged(t, "skipping: keepalived is not installed")
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
	found := func() bool {
		for _, tr := range hist {
			if tr.At.After(since) && slices.Contains(roles, tr.To) {
				return true
			}
		}
		return false
	}
	// keepalived runs the notify hook a moment after it moves the VIP:
	// wait for the transition and for its delivery to hostsync.
	err := s.Poll(ctx, 20*time.Second, "transition of "+g.Name+" recorded and delivered", func() (bool, error) {
		st, err := s.AgentStatus(ctx, g)
		if err != nil {
			return false, nil // the agent may be restarting
		}
		if hist, err = s.AgentHistory(ctx, g); err != nil {
			return false, nil
		}
		return st.Unreported == 0 && found(), nil
	})
	if err != nil {
		t.Fatalf("%s: no transition to %v after %s, or not delivered: %v (history %+v)",
			g.Name, roles, since.Format(time.RFC3339Nano), err, hist)
	}
	for i, tr := range hist {
		if tr.Seq != uint64(i+1) {
			t.Fatalf("%s history seq %d at index %d: an event is missing (%+v)", g.Name, tr.Seq, i, hist)
		}
		if i == 0 {
			continue
		}
		prev := hist[i-1]
		if tr.At.Before(prev.At) {
			t.Errorf("%s history: seq %d at %s is before seq %d at %s", g.Name, tr.Seq, tr.At, prev.Seq, prev.At)
		}
		if tr.From != prev.To {
			t.Errorf("%s history: seq %d from %s, but seq %d went to %s", g.Name, tr.Seq, tr.From, prev.Seq, prev.To)
		}
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
			// The check resigns (vipkeeper's default policy).
			return []vrrp.Role{vrrp.RoleFault}
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
			if tc.name == "master's link cut" {
				// Its reports wait in its outbox until the link is back.
				if err := s.IP(m.Host.ID, "link", "set", m.HostEnd, "up"); err != nil {
					t.Fatal(err)
				}
			}
			checkHistory(t, s, m, t0, roles...)
		})
	}
}

func TestAgentDeadDuringMove(t *testing.T) {
	s := startStack(t, ProfileDefault)
	m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	// The new master's agent died (SIGKILL: a clean stop would mark its
	// checks failing and keep the member from taking the VIP): its notify
	// events go to the spool and hostsync learns the move from
	// keepalived's own GARP.
	if err := s.KillAgent(sl); err != nil {
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
	checkHistory(t, s, m, t0, vrrp.RoleFault)
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
	checkHistory(t, s, m, t0, vrrp.RoleFault)
	// The restarted hostsync has the claim too: its registry names the
	// new owner.
	if err := s.Poll(ctx, 20*time.Second, h.ID+" registry owner", func() (bool, error) {
		v, err := s.GroupView(ctx, h)
		return err == nil && v.Owner != nil && v.Owner.Name == sl.Name, nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestGatewayHostsyncRestartedDuringMove(t *testing.T) {
	s := startStack(t, ProfileDefault)
	m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	ctx := context.Background()
	// The hostsync that programs the gateway is down during the move: it
	// sees neither the claim (it goes to the slave's host) nor keepalived's
	// GARP. Back up, its registry is stale; its ARP probe finds the holder.
	h := s.GatewayHost
	if err := s.Hostsync(h).Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// GARP on h's bridge (one L2 segment with the other host's).
	w, err := s.StartWatch(h, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
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
	// Let keepalived's delayed GARP repeat pass too, so only a probe can
	// tell the restarted hostsync: keepalived announces a new master with
	// a burst at once and the same burst garp_master_delay (5 s) later.
	// Wait until the repeat was seen on h's bridge (GARPs for the new
	// master more than 3 s apart: hostsync's own burst ends within 500 ms
	// of the claim) and the bridge has been quiet for 500 ms after it.
	if err := s.Poll(ctx, 30*time.Second, "keepalived's delayed GARP repeat from "+sl.Name, func() (bool, error) {
		at := w.GARPs(sl.MAC, t0)
		return len(at) > 1 && at[len(at)-1].Sub(at[0]) > 3*time.Second && time.Since(at[len(at)-1]) > 500*time.Millisecond, nil
	}); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, at := range w.GARPs(sl.MAC, t0) {
		seen = append(seen, "+"+at.Sub(t0).Round(time.Millisecond).String())
	}
	t.Logf("GARPs for %s on %s's bridge: %s", sl.Name, h.ID, strings.Join(seen, " "))
	if err := s.StartHostsync(ctx, h); err != nil {
		t.Fatal(err)
	}
	waitOwner(t, s, sl)
	v, err := s.GroupView(ctx, h)
	if err != nil || v.Owner == nil || v.Owner.Source != "arp" {
		t.Errorf("owner on the restarted %s = %+v, %v; want learnt from an ARP probe", h.ID, v.Owner, err)
	}
	checkHistory(t, s, sl, t0, vrrp.RoleMaster)
	checkHistory(t, s, m, t0, vrrp.RoleFault)
}

func TestSplitBrainReportedAndResolved(t *testing.T) {
	s := startStack(t, ProfileDefault)
	m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	ctx := context.Background()
	// The slave stops hearing the master's VRRP advertisements (112 is
	// VRRP's IP protocol): it elects itself while the master stays MASTER.
	if _, err := s.Exec(ctx, sl.NS, "nft", "add table ip vktest; add chain ip vktest in { type filter hook input priority 0; }; add rule ip vktest in ip protocol 112 drop"); err != nil {
		t.Fatal(err)
	}
	if err := s.Poll(ctx, 30*time.Second, "both guests holding the VIP", func() (bool, error) {
		hs, err := s.VIPHolders()
		return err == nil && len(hs) == 2, err
	}); err != nil {
		t.Fatal(err)
	}
	// Every hostsync's probe sees two answers: a split brain, reported in
	// its status and resolved for the higher priority, nginx-master.
	for _, h := range s.Topo.Hosts {
		if err := s.Poll(ctx, 30*time.Second, "split brain reported on "+h.ID, func() (bool, error) {
			st, err := s.HostsyncStatus(ctx, h)
			return err == nil && st.SplitBrains > 0 && st.LastSplitBrain != nil && st.LastSplitBrain.Winner == m.Name, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The registry names the winner and the gateway routes toward its
	// host (the apply follows the owner change within milliseconds).
	if err := s.Poll(ctx, 10*time.Second, "registry and gateway on the winner", func() (bool, error) {
		v, err := s.GroupView(ctx, s.GatewayHost)
		if err != nil || v.Owner == nil || v.Owner.Name != m.Name {
			return false, nil
		}
		nh, err := s.GatewayNextHop()
		return nh == m.Host.Transit, err
	}); err != nil {
		o, _ := s.Observe(ctx)
		t.Fatalf("%v; last seen: %s", err, o)
	}
	// It stays there while the split brain lasts (the loser's claims do
	// not win it back): checked over a probe interval and more.
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		v, err := s.GroupView(ctx, s.GatewayHost)
		if err != nil || v.Owner == nil || v.Owner.Name != m.Name {
			t.Fatalf("owner flipped during the split brain: %+v, %v", v.Owner, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Healed: VRRP elects one master again and everything agrees.
	t0 := time.Now()
	if _, err := s.Exec(ctx, sl.NS, "nft", "delete table ip vktest"); err != nil {
		t.Fatal(err)
	}
	waitOwner(t, s, m)
	checkHistory(t, s, sl, t0, vrrp.RoleBackup)
	checkHistory(t, s, m, time.Time{}, vrrp.RoleMaster)
}
