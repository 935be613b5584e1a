package lab

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// TestAgentDBDeletedDuringFailover is issue 11, defect 2 in the lab: the
// new master's agent.db is deleted while the VIP moves to it (agent
// down, file removed, master fails, agent started on a new database). Its
// MASTER report carries seq 1 of a new database, below what its host
// already has from the old one; hostsync must take it as a new stream,
// so that the host's owner is the VIP holder.
//
// The new master's host has no GARP interface (no passive detection, no
// probes): its registry learns the move from the agent's report alone,
// which is what the test is about. The gateway's host keeps passive
// detection, so the whole system (VIP, gateway route, client) still
// agrees on the owner at the end.
func TestAgentDBDeletedDuringFailover(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/keepalived"); err != nil {
		testutil.SkipUnprivileged(t, "skipping: keepalived is not installed")
	}
	l := newLab(t, binaries(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var claimsOnly string // host id whose hostsync learns moves from claims only
	s, err := l.NewStackWith(ctx, ProfileDefault, StackOptions{HostsyncConfig: func(s *Stack, h *Host) string {
		text := s.hostsyncConfig(h)
		if h.ID == claimsOnly {
			text = strings.Replace(text, "garp_interface = \"br0\"\n", "garp_interface = \"\"\n", 1)
		}
		return text
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.DumpLogs(tWriter{t})
		}
	})
	m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	if sl.Host == s.GatewayHost || m.Host == sl.Host {
		t.Fatalf("topology: want nginx-slave on its own host apart from the gateway's, got %s (gateway %s, master %s)",
			sl.Host.ID, s.GatewayHost.ID, m.Host.ID)
	}
	claimsOnly = sl.Host.ID
	if err := s.Hostsync(sl.Host).Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.StartHostsync(ctx, sl.Host); err != nil {
		t.Fatal(err)
	}
	if err := s.Seed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, g := range s.Topo.Guests {
		if err := s.StartGuest(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	waitOwner(t, s, m)
	// The slave's reports so far (BACKUP, seq 1 and up) are on its host.
	checkHistory(t, s, sl, time.Time{}, vrrp.RoleBackup)
	before, err := s.AgentStatus(ctx, sl)
	if err != nil {
		t.Fatal(err)
	}

	// During the failover: the new master's agent died (SIGKILL: its
	// track files keep saying healthy) and its database is deleted;
	// keepalived's notify goes to the spool.
	if err := s.KillAgent(sl); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.guestDir(sl), "state", "agent.db")); err != nil {
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
	if err := s.StartAgent(ctx, sl); err != nil {
		t.Fatal(err)
	}
	checkHistory(t, s, sl, t0, vrrp.RoleMaster)

	// The host that learns only from claims names the VIP holder.
	if err := s.Poll(ctx, 20*time.Second, sl.Host.ID+" registry owner = VIP holder", func() (bool, error) {
		v, err := s.GroupView(ctx, sl.Host)
		if err != nil || v.Owner == nil {
			return false, nil
		}
		hs, err := s.VIPHolders()
		return err == nil && len(hs) == 1 && v.Owner.Name == hs[0].Name, err
	}); err != nil {
		v, _ := s.GroupView(ctx, sl.Host)
		st, _ := s.AgentStatus(ctx, sl)
		t.Fatalf("%v: owner %+v, agent reports %+v", err, v.Owner, st.Reports)
	}
	waitOwner(t, s, sl)
	st, err := s.AgentStatus(ctx, sl)
	if err != nil {
		t.Fatal(err)
	}
	if st.Epoch == "" || st.Epoch == before.Epoch {
		t.Errorf("epoch %q after the reset, %q before: want a new one", st.Epoch, before.Epoch)
	}
	if n := len(st.Reports); n == 0 || st.Reports[n-1].Result != api.ReportAccepted || st.Reports[n-1].To != vrrp.RoleMaster {
		t.Errorf("reports %+v: want the MASTER report accepted last", st.Reports)
	}
}
