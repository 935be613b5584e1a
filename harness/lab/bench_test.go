package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
)

// failoverFigures are the end-to-end figures of one profile.
type failoverFigures struct {
	Profile   string  `json:"profile"`
	Setup     string  `json:"setup"`
	Failovers int     `json:"failovers"`
	VIPMs     summary `json:"fault_to_vip_on_new_master_ms"`
	ClientMs  summary `json:"fault_to_first_client_success_ms"`
	EIPMs     summary `json:"fault_to_eip_applied_ms"`
	// Only where the guests run an agent: keepalived's transition (the
	// notify hook on the new master) → EIP mapping applied, fault → the
	// agent's check failing (a check the agent runs), and fault → the old
	// master leaving MASTER (FAULT for a resign check).
	// LearntFrom counts where the gateway host's hostsync learnt each move
	// from (claim: an agent's report; garp, arp: its own observation;
	// handover: the old master's leaving MASTER).
	LearntFrom map[string]int `json:"gateway_learnt_from"`
	ApplyMs    *summary       `json:"transition_to_eip_applied_ms,omitempty"`
	CheckMs    *summary       `json:"fault_to_check_failing_ms,omitempty"`
	LeftMs     *summary       `json:"fault_to_old_master_left_ms,omitempty"`
	// VIPApplyMs is keepalived's transition as the kernel saw it (the
	// VIP's address event on the new master) → EIP mapping applied on the
	// gateway; MoveMs the gateway hostsync's own part: the claim or
	// observation received → owner recorded, GARP sent and mapping
	// applied. (ApplyMs starts at the notify hook, which keepalived runs
	// after it moved the VIP, later than the mapping is often applied.)
	VIPApplyMs summary `json:"vip_on_new_master_to_eip_applied_ms"`
	MoveMs     summary `json:"gateway_received_to_applied_ms"`
}

// failoverResults is bench/results/failover.json.
type failoverResults struct {
	Measured string            `json:"measured"`
	Fault    string            `json:"fault"`
	Profiles []failoverFigures `json:"profiles"`
	// Ratio of the medians of the seed's hand-written setup to vipkeeper's
	// seed profile (zero when one of them did not run).
	RatioVIP    float64 `json:"ratio_handwritten_to_seed_vip_median"`
	RatioClient float64 `json:"ratio_handwritten_to_seed_client_median"`
}

type summary struct {
	Median float64   `json:"median"`
	P99    float64   `json:"p99"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	All    []float64 `json:"all"`
}

func summarize(v []float64) summary {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return summary{}
	}
	q := func(p float64) float64 {
		// nearest-rank percentile
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return summary{Median: q(0.5), P99: q(0.99), Min: s[0], Max: s[len(s)-1], All: v}
}

const benchFault = "nginx stopped on the VIP's owner, its restart failing"

// BenchmarkFailover measures b.N failovers (run it with -benchtime 20x)
// for each profile, one lab per profile with the same topology and the
// same fault: the VIP's owner loses nginx (stopped; the seed's script's
// restart fails too), the VIP moves, then nginx comes back and the
// higher-priority member takes the VIP back (not measured). The profiles
// are (a) the seed's own hand-written keepalived.conf and check script,
// (b) vipkeeper with the seed's VRRP timing, (c) vipkeeper's fast profile.
// Reported: fault → VIP on the new master, fault → first client success
// through the EIP, fault → EIP mapping applied, and with an agent
// keepalived's transition → EIP applied; the ratio (a)/(b) of the medians.
// The table is printed and written as JSON to bench/results/failover.json.
func BenchmarkFailover(b *testing.B) {
	var all []failoverFigures
	labs := map[string]*failoverLab{}
	defer func() {
		for _, fl := range labs {
			fl.close()
		}
	}()
	for _, p := range []Profile{ProfileSeedHandwritten, ProfileSeed, ProfileFast} {
		b.Run(p.Name, func(b *testing.B) {
			// The benchmark runs once with b.N = 1 before the real run: both
			// runs use the same lab, and only the last run's figures count.
			fl := labs[p.Name]
			if fl == nil {
				fl = newFailoverLab(b, p)
				labs[p.Name] = fl
			}
			b.ResetTimer()
			f := fl.run(b, b.N)
			b.StopTimer()
			b.ReportMetric(f.VIPMs.Median, "vip-median-ms")
			b.ReportMetric(f.ClientMs.Median, "client-median-ms")
			if len(all) > 0 && all[len(all)-1].Profile == f.Profile {
				all = all[:len(all)-1]
			}
			all = append(all, f)
		})
		// One lab at a time on a shared machine.
		if fl := labs[p.Name]; fl != nil {
			fl.close()
			delete(labs, p.Name)
		}
	}
	if len(all) == 0 {
		return
	}
	res := failoverResults{Measured: time.Now().UTC().Format(time.RFC3339), Fault: benchFault, Profiles: all}
	var a, seed *failoverFigures
	for i := range all {
		switch all[i].Profile {
		case ProfileSeedHandwritten.Name:
			a = &all[i]
		case ProfileSeed.Name:
			seed = &all[i]
		}
	}
	if a != nil && seed != nil && seed.VIPMs.Median > 0 && seed.ClientMs.Median > 0 {
		res.RatioVIP = a.VIPMs.Median / seed.VIPMs.Median
		res.RatioClient = a.ClientMs.Median / seed.ClientMs.Median
	}
	printFailoverTable(res)
	dir := filepath.Join("..", "..", "bench", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data, _ := json.MarshalIndent(res, "", "  ")
	path := filepath.Join(dir, "failover.json")
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("written to %s\n", path)
}

func printFailoverTable(res failoverResults) {
	fmt.Printf("\nend-to-end failover (%s), fault: %s\n", res.Measured, res.Fault)
	for _, f := range res.Profiles {
		fmt.Printf("  %-16s %s\n", f.Profile, f.Setup)
	}
	medP99 := func(s *summary) string {
		if s == nil {
			return fmt.Sprintf("%19s", "-")
		}
		return fmt.Sprintf("%7.0f / %7.0f ms", s.Median, s.P99)
	}
	fmt.Printf("%-16s %3s | %-19s | %-19s | %-19s | %-19s | %-19s | %-19s | %-19s | %-19s\n", "profile", "n",
		"fault->VIP med/p99", "fault->client", "fault->EIP applied", "notify->EIP", "VIP->EIP applied", "gw recv->applied",
		"fault->check fails", "fault->master left")
	for _, f := range res.Profiles {
		fmt.Printf("%-16s %3d | %s | %s | %s | %s | %s | %s | %s | %s\n", f.Profile, f.Failovers,
			medP99(&f.VIPMs), medP99(&f.ClientMs), medP99(&f.EIPMs), medP99(f.ApplyMs), medP99(&f.VIPApplyMs), medP99(&f.MoveMs),
			medP99(f.CheckMs), medP99(f.LeftMs))
	}
	for _, f := range res.Profiles {
		fmt.Printf("%-16s the gateway host learnt the moves from %v\n", f.Profile, f.LearntFrom)
	}
	if res.RatioVIP > 0 {
		fmt.Printf("ratio %s / %s of the medians: fault->VIP %.1fx, fault->client %.1fx\n",
			ProfileSeedHandwritten.Name, ProfileSeed.Name, res.RatioVIP, res.RatioClient)
	}
}

// failoverLab is one profile's lab, kept across the benchmark's runs.
type failoverLab struct {
	p             Profile
	l             *Lab
	s             *Stack
	w             *Watch
	master, slave *Guest
}

// newBenchLab opens a lab for a benchmark on the binaries in
// VIPKEEPER_LAB_BIN (make bench builds them), skipping without them, root
// or keepalived. The caller closes it.
func newBenchLab(b *testing.B) *Lab {
	b.Helper()
	if err := Privileged(); err != nil {
		testutil.SkipUnprivileged(b, "skipping: %v", err)
	}
	if _, err := os.Stat("/usr/sbin/keepalived"); err != nil {
		testutil.SkipUnprivileged(b, "skipping: keepalived is not installed")
	}
	bin := os.Getenv("VIPKEEPER_LAB_BIN")
	if bin == "" {
		b.Skip("skipping: set VIPKEEPER_LAB_BIN to the built binaries (make bench does)")
	}
	l, err := New(Options{Bin: bin})
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func newFailoverLab(b *testing.B, p Profile) *failoverLab {
	b.Helper()
	l := newBenchLab(b)
	fl := &failoverLab{p: p, l: l}
	ctx := context.Background()
	s, err := l.NewStack(ctx, p)
	if err != nil {
		fl.fatal(b, err)
	}
	fl.s = s
	if err := s.Seed(ctx, nil); err != nil {
		fl.fatal(b, err)
	}
	for _, g := range s.Topo.Guests {
		if err := s.StartGuest(ctx, g); err != nil {
			fl.fatal(b, err)
		}
	}
	fl.master, fl.slave = s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	if err := s.WaitOwner(ctx, fl.master, 30*time.Second); err != nil {
		fl.fatal(b, err)
	}
	if fl.w, err = s.StartWatch(fl.slave.Host, 10*time.Millisecond); err != nil {
		fl.fatal(b, err)
	}
	return fl
}

func (fl *failoverLab) fatal(b *testing.B, err error) {
	b.Helper()
	if fl.s != nil {
		fl.s.DumpLogs(os.Stderr)
	}
	fl.close()
	b.Fatal(err)
}

func (fl *failoverLab) close() {
	if fl.w != nil {
		fl.w.Stop()
		fl.w = nil
	}
	if fl.l != nil {
		fl.l.Close()
		fl.l = nil
	}
}

// run measures n failovers.
func (fl *failoverLab) run(b *testing.B, n int) failoverFigures {
	b.Helper()
	ctx := context.Background()
	s, master, slave := fl.s, fl.master, fl.slave
	var vip, client, eip, apply, check, left, vipApply, move []float64
	learnt := map[string]int{}
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := s.Web(master).Stop(); err != nil {
			fl.fatal(b, err)
		}
		if err := s.WaitOwner(ctx, slave, 30*time.Second); err != nil {
			fl.fatal(b, err)
		}
		if err := s.Poll(ctx, 5*time.Second, "client answered by the slave", func() (bool, error) {
			_, ok := fl.w.FirstAnswer(slave.Name, t0)
			return ok, nil
		}); err != nil {
			fl.fatal(b, err)
		}
		tl, err := s.MeasureFailover(ctx, fl.w, master, slave, t0)
		if err != nil {
			fl.fatal(b, err)
		}
		va, ok1 := tl.Offset(StepVIP)
		cl, ok2 := tl.Offset(StepClient)
		ap, ok3 := tl.Offset(StepApplied)
		if !ok1 || !ok2 || !ok3 {
			tl.Print(os.Stderr)
			fl.fatal(b, fmt.Errorf("%s failover %d: timeline incomplete", fl.p.Name, i))
		}
		vip, client, eip = append(vip, ms(va)), append(client, ms(cl)), append(eip, ms(ap))
		vipApply, move = append(vipApply, ms(ap-va)), append(move, ms(tl.Move.Applied.Sub(tl.Move.Received)))
		if s.Agent(slave) != nil {
			tr, ok := tl.Offset(StepTransition)
			lf, ok2 := tl.Offset(StepResign)
			if !ok || !ok2 {
				tl.Print(os.Stderr)
				fl.fatal(b, fmt.Errorf("%s failover %d: timeline incomplete", fl.p.Name, i))
			}
			apply, left = append(apply, ms(ap-tr)), append(left, ms(lf))
			if c, ok := tl.Offset(StepCheck); ok {
				check = append(check, ms(c))
			}
		} else if src := tl.Move.Source; src != ownership.SourceGARP && src != ownership.SourceARP {
			// No agent: the gateway host's hostsync learnt the move by
			// itself, from keepalived's GARP (or its own ARP probe).
			tl.Print(os.Stderr)
			fl.fatal(b, fmt.Errorf("%s failover %d: the gateway host learnt the move from %q, want GARP or an ARP probe", fl.p.Name, i, src))
		}
		learnt[tl.Move.Source]++
		// Restore: nginx back on the master, which takes the VIP back.
		if err := s.Web(master).Start(); err != nil {
			fl.fatal(b, err)
		}
		if err := s.WaitOwner(ctx, master, 30*time.Second); err != nil {
			fl.fatal(b, err)
		}
		// Quiet period: the takeover's GARP repeats must not be taken
		// for the next failover's.
		time.Sleep(300 * time.Millisecond)
	}
	f := failoverFigures{Profile: fl.p.Name, Setup: fl.p.Describe(), Failovers: n,
		VIPMs: summarize(vip), ClientMs: summarize(client), EIPMs: summarize(eip), LearntFrom: learnt,
		VIPApplyMs: summarize(vipApply), MoveMs: summarize(move)}
	if len(apply) > 0 {
		a, l := summarize(apply), summarize(left)
		f.ApplyMs, f.LeftMs = &a, &l
	}
	if len(check) > 0 {
		c := summarize(check)
		f.CheckMs = &c
	}
	return f
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// metadataFigures are bench/results/metadata-apply.json.
type metadataFigures struct {
	Measured string `json:"measured"`
	Profile  string `json:"profile"`
	Change   string `json:"change"`
	Changes  int    `json:"changes"`
	Spacing  string `json:"spacing"`
	// One sample per change and member: the admin command on the member's
	// host → its agent reporting the new revision applied (keepalived.conf
	// installed and keepalived reloaded).
	ApplyMs summary `json:"command_to_revision_applied_ms"`
	// The part of it that is vipctl's own run (process start, the admin
	// API's answer with the revision stored).
	CommandMs summary `json:"command_run_ms"`
}

// metadataSpacing separates the changes: more than the agent's default
// min_reload_interval (3 s), which the lab leaves as it is, so that no
// change waits for the previous reload; each change is its own reload.
const metadataSpacing = 3500 * time.Millisecond

// BenchmarkMetadataApply measures b.N live group changes (run it with
// -benchtime 20x): `vipctl instancegroup-update --preempt-delay S` on each
// host (each keeps its own registry in this lab), alternating S between 1
// and 2 so that every change alters keepalived.conf, timed from the command
// until the member's agent reports the new revision applied; keepalived's
// log must show a reload for it. The agents wait on the guest API's long
// poll (poll_interval 1 s stays the fallback). The figures are printed and
// written to bench/results/metadata-apply.json.
func BenchmarkMetadataApply(b *testing.B) {
	p := ProfileSeed
	var (
		fl      *failoverLab // kept across the benchmark's runs
		changes int          // every change differs from the one before
		f       metadataFigures
	)
	defer func() {
		if fl != nil {
			fl.close()
		}
	}()
	b.Run(p.Name, func(b *testing.B) {
		if fl == nil {
			fl = newFailoverLab(b, p)
		}
		s := fl.s
		ctx := context.Background()
		var (
			mu         sync.Mutex // guards the samples
			apply, run []float64
		)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			changes++
			delay := fmt.Sprint(1 + changes%2)
			reloads := map[string]int{}
			for _, g := range s.Topo.Guests {
				reloads[g.Name] = keepalivedReloads(s, g)
			}
			var wg sync.WaitGroup
			errs := make([]error, len(s.Topo.Hosts))
			for hi, h := range s.Topo.Hosts {
				wg.Go(func() {
					t0 := time.Now()
					if _, err := s.Vipctl(ctx, h, "instancegroup-update", "--preempt-delay", delay, Group); err != nil {
						errs[hi] = err
						return
					}
					ran := time.Since(t0)
					v, err := s.GroupView(ctx, h)
					if err != nil {
						errs[hi] = err
						return
					}
					for _, g := range s.Topo.Guests {
						if g.Host != h {
							continue
						}
						var applied time.Time
						err := s.Poll(ctx, 10*time.Second, fmt.Sprintf("%s applying revision %d", g.Name, v.Revision), func() (bool, error) {
							st, err := s.AgentStatus(ctx, g)
							if err != nil || st.Revision < v.Revision || st.LastApply.Before(t0) {
								return false, nil
							}
							applied = st.LastApply
							return true, nil
						})
						if err != nil {
							errs[hi] = err
							return
						}
						mu.Lock()
						apply, run = append(apply, ms(applied.Sub(t0))), append(run, ms(ran))
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					fl.fatal(b, err)
				}
			}
			for _, g := range s.Topo.Guests {
				if err := s.Poll(ctx, 5*time.Second, "keepalived of "+g.Name+" reloaded", func() (bool, error) {
					return keepalivedReloads(s, g) > reloads[g.Name], nil
				}); err != nil {
					fl.fatal(b, err)
				}
			}
			time.Sleep(metadataSpacing)
		}
		b.StopTimer()
		f = metadataFigures{Measured: time.Now().UTC().Format(time.RFC3339), Profile: p.Name,
			Change: "vipctl instancegroup-update --preempt-delay 1|2 on each host", Changes: b.N,
			Spacing: metadataSpacing.String() + " (more than the agent's default min_reload_interval, 3s)",
			ApplyMs: summarize(apply), CommandMs: summarize(run)}
		b.ReportMetric(f.ApplyMs.Median, "apply-median-ms")
		b.ReportMetric(f.ApplyMs.P99, "apply-p99-ms")
	})
	if f.Changes == 0 {
		return
	}
	fmt.Printf("\nmetadata change -> keepalived reloaded with the new revision (%s, profile %s, %d changes on each host, %d samples, spaced %s):\n",
		f.Measured, p.Name, f.Changes, len(f.ApplyMs.All), metadataSpacing)
	fmt.Printf("  command -> revision applied: median %.0f ms, p99 %.0f ms (min %.0f, max %.0f); of which vipctl's own run: median %.0f ms, p99 %.0f ms\n",
		f.ApplyMs.Median, f.ApplyMs.P99, f.ApplyMs.Min, f.ApplyMs.Max, f.CommandMs.Median, f.CommandMs.P99)
	dir := filepath.Join("..", "..", "bench", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data, _ := json.MarshalIndent(f, "", "  ")
	path := filepath.Join(dir, "metadata-apply.json")
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("written to %s\n", path)
}

// keepalivedReloads counts the reloads in g's keepalived log (its parent
// logs "Reloading ..." on each SIGHUP).
func keepalivedReloads(s *Stack, g *Guest) int {
	b, err := os.ReadFile(s.Keepalived(g).Log)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "Reloading ...")
}
