package lab

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// The end-to-end tests of the agent's checks, the keepalived
// backstop, live group changes and keepalived's death. They assert
// behaviour; the timings they log are not targets (BenchmarkFailover
// measures).

// recordHolders starts a HolderLog stopped at the end of the test.
func recordHolders(t *testing.T, s *Stack) *HolderLog {
	t.Helper()
	r, err := s.RecordHolders()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// onlyCheck is the one check g's agent runs (the lab's group has one).
func onlyCheck(t *testing.T, s *Stack, g *Guest) api.CheckStatus {
	t.Helper()
	ctx := context.Background()
	var st api.AgentStatus
	err := s.Poll(ctx, 10*time.Second, "the check of "+g.Name+" judged", func() (bool, error) {
		var err error
		st, err = s.AgentStatus(ctx, g)
		return err == nil && len(st.Checks) == 1 && st.Checks[0].State != api.CheckUnknown, nil
	})
	if err != nil {
		t.Fatalf("%v (checks %+v)", err, st.Checks)
	}
	return st.Checks[0]
}

// waitCheck waits until g's check is in state (since t or later) and
// returns it.
func waitCheck(t *testing.T, s *Stack, g *Guest, state string, since time.Time) api.CheckStatus {
	t.Helper()
	ctx := context.Background()
	var last []api.CheckStatus
	var got api.CheckStatus
	err := s.Poll(ctx, 20*time.Second, g.Name+"'s check "+state, func() (bool, error) {
		st, err := s.AgentStatus(ctx, g)
		if err != nil {
			return false, nil
		}
		last = st.Checks
		for _, c := range st.Checks {
			if c.State == state && !c.Since.Before(since) {
				got = c
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("%v (checks %+v)", err, last)
	}
	return got
}

// waitTransition waits until g's agent has recorded a transition to role
// after since and returns it.
func waitTransition(t *testing.T, s *Stack, g *Guest, role vrrp.Role, since time.Time) vrrp.Transition {
	t.Helper()
	ctx := context.Background()
	var hist []vrrp.Transition
	var got vrrp.Transition
	err := s.Poll(ctx, 20*time.Second, g.Name+" recording "+string(role), func() (bool, error) {
		var err error
		if hist, err = s.AgentHistory(ctx, g); err != nil {
			return false, nil
		}
		for _, tr := range hist {
			if tr.To == role && tr.At.After(since) {
				got = tr
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("%v (history %+v)", err, hist)
	}
	return got
}

// soleHolderFrom is when g became the only holder at or after t, from the
// holder log; it fails the test when g is not the only holder at the end.
func soleHolderFrom(t *testing.T, r *HolderLog, g *Guest, t0, t1 time.Time) time.Time {
	t.Helper()
	spans, err := r.Spans(t0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	last := spans[len(spans)-1]
	if !slices.Equal(last.Holders, []string{g.Name}) {
		t.Fatalf("VIP holders at the end %v, want only %s:%s", last.Holders, g.Name, FormatSpans(spans, t0))
	}
	if last.From.Before(t1) {
		return t1
	}
	return last.From
}

func TestCheckFailureResignsAndRecovers(t *testing.T) {
	delay := ProfileSeed
	delay.Name, delay.PreemptDelay = "preempt-delay", "2"
	nopreempt := ProfileSeed
	nopreempt.Name, nopreempt.NoPreempt = "nopreempt", true
	cases := []struct {
		p Profile
		// back is whether nginx-master takes the VIP back once its check
		// recovers; after is the least time from its leaving FAULT.
		back  bool
		after time.Duration
	}{
		{ProfileSeed, true, 0},
		{delay, true, 2 * time.Second},
		{nopreempt, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.p.Name, func(t *testing.T) {
			s := startStack(t, tc.p)
			m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
			check := onlyCheck(t, s, m)
			if check.State != api.CheckHealthy || check.OnFailure != vrrp.OnFailureResign {
				t.Fatalf("check of %s before the fault: %+v, want healthy with on_failure resign", m.Name, check)
			}
			r := recordHolders(t, s)

			// The check fails: the master resigns (FAULT), the VIP moves,
			// the FAULT entry of its history names the check and why.
			t0 := time.Now()
			if err := s.Web(m).Stop(); err != nil {
				t.Fatal(err)
			}
			waitOwner(t, s, sl)
			failing := waitCheck(t, s, m, api.CheckFailing, t0)
			if failing.Reason == "" {
				t.Errorf("failing check %+v has no reason", failing)
			}
			fault := waitTransition(t, s, m, vrrp.RoleFault, t0)
			if !strings.Contains(fault.Note, check.Name) {
				t.Errorf("FAULT entry %+v: note does not name the check %q", fault, check.Name)
			}
			tookOver := soleHolderFrom(t, r, sl, t0, t0)
			t.Logf("fault -> %s FAULT +%s, VIP only on %s +%s; note %q",
				m.Name, fault.At.Sub(t0).Round(time.Millisecond), sl.Name, tookOver.Sub(t0).Round(time.Millisecond), fault.Note)

			// The check recovers: the master leaves FAULT, and takes the VIP
			// back or not according to preempt and preempt_delay.
			t1 := time.Now()
			if err := s.Web(m).Start(); err != nil {
				t.Fatal(err)
			}
			waitCheck(t, s, m, api.CheckHealthy, t1)
			backup := waitTransition(t, s, m, vrrp.RoleBackup, t1)
			if !tc.back {
				// Three advertisement intervals and more: a preempting
				// member would have taken the VIP back by then.
				hold := time.Now().Add(4 * time.Second)
				for time.Now().Before(hold) {
					time.Sleep(100 * time.Millisecond)
				}
				spans, err := r.Spans(t1, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if len(spans) != 1 || !slices.Equal(spans[0].Holders, []string{sl.Name}) {
					t.Fatalf("with nopreempt the VIP must stay on %s after %s recovered:%s", sl.Name, m.Name, FormatSpans(spans, t1))
				}
				waitOwner(t, s, sl)
				return
			}
			waitOwner(t, s, m)
			back := soleHolderFrom(t, r, m, t1, t1)
			t.Logf("nginx back -> %s BACKUP +%s, VIP back on %s +%s", m.Name,
				backup.At.Sub(t1).Round(time.Millisecond), m.Name, back.Sub(t1).Round(time.Millisecond))
			if got := back.Sub(backup.At); got < tc.after {
				t.Errorf("%s took the VIP back %s after leaving FAULT, want at least the preempt delay %s", m.Name, got, tc.after)
			}
			// Resigning, the master drops the VIP before the backup takes
			// it: never two holders. Preempting, the master adds the VIP
			// before the other hears its advertisement and drops it: a few
			// milliseconds of two holders are VRRP's own, bounded here as
			// keepalived's death is.
			end := time.Now()
			spans, err := r.Spans(t0, end)
			if err != nil {
				t.Fatal(err)
			}
			twoFault, _, _ := r.HolderTimes(t0, t1)
			twoBack, _, _ := r.HolderTimes(t1, end)
			t.Logf("two holders: %s while the master resigned, %s while it preempted:%s", twoFault, twoBack, FormatSpans(spans, t0))
			if twoFault > 0 {
				t.Errorf("two holders for %s while the failing master resigned", twoFault)
			}
			if twoBack > 200*time.Millisecond {
				t.Errorf("two holders for %s while the master took the VIP back, want at most 200ms", twoBack)
			}
		})
	}
}

func TestBackstopMovesVIPWhileAgentStopped(t *testing.T) {
	s := startStack(t, ProfileSeed)
	m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	// The master's agent hangs with its track file saying healthy; only
	// keepalived's backstop script (vipctl check, asking the agent first)
	// can see nginx fail.
	agent := s.Agent(m)
	if err := agent.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Signal(syscall.SIGCONT) })
	r := recordHolders(t, s)
	t0 := time.Now()
	if err := s.Web(m).Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Poll(context.Background(), 20*time.Second, "VIP only on "+sl.Name, func() (bool, error) {
		hs, err := s.VIPHolders()
		return err == nil && len(hs) == 1 && hs[0] == sl, err
	}); err != nil {
		t.Fatal(err)
	}
	moved := soleHolderFrom(t, r, sl, t0, t0)
	// The backstop runs every 3 s (render's default BackstopInterval);
	// asking the stopped agent takes its 1 s timeout, the check itself
	// fails at once (connection refused), then the skew time (< 1 s at
	// advert 1 s): 5 s bound the move, with 1 s for a busy machine.
	const bound = 3*time.Second + time.Second + time.Second + time.Second
	t.Logf("agent stopped, nginx stopped -> VIP only on %s after %s", sl.Name, moved.Sub(t0).Round(time.Millisecond))
	if moved.Sub(t0) > bound {
		t.Errorf("the backstop moved the VIP after %s, want within %s", moved.Sub(t0), bound)
	}
	waitOwner(t, s, sl)
	// Resumed, the master's agent records keepalived's FAULT.
	if err := agent.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitTransition(t, s, m, vrrp.RoleFault, t0)
}

func TestNewMemberNeverHealthyNeverTakesVIP(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/keepalived"); err != nil {
		t.Skip("skipping: keepalived is not installed")
	}
	l := newLab(t, binaries(t))
	ctx := context.Background()
	s, err := l.NewStack(ctx, ProfileSeed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.DumpLogs(tWriter{t})
		}
	})
	m, nw := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	// The group with nginx-master alone, running.
	for _, h := range s.Topo.Hosts {
		for _, c := range s.SeedCommands() {
			if c[0] == "instancegroup-join" {
				c = []string{"instancegroup-join", Group, m.Name}
			}
			if _, err := s.Vipctl(ctx, h, c[0], c[1:]...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.StartGuest(ctx, m); err != nil {
		t.Fatal(err)
	}
	waitOwner(t, s, m)
	r := recordHolders(t, s)

	// nginx-slave joins with its service down: its agent renders, its
	// keepalived starts, and its check never passes.
	for _, h := range s.Topo.Hosts {
		if _, err := s.Vipctl(ctx, h, "instancegroup-join", Group, nw.Name); err != nil {
			t.Fatal(err)
		}
	}
	// Its nginx never runs: started and stopped before the agent starts.
	if err := s.PrepareGuest(nw); err != nil {
		t.Fatal(err)
	}
	w, err := s.StartWeb(nw)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.StartAgent(ctx, nw); err != nil {
		t.Fatal(err)
	}
	if err := s.StartKeepalived(ctx, nw); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	waitCheck(t, s, nw, api.CheckFailing, time.Time{})

	// The master's check fails too: it resigns, and the new member, never
	// healthy, must not take the VIP (no holder at all).
	if err := s.Web(m).Stop(); err != nil {
		t.Fatal(err)
	}
	waitTransition(t, s, m, vrrp.RoleFault, t0)
	// Three advertisement intervals and more after the master's
	// resignation: a member counting itself healthy would be MASTER.
	hold := time.Now().Add(4 * time.Second)
	for time.Now().Before(hold) {
		time.Sleep(100 * time.Millisecond)
	}
	spans, err := r.Spans(t0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range spans {
		if slices.Contains(sp.Holders, nw.Name) {
			t.Fatalf("%s, never healthy, held the VIP:%s", nw.Name, FormatSpans(spans, t0))
		}
	}
	if st, err := s.AgentStatus(ctx, nw); err != nil || st.Role == vrrp.RoleMaster {
		t.Fatalf("%s's agent: role %s (%v), want not MASTER", nw.Name, st.Role, err)
	}

	// Its service comes up: now it is healthy and takes the VIP (what the
	// test would have seen above had the track file started healthy).
	t1 := time.Now()
	w, err = s.StartWeb(nw)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop() //nolint:errcheck // the lab ends it too
	waitCheck(t, s, nw, api.CheckHealthy, t1)
	if err := s.WaitOwner(ctx, nw, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// sampleHolders samples the VIP's holders every interval until stop is
// closed and returns the samples that are not exactly [want].
func sampleHolders(s *Stack, want *Guest, interval time.Duration, stop <-chan struct{}) func() (bad []string, n int) {
	var (
		mu    sync.Mutex
		wrong []string
		count int
		wg    sync.WaitGroup
	)
	t0 := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			hs, err := s.VIPHolders()
			mu.Lock()
			count++
			if err != nil || len(hs) != 1 || hs[0] != want {
				var names []string
				for _, g := range hs {
					names = append(names, g.Name)
				}
				wrong = append(wrong, fmt.Sprintf("+%s %v %v", time.Since(t0).Round(time.Millisecond), names, err))
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	return func() ([]string, int) {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return wrong, count
	}
}

func TestInstancegroupUpdateLive(t *testing.T) {
	cases := []struct {
		p      Profile
		update []string // the instancegroup-update flags
		conf   string   // what each member's keepalived.conf then says
	}{
		{ProfileFast, []string{"--advert-int", "0.2", "--check-interval", "0.1"}, "advert_int 0.2"},
		{ProfileSeed, []string{"--advert-int", "2", "--check-interval", "0.2"}, "advert_int 2"},
	}
	for _, tc := range cases {
		t.Run(tc.p.Name, func(t *testing.T) {
			s := startStack(t, tc.p)
			m := s.Topo.Guest("nginx-master")
			ctx := context.Background()
			r := recordHolders(t, s)
			before := map[string]api.AgentStatus{}
			for _, g := range s.Topo.Guests {
				st, err := s.AgentStatus(ctx, g)
				if err != nil {
					t.Fatal(err)
				}
				before[g.Name] = st
			}
			stop := make(chan struct{})
			samples := sampleHolders(s, m, 20*time.Millisecond, stop)
			t0 := time.Now()
			revs := map[string]uint64{}
			for _, h := range s.Topo.Hosts {
				if _, err := s.Vipctl(ctx, h, "instancegroup-update", append(tc.update, Group)...); err != nil {
					close(stop)
					t.Fatal(err)
				}
				v, err := s.GroupView(ctx, h)
				if err != nil {
					close(stop)
					t.Fatal(err)
				}
				revs[h.ID] = v.Revision
			}
			// Every member renders the new revision and reloads keepalived.
			for _, g := range s.Topo.Guests {
				err := s.Poll(ctx, 20*time.Second, g.Name+" applying revision "+fmt.Sprint(revs[g.Host.ID]), func() (bool, error) {
					st, err := s.AgentStatus(ctx, g)
					if err != nil || st.Revision < revs[g.Host.ID] || st.ConfigHash == before[g.Name].ConfigHash {
						return false, nil
					}
					conf, err := os.ReadFile(s.KeepalivedConf(g))
					return err == nil && strings.Contains(string(conf), tc.conf), nil
				})
				if err != nil {
					close(stop)
					t.Fatal(err)
				}
			}
			applied := time.Since(t0)
			// Three of the new advertisement intervals and more: a backup
			// that misjudged the master's adverts would have taken over.
			hold := time.Now().Add(7 * time.Second)
			for time.Now().Before(hold) {
				time.Sleep(100 * time.Millisecond)
			}
			close(stop)
			bad, n := samples()
			t.Logf("both members applied the update after %s; %d samples every 20 ms", applied.Round(time.Millisecond), n)
			if len(bad) > 0 {
				t.Errorf("the VIP was not on %s alone in %d of %d samples: %v", m.Name, len(bad), n, bad)
			}
			spans, err := r.Spans(t0, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if len(spans) != 1 || !slices.Equal(spans[0].Holders, []string{m.Name}) {
				t.Errorf("address events: the VIP was not on %s alone throughout:%s", m.Name, FormatSpans(spans, t0))
			}
			waitOwner(t, s, m)
		})
	}
}

func TestKeepalivedKilledOnMasterTwoHolders(t *testing.T) {
	for _, p := range []Profile{ProfileSeed, ProfileFast} {
		t.Run(p.Name, func(t *testing.T) {
			s := startStack(t, p)
			m, sl := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
			r := recordHolders(t, s)
			t0 := time.Now()
			if err := s.KillKeepalived(m, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitOwner(t, s, sl)
			end := time.Now()
			spans, err := r.Spans(t0, end)
			if err != nil {
				t.Fatal(err)
			}
			two, none, err := r.HolderTimes(t0, end)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("keepalived SIGKILLed on %s: two holders for %s, none for %s:%s", m.Name,
				two.Round(time.Microsecond), none.Round(time.Microsecond), FormatSpans(spans, t0))
			if two > 200*time.Millisecond {
				t.Errorf("two holders for %s, want at most 200ms", two)
			}
			// The gap with no holder ends with the backup's VRRP takeover
			// (master-down timer: 3 advertisement intervals and the skew);
			// the agent's cleanup must not stretch it.
			adv, err := vrrp.ParseSeconds(p.AdvertInt)
			if err != nil {
				t.Fatal(err)
			}
			takeover := 3*adv.Duration() + adv.Duration() + 500*time.Millisecond
			if none > takeover {
				t.Errorf("no holder for %s, want at most the VRRP takeover (%s with a margin)", none, takeover)
			}
			checkHistory(t, s, m, t0, vrrp.RoleStop)
		})
	}
}
