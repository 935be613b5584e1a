package ownership

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
)

// dualStack builds the seed's group and gives it the IPv6 VIP
// 2001:db8::10 beside 192.0.2.10.
func (f *fixture) dualStack() {
	f.t.Helper()
	f.nginx()
	if _, err := f.svc.AttachNetwork(f.ctx, "nginx", api.AttachNetwork{IP6Addr: ip("2001:db8::10"), RequireDesignatedIP: true}); err != nil {
		f.t.Fatal(err)
	}
	f.rec.Take()
}

// TestDualStackMoveAnnouncesBoth: a move of a dual-stack group announces
// both VIPs for the new owner (the IPv6 one with neighbour
// advertisements, through the same announcer) before the data plane is
// re-pointed, and both bursts stop together on the next move.
func TestDualStackMoveAnnouncesBoth(t *testing.T) {
	f := newFixture(t)
	f.dualStack()
	if !f.svc.WatchVIP(ip("2001:db8::10")) || !f.svc.WatchVIP(ip("192.0.2.10")) {
		t.Fatal("the listener is not told to watch both VIPs")
	}
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	got := f.rec.Take()
	want := []string{
		"garp 192.0.2.10 52:54:00:00:00:11 owner=g1",
		"garp 2001:db8::10 52:54:00:00:00:11 owner=g1",
	}
	if len(got) < 3 || !slices.Equal(got[:2], want) || !strings.HasPrefix(got[2], "apply ") {
		t.Fatalf("calls = %q, want both announcements, then the apply", got)
	}
	// Both bursts run under one context: the next move cancels both.
	first := f.ann.Ctx(0)
	if f.ann.Ctx(1) != first {
		t.Fatal("the IPv6 burst has a context of its own")
	}
	f.clock.Advance(time.Minute)
	if _, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	if first.Err() == nil {
		t.Error("the move to the slave did not stop the master's bursts")
	}
	got = f.rec.Take()
	if len(got) < 2 || got[0] != "garp 192.0.2.10 52:54:00:00:00:12 owner=g2" || got[1] != "garp 2001:db8::10 52:54:00:00:00:12 owner=g2" {
		t.Fatalf("calls after the move = %q", got)
	}
}

// TestDualStackNAObservation: keepalived's unsolicited NA for the IPv6
// VIP moves the group (source "na"), announcing both VIPs; the port rule
// holds for NAs as for GARP; "na" is hostsync's own source.
func TestDualStackNAObservation(t *testing.T) {
	f := newFixture(t)
	f.dualStack()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	f.rec.Take()
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	// From another bridge port than the slave's MAC is pinned to: refused.
	_, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("2001:db8::10"), MAC: slaveMAC, Port: "vm-m", Pinned: "vm-s"})
	if !errors.Is(err, ErrForgedObservation) || !strings.Contains(err.Error(), "neighbour advertisement") {
		t.Fatalf("NA from the wrong port: %v, want ErrForgedObservation naming the NA", err)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g1" {
		t.Fatalf("owner = %+v after a forged NA", o)
	}
	res, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("2001:db8::10"), MAC: slaveMAC, Port: "vm-s", Pinned: "vm-s"})
	if err != nil || !res.Accepted || res.Owner != "nginx-slave" {
		t.Fatalf("NA from the slave: %+v, %v", res, err)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g2" || o.Source != SourceNA {
		t.Fatalf("owner = %+v, want g2 learnt from a neighbour advertisement", o)
	}
	got := f.rec.Take()
	if !slices.Contains(got, "garp 192.0.2.10 52:54:00:00:00:12 owner=g2") || !slices.Contains(got, "garp 2001:db8::10 52:54:00:00:00:12 owner=g2") {
		t.Errorf("a move learnt from the IPv6 VIP does not announce both: %q", got)
	}
	tr := transition(2, "MASTER")
	tr.Source = SourceNA
	if err := CheckClaim("", tr); err == nil {
		t.Error("a guest's claim may use the source reserved for neighbour advertisements")
	}
}

// TestDualStackNSProbeSplitBrain: both members answering one neighbour
// solicitation for the IPv6 VIP is a split brain like two ARP replies,
// and the hold it sets keeps the loser's claims and GARP from moving the
// group (holds are per group, whichever address was probed).
func TestDualStackNSProbeSplitBrain(t *testing.T) {
	f := newFixture(t)
	f.dualStack()
	if _, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)
	p := &fakeProber{}
	f.svc.ProbeAll(f.ctx, p)
	if !slices.Contains(p.vips, ip("2001:db8::10")) || !slices.Contains(p.vips, ip("192.0.2.10")) {
		t.Fatalf("probed %v, want both VIPs", p.vips)
	}
	masterMAC, _ := net.ParseMAC("52:54:00:00:00:11")
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	if _, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("2001:db8::10"), MAC: slaveMAC, At: f.clock.Now(), Reply: true}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Millisecond)
	res, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("2001:db8::10"), MAC: masterMAC, At: f.clock.Now(), Reply: true})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.svc.Status(f.ctx)
	if st.SplitBrains != 1 || st.LastSplitBrain == nil || st.LastSplitBrain.Winner != "nginx-master" ||
		!strings.Contains(st.LastSplitBrain.Reason, "neighbour solicitation for 2001:db8::10") {
		t.Fatalf("status = %+v", st.LastSplitBrain)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g1" || o.Source != SourceNDP || res.Owner != "nginx-master" {
		t.Fatalf("owner = %+v (result %+v), want g1 from the probe answer", o, res)
	}
	// The loser's GARP for the IPv4 VIP, and its MASTER claim, are held.
	f.clock.Advance(5 * time.Second)
	res, err = f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: f.clock.Now()})
	if err != nil || res.Accepted {
		t.Fatalf("the loser's GARP during the split: %+v, %v; want refused", res, err)
	}
	res, err = f.svc.Claim(f.ctx, slave, transition(2, "MASTER"))
	if err != nil || res.Accepted || !strings.Contains(res.Message, "split brain") {
		t.Fatalf("the loser's claim during the split: %+v, %v", res, err)
	}
	// A probe round of the IPv6 VIP answered by one member ends it.
	f.svc.ProbeAll(f.ctx, p)
	if _, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("2001:db8::10"), MAC: masterMAC, At: f.clock.Now(), Reply: true}); err != nil {
		t.Fatal(err)
	}
	f.svc.ProbeAll(f.ctx, p)
	if f.svc.heldAgainst(ip("192.0.2.10"), slaveMAC.String()) {
		t.Error("the split brain outlived a probe round only the master answered")
	}
}

// TestObservationOfNoGroupsIPv6 refuses an NA for an address that is no
// group's VIP, as for GARP.
func TestObservationOfNoGroupsIPv6(t *testing.T) {
	f := newFixture(t)
	f.dualStack()
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	if _, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("2001:db8::99"), MAC: slaveMAC}); !errors.Is(err, inventory.ErrForbidden) {
		t.Fatalf("NA for no group's VIP: %v, want ErrForbidden", err)
	}
}
