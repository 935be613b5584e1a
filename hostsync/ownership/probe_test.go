package ownership

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
)

// fakeProber records the VIPs probed.
type fakeProber struct {
	mu   sync.Mutex
	vips []netip.Addr
}

func (p *fakeProber) Probe(vip netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vips = append(p.vips, vip)
	return nil
}

func TestProbeReplyMovesStaleOwner(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	f.rec.Take()
	// This hostsync missed the move (it was down): the registry still
	// names the master. A probe finds the slave holding the VIP.
	p := &fakeProber{}
	f.svc.ProbeAll(f.ctx, p)
	if len(p.vips) != 1 || p.vips[0] != ip("192.0.2.10") {
		t.Fatalf("probed %v, want the VIP", p.vips)
	}
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	res, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: f.clock.Now(), Reply: true})
	if err != nil || !res.Accepted || res.Owner != "nginx-slave" {
		t.Fatalf("reply from the slave: %+v, %v", res, err)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g2" || o.Source != SourceARP {
		t.Fatalf("owner = %+v, want g2 learnt from an ARP reply", o)
	}
	if st, _ := f.svc.Status(f.ctx); st.SplitBrains != 0 {
		t.Fatalf("a single answer counted as split brain: %+v", st)
	}
}

func TestProbeTwoAnswersAreSplitBrain(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	// The slave owns the VIP (the master's check failed earlier).
	if _, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	f.rec.Take()
	f.svc.ProbeAll(f.ctx, &fakeProber{})
	masterMAC, _ := net.ParseMAC("52:54:00:00:00:11")
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	// Both answer the same probe: both hold the VIP.
	if _, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: f.clock.Now(), Reply: true}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Millisecond)
	res, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: masterMAC, At: f.clock.Now(), Reply: true})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.svc.Status(f.ctx)
	if st.SplitBrains != 1 || st.LastSplitBrain == nil || st.LastSplitBrain.Winner != "nginx-master" ||
		!strings.Contains(st.LastSplitBrain.Reason, "ARP probe") {
		t.Fatalf("status = %+v", st)
	}
	// Resolved deterministically: the higher priority keeps the VIP.
	if o := f.owner("ig-nginx"); o.GuestID != "g1" || res.Owner != "nginx-master" {
		t.Fatalf("owner = %+v (result %+v), want g1", o, res)
	}

	// While the split lasts, the loser's announcements (keepalived repeats
	// its GARP) and MASTER claims do not take the VIP back.
	f.clock.Advance(5 * time.Second)
	res, err = f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: f.clock.Now()})
	if err != nil || res.Accepted {
		t.Fatalf("the loser's GARP during the split: %+v, %v; want refused", res, err)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g1" {
		t.Fatalf("owner = %+v after the loser's GARP, want g1 kept", o)
	}
	res, err = f.svc.Claim(f.ctx, slave, transition(2, "MASTER"))
	if err != nil || res.Accepted || !strings.Contains(res.Message, "split brain") {
		t.Fatalf("the loser's MASTER claim during the split: %+v, %v", res, err)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g1" {
		t.Fatalf("owner = %+v after the loser's claim, want g1 kept", o)
	}

	// An answer long after the probe belongs to no round: no new split.
	f.clock.Advance(5 * time.Second)
	if _, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: f.clock.Now(), Reply: true}); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.svc.Status(f.ctx); st.SplitBrains != 1 {
		t.Fatalf("split brains = %d after a late answer, want 1", st.SplitBrains)
	}
}

func TestOwnerLeavingMasterKicksProbe(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.svc.probeKick:
		t.Fatal("a MASTER claim asked for a probe")
	default:
	}
	f.clock.Advance(time.Second)
	if _, err := f.svc.Claim(f.ctx, master, transition(2, "BACKUP")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.svc.probeKick:
	default:
		t.Fatal("the owner leaving MASTER did not ask for a probe")
	}
	// Only that group's VIP is probed, not every group's.
	mustOther(t, f)
	p := &fakeProber{}
	f.svc.probeKicked(f.ctx, p)
	if fmt.Sprint(p.vips) != "[192.0.2.10]" {
		t.Fatalf("the kicked probe asked for %v, want only nginx's VIP 192.0.2.10", p.vips)
	}
	p = &fakeProber{}
	f.svc.probeKicked(f.ctx, p)
	if len(p.vips) != 0 {
		t.Fatalf("a second round without a kick probed %v", p.vips)
	}
	f.svc.ProbeAll(f.ctx, p)
	if len(p.vips) != 2 {
		t.Fatalf("ProbeAll probed %v, want both groups' VIPs", p.vips)
	}
}

// mustOther adds a second group beside nginx: "other", of g5, with VIP
// 192.0.2.20.
func mustOther(t *testing.T, f *fixture) {
	t.Helper()
	if _, err := f.svc.CreateGroup(f.ctx, api.GroupCreate{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Join(f.ctx, "other", []string{"g5"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.AttachNetwork(f.ctx, "other", api.AttachNetwork{IPAddr: ip("192.0.2.20")}); err != nil {
		t.Fatal(err)
	}
}

func TestSplitHoldEnds(t *testing.T) {
	masterMAC, _ := net.ParseMAC("52:54:00:00:00:11")
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	split := func(t *testing.T) *fixture {
		f := newFixture(t)
		f.nginx()
		if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(time.Minute)
		f.svc.ProbeAll(f.ctx, &fakeProber{})
		for _, mac := range []net.HardwareAddr{masterMAC, slaveMAC} {
			if _, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: mac, At: f.clock.Now(), Reply: true}); err != nil {
				t.Fatal(err)
			}
		}
		if !f.svc.heldAgainst(ip("192.0.2.10"), slaveMAC.String()) {
			t.Fatal("no hold after two answers to one probe")
		}
		return f
	}
	t.Run("a probe answered by one member", func(t *testing.T) {
		f := split(t)
		f.clock.Advance(10 * time.Second)
		f.svc.ProbeAll(f.ctx, &fakeProber{})
		if _, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: masterMAC, At: f.clock.Now(), Reply: true}); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(10 * time.Second)
		f.svc.ProbeAll(f.ctx, &fakeProber{}) // closes the one-answer round
		if f.svc.heldAgainst(ip("192.0.2.10"), slaveMAC.String()) {
			t.Fatal("hold kept after a probe only the master answered")
		}
		// A real failover later moves the VIP again.
		res, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: f.clock.Now()})
		if err != nil || !res.Accepted || res.Owner != "nginx-slave" {
			t.Fatalf("failover after the split: %+v, %v", res, err)
		}
	})
	t.Run("the loser leaves MASTER", func(t *testing.T) {
		f := split(t)
		f.clock.Advance(time.Second)
		if _, err := f.svc.Claim(f.ctx, slave, transition(1, "BACKUP")); err != nil {
			t.Fatal(err)
		}
		if f.svc.heldAgainst(ip("192.0.2.10"), slaveMAC.String()) {
			t.Fatal("hold kept after the loser reported BACKUP")
		}
	})
}

// A stranger answering a probe (proxy ARP, a rogue guest) neither makes a
// split brain nor hides the holder's answer.
func TestProbeStrangerAnswerIgnored(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	f.svc.ProbeAll(f.ctx, &fakeProber{})
	stranger, _ := net.ParseMAC("52:54:00:00:00:99")
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	if _, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: stranger, At: f.clock.Now(), Reply: true}); err == nil {
		t.Fatal("a stranger's answer was accepted")
	}
	res, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: f.clock.Now(), Reply: true})
	if err != nil || !res.Accepted || res.Owner != "nginx-slave" {
		t.Fatalf("the holder's answer after a stranger's: %+v, %v", res, err)
	}
	if st, _ := f.svc.Status(f.ctx); st.SplitBrains != 0 {
		t.Fatalf("split brains = %d, want 0", st.SplitBrains)
	}
}

// TestProbeRoundIsPaced: a round of 100 VIPs goes out in chunks of
// probeChunk, probeChunkGap apart, and each VIP's round starts when its
// own probe is sent (so the answers to the last chunk are counted for
// probeReplyWindow from then, not from the round's start). A kicked probe
// of one VIP needs no pause.
func TestProbeRoundIsPaced(t *testing.T) {
	f := newFixture(t)
	hstest.ManyBulk(t, f.ctx, f.store, 100)
	var pauses []time.Duration
	f.svc.probePause = func(_ context.Context, d time.Duration) error {
		pauses = append(pauses, d)
		f.clock.Advance(d)
		return nil
	}
	start := f.clock.Now()
	p := &fakeProber{}
	f.svc.ProbeAll(f.ctx, p)
	if len(p.vips) != 100 {
		t.Fatalf("probed %d VIPs, want 100", len(p.vips))
	}
	want := []time.Duration{probeChunkGap, probeChunkGap, probeChunkGap} // 32 + 32 + 32 + 4
	if fmt.Sprint(pauses) != fmt.Sprint(want) {
		t.Fatalf("pauses %v, want %v", pauses, want)
	}
	f.svc.mu.Lock()
	for i, v := range p.vips {
		if got, want := f.svc.rounds[v].sent, start.Add(time.Duration(i/probeChunk)*probeChunkGap); !got.Equal(want) {
			t.Errorf("probe %d (%s): round started at +%s, want +%s", i, v, got.Sub(start), want.Sub(start))
		}
	}
	f.svc.mu.Unlock()

	pauses = nil
	f.svc.KickProbe(hstest.ManyVIP(7))
	f.svc.probeKicked(f.ctx, p)
	if len(pauses) != 0 || p.vips[len(p.vips)-1] != hstest.ManyVIP(7) {
		t.Errorf("kicked probe: pauses %v, last probed %s", pauses, p.vips[len(p.vips)-1])
	}

	// A round ended by ctx stops between chunks.
	ctx, cancel := context.WithCancel(f.ctx)
	f.svc.probePause = func(ctx context.Context, d time.Duration) error {
		cancel()
		return ctx.Err()
	}
	p = &fakeProber{}
	f.svc.ProbeAll(ctx, p)
	if len(p.vips) != probeChunk {
		t.Errorf("a cancelled round probed %d VIPs, want the first chunk (%d)", len(p.vips), probeChunk)
	}
}
