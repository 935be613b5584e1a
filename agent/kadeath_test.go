package agent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/vipkeeper/vipkeeper/agent/keepalived"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// procKeepalived is keepalived found through a pid file that names a real
// process the test starts. named receives each pid MainPID finds live:
// once the watcher has been told a pid, it reports that process's exit
// (an exit while it opens the pidfd included).
type procKeepalived struct {
	*keepalived.PIDFileKeepalived
	named chan int
}

func (k *procKeepalived) MainPID(ctx context.Context) (int, error) {
	pid, err := k.PIDFileKeepalived.MainPID(ctx)
	if pid != 0 {
		select {
		case k.named <- pid:
		default:
		}
	}
	return pid, err
}

// kaDeathHarness runs the test agent on a pid file keepalived: a stand-in
// process, the group applied, MASTER with the VIP on the fake link, and
// the reconcile loop slowed to an hour so that only the exit watch can
// act on keepalived's death.
type kaDeathHarness struct {
	*testAgent
	pidFile string
	ka      *procKeepalived
	proc    *testutil.StandIn
}

func startKADeath(t *testing.T) *kaDeathHarness {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "keepalived.pid")
	ka := &procKeepalived{PIDFileKeepalived: &keepalived.PIDFileKeepalived{PIDFile: pidFile}, named: make(chan int, 16)}
	h := &kaDeathHarness{pidFile: pidFile, ka: ka}
	h.proc = h.startKeepalived(t)
	h.testAgent = startTestAgent(t, metaJSON(t, testMeta(1)), func(c *Config, d *deps) {
		c.ReconcileInterval = time.Hour
		d.keepalived = ka
	})
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	h.link.set("192.0.2.11/24", "192.0.2.10/24")
	h.hook("INSTANCE", "VI_web", "MASTER", "100")
	if st := h.status(); st.Role != vrrp.RoleMaster || !st.VIPPresent || !st.Keepalived {
		t.Fatalf("status before the exit = %+v", st)
	}
	h.watched(t, h.proc)
	return h
}

// startKeepalived starts a stand-in (a process named keepalived that
// survives SIGHUP, as keepalived does) and writes its pid file.
func (h *kaDeathHarness) startKeepalived(t *testing.T) *testutil.StandIn {
	t.Helper()
	p := testutil.StartStandIn(t, "keepalived")
	if err := os.WriteFile(h.pidFile, []byte(strconv.Itoa(p.Pid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// watched waits until the watcher was told p's pid.
func (h *kaDeathHarness) watched(t *testing.T, p *testutil.StandIn) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case pid := <-h.ka.named:
			if pid == p.Pid() {
				return
			}
		case <-deadline:
			t.Fatalf("the watcher was not told keepalived's pid %d", p.Pid())
		}
	}
}

func (h *kaDeathHarness) stops(t *testing.T) []vrrp.Transition {
	t.Helper()
	var out []vrrp.Transition
	for _, tr := range h.history() {
		if tr.To == vrrp.RoleStop {
			out = append(out, tr)
		}
	}
	return out
}

var testVIP = netip.MustParseAddr("192.0.2.10")

func TestKeepalivedDeath(t *testing.T) {
	t.Run("SIGKILL: the VIP is removed at the exit, without the reconcile ticker", func(t *testing.T) {
		h := startKADeath(t)
		// A reload (SIGHUP) is no exit.
		if err := h.ka.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		h.proc.Signal(t, syscall.SIGKILL)
		waitFor(t, "STOP recorded", func() bool { return h.status().Role == vrrp.RoleStop })
		if got := h.link.removedAddrs(); !slices.Equal(got, []netip.Addr{testVIP}) {
			t.Errorf("removed %v, want the VIP once", got)
		}
		stops := h.stops(t)
		if len(stops) != 1 {
			t.Fatalf("STOP transitions %+v, want one", stops)
		}
		s := stops[0]
		if s.From != vrrp.RoleMaster || s.Source != SourceReconcile || s.VIPPresent ||
			s.Note != "keepalived exited (killed?): removed the stale VIP 192.0.2.10/24 from eth0" {
			t.Errorf("STOP = %+v", s)
		}
		if st := h.status(); st.VIPPresent || st.Keepalived {
			t.Errorf("status after the exit = %+v", st)
		}
		// keepalived's STOP notify arriving late, and a look at the
		// interface, record nothing more.
		h.hook("INSTANCE", "VI_web", "STOP", "100")
		h.link.set("192.0.2.11/24")
		h.refresh()
		if n := len(h.stops(t)); n != 1 {
			t.Errorf("%d STOP transitions after the late notify, want 1", n)
		}
	})

	t.Run("SIGTERM: keepalived removed its VIP; one STOP, nothing removed", func(t *testing.T) {
		for _, hookFirst := range []bool{false, true} {
			t.Run("hook first="+strconv.FormatBool(hookFirst), func(t *testing.T) {
				h := startKADeath(t)
				h.link.set("192.0.2.11/24") // keepalived leaving MASTER removes the VIP
				if hookFirst {
					h.hook("INSTANCE", "VI_web", "STOP", "100")
				}
				h.proc.Signal(t, syscall.SIGTERM)
				<-h.proc.Done
				if !hookFirst {
					waitFor(t, "STOP recorded", func() bool { return h.status().Role == vrrp.RoleStop })
					h.hook("INSTANCE", "VI_web", "STOP", "100")
				} else {
					// The exit was handled once the watcher looks for
					// a keepalived again (the pid file still names the
					// dead one: MainPID finds none, named gets nothing);
					// a new keepalived is then watched.
					next := h.startKeepalived(t)
					h.watched(t, next)
				}
				stops := h.stops(t)
				if len(stops) != 1 {
					t.Fatalf("STOP transitions %+v, want one", stops)
				}
				if hookFirst && stops[0].Source != SourceNotify || !hookFirst && stops[0].Note != "keepalived exited" {
					t.Errorf("STOP = %+v", stops[0])
				}
				if got := h.link.removedAddrs(); len(got) != 0 {
					t.Errorf("removed %v after a clean stop", got)
				}
			})
		}
	})

	t.Run("restarted before the exit is handled: judged by the ordinary reconcile", func(t *testing.T) {
		h := startKADeath(t)
		next := h.startKeepalived(t) // the pid file names the new keepalived
		h.proc.Signal(t, syscall.SIGKILL)
		// Told twice: when the exit is handled (a keepalived runs), then
		// by the next watch, once the handling is over.
		h.watched(t, next)
		h.watched(t, next)
		if got := h.link.removedAddrs(); len(got) != 0 {
			t.Errorf("removed %v while a keepalived runs", got)
		}
		if stops := h.stops(t); len(stops) != 0 {
			t.Errorf("STOP recorded while a keepalived runs: %+v", stops)
		}
		// The new one is watched: its death removes the VIP.
		next.Signal(t, syscall.SIGKILL)
		waitFor(t, "STOP recorded", func() bool { return h.status().Role == vrrp.RoleStop })
		if got := h.link.removedAddrs(); !slices.Equal(got, []netip.Addr{testVIP}) {
			t.Errorf("removed %v, want the VIP once", got)
		}
	})

	t.Run("a VIP the exit watch cannot remove is recorded once", func(t *testing.T) {
		h := startKADeath(t)
		h.link.mu.Lock()
		h.link.failRm = syscall.EPERM
		h.link.mu.Unlock()
		h.proc.Signal(t, syscall.SIGKILL)
		waitFor(t, "STOP recorded", func() bool { return h.status().Role == vrrp.RoleStop })
		stops := h.stops(t)
		if len(stops) != 1 || !stops[0].VIPPresent ||
			!strings.HasPrefix(stops[0].Note, "keepalived exited (killed?): the VIP 192.0.2.10/24 is still on eth0: removing it failed") {
			t.Errorf("STOP transitions %+v", stops)
		}
	})
}

// TestLabKeepalivedKilled kills keepalived (SIGKILL, the whole process
// group) on the MASTER of a two-guest lab and measures, from netlink
// events in both namespaces, how long the dead master's VIP stays on its
// eth0 and when the backup adds it: VRRPv2 with a 1 s advert, and VRRPv3
// with 0.1 s.
func TestLabKeepalivedKilled(t *testing.T) {
	for _, p := range []struct {
		name    string
		version int
		advert  vrrp.Seconds
	}{{"v2 advert 1s", 2, 1000}, {"v3 advert 0.1s", 3, 100}} {
		t.Run(p.name, func(t *testing.T) {
			l := newLab(t, "lab-1", "lab-2")
			g1, g2 := l.guests[0], l.guests[1]
			m := l.metadata(1)
			m.VRRPVersion, m.AdvertInt = p.version, p.advert
			if p.version == 3 {
				m.Auth = nil // VRRPv3 has no authentication
			}
			l.hs.setMeta(t, m)
			for _, g := range l.guests {
				l.startAgent(g)
			}
			for _, g := range l.guests {
				waitUntil(t, 30*time.Second, g.name+" to apply", func() bool { return g.status(t).Ready })
			}
			for _, g := range l.guests {
				l.startKeepalived(g)
			}
			var removal, takeover []time.Duration
			for round := range 3 {
				l.waitOwner(t, g1, 30*time.Second)
				rm := subscribeAddrs(t, g1.ns)
				add := subscribeAddrs(t, g2.ns)
				at := time.Now()
				g1.ka.kill()
				gone := rm.wait(t, l.vip.Addr(), false)
				taken := add.wait(t, l.vip.Addr(), true)
				removal = append(removal, gone.Sub(at))
				takeover = append(takeover, taken.Sub(at))
				t.Logf("round %d: SIGKILL → VIP gone from lab-1 after %s; on lab-2 after %s (two holders: %s)",
					round, gone.Sub(at), taken.Sub(at), max(gone.Sub(taken), 0))
				stop := l.waitTransition(t, g1, vrrp.RoleStop, at, 10*time.Second)
				if !strings.HasPrefix(stop.Note, "keepalived exited (killed?): removed the stale VIP 192.0.2.10/24 from eth0") || stop.VIPPresent {
					t.Errorf("round %d: STOP = %+v, want the exit watch's removal", round, stop)
				}
				if gone.After(taken) {
					t.Errorf("round %d: the VIP left lab-1 %s after lab-2 took it", round, gone.Sub(taken))
				}
				// keepalived refuses to start while its VRRP process's pid
				// file names a process (the killed one, until reaped).
				vrrpPID := filepath.Join(filepath.Dir(g1.pidFile), "vrrp.pid")
				waitUntil(t, 10*time.Second, "the killed VRRP process reaped", func() bool {
					data, err := os.ReadFile(vrrpPID)
					pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
					return err != nil || pid <= 0 || syscall.Kill(pid, 0) == syscall.ESRCH
				})
				l.startKeepalived(g1) // the higher priority preempts again
			}
			if data, err := os.ReadFile(filepath.Join(g1.dir, "agent.log")); err == nil {
				for _, line := range strings.Split(string(data), "\n") {
					if strings.Contains(line, `"op":"kadeath"`) || strings.Contains(line, "stale VIP") {
						t.Logf("lab-1 agent: %s", line)
					}
				}
			}
			sort.Slice(removal, func(i, j int) bool { return removal[i] < removal[j] })
			t.Logf("VIP removal after SIGKILL: min %s, median %s, max %s; backup takeover: %v",
				removal[0], removal[len(removal)/2], removal[len(removal)-1], takeover)
		})
	}
}

// addrEvents are a namespace's address changes, each with when it was read.
type addrEvents struct {
	ch chan addrEvent
}

type addrEvent struct {
	addr netip.Addr
	add  bool
	at   time.Time
}

func subscribeAddrs(t *testing.T, ns string) *addrEvents {
	t.Helper()
	h, err := vnetns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	raw := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	if err := netlink.AddrSubscribeWithOptions(raw, done, netlink.AddrSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatal(err)
	}
	e := &addrEvents{ch: make(chan addrEvent, 64)}
	go func() {
		defer close(e.ch)
		for u := range raw {
			at := time.Now()
			if a, ok := netip.AddrFromSlice(u.LinkAddress.IP); ok {
				e.ch <- addrEvent{addr: a.Unmap(), add: u.NewAddr, at: at}
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		for range e.ch {
		}
	})
	return e
}

// wait returns when addr was added (add) or removed.
func (e *addrEvents) wait(t *testing.T, addr netip.Addr, add bool) time.Time {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-e.ch:
			if !ok {
				t.Fatal("netlink subscription ended")
			}
			if ev.addr == addr && ev.add == add {
				return ev.at
			}
		case <-deadline:
			t.Fatalf("no netlink event for %s (add=%v) within 30s", addr, add)
		}
	}
}
