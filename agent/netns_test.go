package agent

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/netns"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// labGuest is one VM of the lab: a network namespace with eth0 on the
// bridge, keepalived and the agent.
type labGuest struct {
	name    string // member name
	ns      string
	addr    netip.Prefix
	dir     string
	healthy string // the local check passes while this file exists
	conf    string // keepalived.conf
	pidFile string
	socket  string
	agent   *proc
	ka      *proc
	client  *control.Client
}

type lab struct {
	t      *testing.T
	br     string
	hs     *fakeHostsync
	url    string
	guests []*labGuest
	vip    netip.Prefix
	vipctl string
	agent  string
}

// newLab builds a bridge namespace with the fake hostsync on 192.0.2.1 and
// one namespace per guest with a veth into the bridge.
func newLab(t *testing.T, names ...string) *lab {
	testutil.RequireRoot(t, "keepalived")
	agentBin, vipctlBin := binaries(t)
	l := &lab{t: t, br: testutil.NewNetns(t, "b"), hs: &fakeHostsync{seen: map[string]bool{}}, vip: netip.MustParsePrefix("192.0.2.10/24"), vipctl: vipctlBin, agent: agentBin}
	if err := netns.Bridge(l.br, "br0", "192.0.2.1/24"); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for i, name := range names {
		g := &labGuest{
			name: name,
			ns:   testutil.NewNetns(t, fmt.Sprintf("g%d", i+1)),
			addr: netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/24", 11+i)),
			dir:  filepath.Join(root, name),
		}
		port := fmt.Sprintf("p%d", i+1)
		if err := netns.Veth(l.br, port, g.ns, "eth0"); err != nil {
			t.Fatal(err)
		}
		testutil.IP(t, "-n", l.br, "link", "set", port, "master", "br0")
		testutil.IP(t, "-n", g.ns, "addr", "add", g.addr.String(), "dev", "eth0")
		if err := os.MkdirAll(g.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		g.healthy = filepath.Join(g.dir, "healthy")
		g.conf = filepath.Join(g.dir, "keepalived", "keepalived.conf")
		g.pidFile = filepath.Join(g.dir, "run", "keepalived.pid")
		g.socket = filepath.Join(g.dir, "run", "agent.sock")
		os.MkdirAll(filepath.Dir(g.pidFile), 0o755)
		os.WriteFile(g.healthy, nil, 0o644)
		g.client = control.NewClient(g.socket, 10*time.Second)
		t.Cleanup(g.client.Close)
		l.guests = append(l.guests, g)
	}
	ln, err := netns.Listen(l.br, "tcp", "192.0.2.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	srv := &http.Server{Handler: l.hs, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	l.url = "http://" + ln.Addr().String() + api.PathMetadata
	t.Cleanup(func() {
		if t.Failed() {
			for _, g := range l.guests {
				dumpLog(t, filepath.Join(g.dir, "agent.log"))
				dumpLog(t, filepath.Join(g.dir, "keepalived.log"))
				if data, err := os.ReadFile(g.conf); err == nil {
					t.Logf("--- %s keepalived.conf ---\n%s", g.name, data)
				}
			}
		}
	})
	return l
}

// metadata is the lab group: the VIP, one member per guest with
// priorities 100, 99, ..., VRRPv2 with a 1 s advert.
func (l *lab) metadata(rev uint64) *vrrp.Metadata {
	m := &vrrp.Metadata{
		Version: 1, Group: vrrp.Group{ID: "ig-lab", Name: "lab"}, Revision: rev,
		VIP: l.vip, VirtualRouterID: 66, VRRPVersion: 2, AdvertInt: 1000,
		Auth: &vrrp.Auth{Type: "PASS", Pass: "1111"},
	}
	for i, g := range l.guests {
		m.Members = append(m.Members, vrrp.Member{Name: g.name, Address: g.addr.Addr(), Priority: 100 - i})
	}
	return m
}

// startAgent runs the agent in the guest's namespace; the member name is
// detected from eth0's address.
func (l *lab) startAgent(g *labGuest) {
	t := l.t
	cfg := fmt.Sprintf(`
interface = "eth0"
state_dir = %q
socket = %q
spool_dir = %q
vipctl = %q
track_dir = %q
reconcile_interval = "500ms"
reconcile_grace = "3s"

[metadata]
url = %q
poll_interval = "1s"

[report]
min_backoff = "100ms"
max_backoff = "1s"

[keepalived]
config = %q
scripts_dir = %q
pid_file = %q
reload = "signal"

[[checks]]
name = "chk_local"
kind = "exec"
command = ["/usr/bin/test", "-e", %q]
interval = "1s"
weight = -20
`, filepath.Join(g.dir, "state"), g.socket, filepath.Join(g.dir, "spool"), l.vipctl, filepath.Join(g.dir, "run", "track"), l.url,
		g.conf, filepath.Join(g.dir, "keepalived", "vipkeeper"), g.pidFile, g.healthy)
	path := filepath.Join(g.dir, "agent.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.agent = startProc(t, g.name+" agent", filepath.Join(g.dir, "agent.log"),
		netns.Command(g.ns, l.agent, "--config", path, "--log-level", "debug").Args...)
}

// startKeepalived runs keepalived (VRRP only) in the guest's namespace.
func (l *lab) startKeepalived(g *labGuest) {
	run := filepath.Dir(g.pidFile)
	g.ka = startProc(l.t, g.name+" keepalived", filepath.Join(g.dir, "keepalived.log"),
		netns.Command(g.ns, "keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp",
			"--use-file", g.conf, "--pid", g.pidFile,
			"--vrrp_pid", filepath.Join(run, "vrrp.pid"), "--checkers_pid", filepath.Join(run, "checkers.pid")).Args...)
}

func (g *labGuest) status(t testing.TB) api.AgentStatus {
	t.Helper()
	ctx, cancel := ctxTimeout()
	defer cancel()
	st, err := g.client.Status(ctx)
	if err != nil {
		return api.AgentStatus{}
	}
	return st
}

// history is g's transition history, nil while the agent does not answer.
func (g *labGuest) history(t testing.TB) []vrrp.Transition {
	t.Helper()
	ctx, cancel := ctxTimeout()
	defer cancel()
	h, err := g.client.History(ctx, 1000)
	if err != nil {
		t.Logf("%s history: %v", g.name, err)
		return nil
	}
	return h
}

// waitOwner waits until the VIP is on want's eth0 and no other guest's,
// and want's agent reports MASTER with the VIP present.
func (l *lab) waitOwner(t testing.TB, want *labGuest, timeout time.Duration) {
	t.Helper()
	waitUntil(t, timeout, want.name+" to own the VIP", func() bool {
		for _, g := range l.guests {
			if nsHasAddr(t, g.ns, "eth0", l.vip.Addr()) != (g == want) {
				return false
			}
		}
		st := want.status(t)
		return st.Role == vrrp.RoleMaster && st.VIPPresent
	})
}

// waitTransition waits until g's history ends with a transition to role
// recorded at or after since, and returns it.
func (l *lab) waitTransition(t testing.TB, g *labGuest, to vrrp.Role, since time.Time, timeout time.Duration) vrrp.Transition {
	t.Helper()
	var found vrrp.Transition
	waitUntil(t, timeout, fmt.Sprintf("%s to record %s", g.name, to), func() bool {
		h := g.history(t)
		for i := len(h) - 1; i >= 0; i-- {
			if h[i].To == to && !h[i].At.Before(since) {
				found = h[i]
				return true
			}
		}
		return false
	})
	return found
}

// TestLabFailover runs two guests with real keepalived and the agent:
// the agent renders, keepalived elects the higher priority, and the VIP
// moves when the master's check fails, when its keepalived stops and when
// it is killed (the stale VIP is removed); every move is in each agent's
// history with timestamps and reported to hostsync.
func TestLabFailover(t *testing.T) {
	l := newLab(t, "lab-1", "lab-2")
	g1, g2 := l.guests[0], l.guests[1]
	l.hs.setMeta(t, l.metadata(1))
	for _, g := range l.guests {
		l.startAgent(g)
	}
	for _, g := range l.guests {
		waitUntil(t, 30*time.Second, g.name+" to apply", func() bool { return g.status(t).Ready })
		st := g.status(t)
		if st.Member != g.name || st.Group != "lab" || st.LastError != "" {
			t.Fatalf("%s status after apply: %+v", g.name, st)
		}
		conf, err := os.ReadFile(g.conf)
		if err != nil || !strings.Contains(string(conf), l.vip.String()) || !strings.Contains(string(conf), "chk_local") {
			t.Fatalf("%s keepalived.conf not rendered with the VIP and the local check: %v\n%s", g.name, err, conf)
		}
	}
	start := time.Now()
	for _, g := range l.guests {
		l.startKeepalived(g)
	}

	t.Run("keepalived elects the higher priority", func(t *testing.T) {
		l.waitOwner(t, g1, 30*time.Second)
		waitUntil(t, 15*time.Second, "lab-2 BACKUP", func() bool { return g2.status(t).Role == vrrp.RoleBackup })
		tr := l.waitTransition(t, g1, vrrp.RoleMaster, start, 5*time.Second)
		if tr.Source != SourceNotify && tr.Source != SourceNetlink {
			t.Errorf("MASTER recorded from %q", tr.Source)
		}
		waitUntil(t, 15*time.Second, "the MASTER claim at hostsync", func() bool {
			for _, c := range l.hs.claimsOf(g1.name) {
				if c.To == vrrp.RoleMaster && c.Seq == tr.Seq {
					return true
				}
			}
			return false
		})
	})

	t.Run("bad metadata changes nothing and status shows it", func(t *testing.T) {
		conf0, _ := os.ReadFile(g1.conf)
		fi0, _ := os.Stat(g1.conf)
		reloads0 := countLines(t, filepath.Join(g1.dir, "keepalived.log"), "Reloading")
		good := string(metaJSON(t, l.metadata(2)))
		for i, bad := range []struct{ doc, says string }{
			{`{"version": 1, "group": {`, "malformed metadata"},
			{strings.Replace(good, `"priority": 99`, `"priority": 0`, 1), "members[1].priority"},
			{strings.Replace(good, `"version": 1`, `"version": 2`, 1), "unsupported metadata version"},
		} {
			l.hs.setRaw([]byte(bad.doc), uint64(100+i))
			var out []byte
			waitUntil(t, 15*time.Second, "vipctl status to show: "+bad.says, func() bool {
				out, _ = exec.Command(l.vipctl, "status", "--socket", g1.socket).CombinedOutput()
				return strings.Contains(string(out), bad.says) && strings.Contains(string(out), "last apply failed")
			})
			t.Logf("vipctl status with bad metadata:\n%s", out)
		}
		conf1, _ := os.ReadFile(g1.conf)
		fi1, _ := os.Stat(g1.conf)
		if string(conf1) != string(conf0) || !fi1.ModTime().Equal(fi0.ModTime()) {
			t.Error("keepalived.conf changed")
		}
		if n := countLines(t, filepath.Join(g1.dir, "keepalived.log"), "Reloading"); n != reloads0 {
			t.Errorf("keepalived reloaded %d times", n-reloads0)
		}
		// Good metadata again, differing from the first only in what
		// keepalived does not read (revision, EIP): recorded, error gone,
		// keepalived.conf not rewritten, keepalived not reloaded.
		m2 := l.metadata(2)
		m2.EIP = netip.MustParseAddr("203.0.113.5")
		l.hs.setMeta(t, m2)
		waitUntil(t, 15*time.Second, "the good document applied", func() bool {
			st := g1.status(t)
			return st.Revision == 2 && st.LastError == ""
		})
		conf2, _ := os.ReadFile(g1.conf)
		fi2, _ := os.Stat(g1.conf)
		if string(conf2) != string(conf0) || !fi2.ModTime().Equal(fi0.ModTime()) {
			t.Error("keepalived.conf rewritten for a revision that changes nothing keepalived reads")
		}
		if n := countLines(t, filepath.Join(g1.dir, "keepalived.log"), "Reloading"); n != reloads0 {
			t.Errorf("keepalived reloaded %d times for a revision that changes nothing it reads", n-reloads0)
		}
		// A change keepalived reads: applied and reloaded.
		m3 := l.metadata(3)
		m3.Garp = &vrrp.Garp{MasterRefresh: 60}
		l.hs.setMeta(t, m3)
		waitUntil(t, 15*time.Second, "keepalived to reload", func() bool {
			return countLines(t, filepath.Join(g1.dir, "keepalived.log"), "Reloading") > reloads0
		})
		l.waitOwner(t, g1, 30*time.Second)
	})

	t.Run("failing check on the master moves the VIP", func(t *testing.T) {
		at := time.Now()
		if err := os.Remove(g1.healthy); err != nil {
			t.Fatal(err)
		}
		l.waitOwner(t, g2, 30*time.Second)
		up := l.waitTransition(t, g2, vrrp.RoleMaster, at, 10*time.Second)
		down := l.waitTransition(t, g1, vrrp.RoleBackup, at, 10*time.Second)
		if up.From != vrrp.RoleBackup || down.From != vrrp.RoleMaster {
			t.Errorf("transitions: %s %+v; %s %+v", g2.name, up, g1.name, down)
		}
		for _, tr := range []vrrp.Transition{up, down} {
			if tr.At.Before(at) || tr.At.After(time.Now()) {
				t.Errorf("transition time %v outside [%v, now]", tr.At, at)
			}
		}
		// Healthy again: the higher priority preempts.
		at = time.Now()
		if err := os.WriteFile(g1.healthy, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		l.waitOwner(t, g1, 30*time.Second)
		l.waitTransition(t, g1, vrrp.RoleMaster, at, 10*time.Second)
		l.waitTransition(t, g2, vrrp.RoleBackup, at, 10*time.Second)
	})

	t.Run("a move while the agent is down is spooled and drained at start", func(t *testing.T) {
		g2.agent.stop(t, 15*time.Second)
		at := time.Now()
		if err := os.Remove(g1.healthy); err != nil {
			t.Fatal(err)
		}
		spool := filepath.Join(g2.dir, "spool")
		waitUntil(t, 30*time.Second, "the VIP on lab-2 and its MASTER event spooled", func() bool {
			names, _ := control.SpoolList(spool)
			return nsHasAddr(t, g2.ns, "eth0", l.vip.Addr()) && len(names) > 0
		})
		restarted := time.Now()
		l.startAgent(g2)
		tr := l.waitTransition(t, g2, vrrp.RoleMaster, at, 30*time.Second)
		if tr.Source != SourceNotify || !tr.At.Before(restarted) {
			t.Errorf("drained transition = %+v, want the hook's event from before the restart (%v)", tr, restarted)
		}
		waitUntil(t, 10*time.Second, "the spool to empty", func() bool {
			names, _ := control.SpoolList(spool)
			return len(names) == 0
		})
		at = time.Now()
		if err := os.WriteFile(g1.healthy, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		l.waitOwner(t, g1, 30*time.Second)
		l.waitTransition(t, g2, vrrp.RoleBackup, at, 10*time.Second)
	})

	t.Run("vipctl status and history read the agent", func(t *testing.T) {
		out, err := exec.Command(l.vipctl, "status", "--socket", g1.socket).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "MASTER of lab since") || !strings.Contains(string(out), "192.0.2.10/24 on eth0") {
			t.Errorf("vipctl status: %v\n%s", err, out)
		}
		out, err = exec.Command(l.vipctl, "history", "--socket", g1.socket, "--limit", "50").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SEQ") || strings.Count(string(out), "notify") < 3 {
			t.Errorf("vipctl history: %v\n%s", err, out)
		}
	})

	t.Run("stopping keepalived on the master moves the VIP", func(t *testing.T) {
		at := time.Now()
		g1.ka.stop(t, 15*time.Second)
		l.waitOwner(t, g2, 30*time.Second)
		l.waitTransition(t, g2, vrrp.RoleMaster, at, 10*time.Second)
		stop := l.waitTransition(t, g1, vrrp.RoleStop, at, 15*time.Second)
		if stop.From != vrrp.RoleMaster {
			t.Errorf("%s STOP transition from %s, want MASTER: %+v", g1.name, stop.From, stop)
		}
		if nsHasAddr(t, g1.ns, "eth0", l.vip.Addr()) {
			t.Error("VIP still on the stopped guest")
		}
	})

	t.Run("killed keepalived leaves a stale VIP that the agent removes", func(t *testing.T) {
		at := time.Now()
		g2.ka.kill() // SIGKILL: keepalived cannot remove its VIP
		stop := l.waitTransition(t, g2, vrrp.RoleStop, at, 20*time.Second)
		if !strings.Contains(stop.Note, "removed the stale VIP 192.0.2.10/24 from eth0") || stop.Source != SourceReconcile || stop.VIPPresent {
			t.Errorf("STOP transition = %+v", stop)
		}
		if nsHasAddr(t, g2.ns, "eth0", l.vip.Addr()) {
			t.Error("stale VIP still on eth0")
		}
		waitUntil(t, 15*time.Second, "the STOP claim at hostsync", func() bool {
			for _, c := range l.hs.claimsOf(g2.name) {
				if c.Seq == stop.Seq {
					return true
				}
			}
			return false
		})
	})

	t.Run("histories are ordered and reported exactly once", func(t *testing.T) {
		for _, g := range l.guests {
			h := g.history(t)
			for i := 1; i < len(h); i++ {
				if h[i].Seq != h[i-1].Seq+1 || h[i].At.Before(h[i-1].At) || h[i].From != h[i-1].To {
					t.Errorf("%s history not a chain at %d: %+v then %+v", g.name, i, h[i-1], h[i])
				}
			}
			waitUntil(t, 15*time.Second, g.name+" outbox empty", func() bool { return g.status(t).Unreported == 0 })
			claims := l.hs.claimsOf(g.name)
			if len(claims) != len(h) {
				t.Errorf("%s: %d claims at hostsync for %d transitions", g.name, len(claims), len(h))
			}
			for i, c := range claims {
				if i < len(h) && c.Seq != h[i].Seq {
					t.Errorf("%s claim %d has seq %d, want %d", g.name, i, c.Seq, h[i].Seq)
				}
			}
			t.Logf("%s history:", g.name)
			for _, tr := range h {
				t.Logf("  %d %s %s→%s %s vip=%v %s", tr.Seq, tr.At.Format("15:04:05.000"), tr.From, tr.To, tr.Source, tr.VIPPresent, tr.Note)
			}
		}
	})
}

// countLines counts the lines of a log file that contain substr.
func countLines(t testing.TB, path, substr string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), substr)
}
