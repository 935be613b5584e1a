package eip

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/vipkeeper/vipkeeper/harness/netns"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// Privileged tests of the Maps backend's bandwidth limits, each in
// network namespaces of its own.

// gatewayLab builds client 198.51.100.2 -- 198.51.100.1 gateway
// 192.0.2.1 -- server 192.0.2.10 and 192.0.2.20 (two VIPs) and returns
// the three namespaces. The client reaches 203.0.113.0/24 (the EIPs)
// through the gateway; the server's default route is the gateway.
func gatewayLab(tb testing.TB) (client, gw, srv string) {
	tb.Helper()
	client, gw, srv = testutil.NewNetns(tb, "lc"), testutil.NewNetns(tb, "lg"), testutil.NewNetns(tb, "ls")
	for _, args := range [][]string{
		{"-n", client, "link", "add", "c0", "type", "veth", "peer", "name", "g0", "netns", gw},
		{"-n", client, "addr", "add", "198.51.100.2/24", "dev", "c0"},
		{"-n", client, "link", "set", "c0", "up"},
		{"-n", client, "route", "add", "203.0.113.0/24", "via", "198.51.100.1"},
		{"-n", gw, "addr", "add", "198.51.100.1/24", "dev", "g0"},
		{"-n", gw, "link", "set", "g0", "up"},
		{"-n", gw, "link", "add", "g1", "type", "veth", "peer", "name", "s0", "netns", srv},
		{"-n", gw, "addr", "add", "192.0.2.1/24", "dev", "g1"},
		{"-n", gw, "link", "set", "g1", "up"},
		{"-n", srv, "addr", "add", "192.0.2.10/24", "dev", "s0"},
		{"-n", srv, "addr", "add", "192.0.2.20/24", "dev", "s0"},
		{"-n", srv, "link", "set", "s0", "up"},
		{"-n", srv, "route", "add", "default", "via", "192.0.2.1"},
	} {
		testutil.IP(tb, args...)
	}
	if err := netns.Sysctl(gw, "net.ipv4.ip_forward", "1"); err != nil {
		tb.Fatal(err)
	}
	return client, gw, srv
}

// goodput reads r until it fails and returns the rate, in Mbit/s, of the
// bytes that arrived between warm and warm+span after the first one. It
// closes c when the span is over.
func goodput(c net.Conn, warm, span time.Duration) (float64, error) {
	buf := make([]byte, 256<<10)
	var first time.Time
	var n int64
	c.SetReadDeadline(time.Now().Add(warm + span + 10*time.Second))
	for {
		k, err := c.Read(buf)
		now := time.Now()
		if k > 0 && first.IsZero() {
			first = now
		}
		if el := now.Sub(first); !first.IsZero() && el >= warm {
			if el >= warm+span {
				c.Close()
				return float64(n) * 8 / span.Seconds() / 1e6, nil
			}
			n += int64(k)
		}
		if err != nil {
			return 0, fmt.Errorf("read after %s: %w", now.Sub(first), err)
		}
	}
}

// flood writes to c until a write fails (the reader closed).
func flood(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 256<<10)
	c.SetWriteDeadline(time.Now().Add(time.Minute))
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// measureThroughput connects from client to eip:port, where srv listens
// on vip:port, and measures a bulk TCP transfer in direction dir ("in":
// client to EIP, "out": EIP to client) at the receiver.
func measureThroughput(t *testing.T, client, srv string, eip, vip netip.Addr, port int, dir string, warm, span time.Duration) float64 {
	t.Helper()
	ln, err := netns.Listen(srv, "tcp4", netip.AddrPortFrom(vip, uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		mbps float64
		err  error
	}
	res := make(chan result, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		if dir == "out" {
			flood(c)
			return
		}
		mbps, err := goodput(c, warm, span)
		res <- result{mbps, err}
	})
	c, err := netns.Dial(t.Context(), client, "tcp4", netip.AddrPortFrom(eip, uint16(port)).String())
	if err != nil {
		t.Fatalf("connect to %s: %v", eip, err)
	}
	if dir == "out" {
		mbps, err := goodput(c, warm, span)
		if err != nil {
			t.Fatalf("%s %s: %v", eip, dir, err)
		}
		return mbps
	}
	go flood(c)
	r := <-res
	if r.err != nil {
		t.Fatalf("%s %s: %v", eip, dir, r.err)
	}
	return r.mbps
}

// TestNetnsMapsLimitThroughput sends bulk TCP through a gateway namespace
// programmed by a real Maps backend: an EIP with a 10 Mbit/s bandwidth
// carries 10 Mbit/s ± 15 % in each direction, one without a limit is not
// slowed (at least ten times as fast). The goodput is measured at the
// receiver after a warm-up (limitedWarmUp), which empties the bucket the
// kernel starts full and lets TCP settle.
func TestNetnsMapsLimitThroughput(t *testing.T) {
	testutil.RequireRoot(t)
	client, gw, srv := gatewayLab(t)
	m := newNetnsMaps(t, gw, true)
	limited := Mapping{Group: "a", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10"), Bandwidth: 10}
	free := Mapping{Group: "b", EIP: addr("203.0.113.6"), VIP: addr("192.0.2.20")}
	if err := m.Apply(t.Context(), []Mapping{limited, free}); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Limits(); err != nil || !cmp.Equal(got, map[netip.Addr]int{limited.EIP: 10}) {
		t.Fatalf("Limits = %v, %v; want only %s at 10", got, err, limited.EIP)
	}
	port := 7100
	for _, dir := range []string{"in", "out"} {
		port++
		mbps := measureThroughput(t, client, srv, limited.EIP, limited.VIP, port, dir, limitedWarmUp, 4*time.Second)
		t.Logf("EIP %s, bandwidth 10, direction %s: %.2f Mbit/s", limited.EIP, dir, mbps)
		if mbps < 8.5 || mbps > 11.5 {
			t.Errorf("limited EIP, direction %s: %.2f Mbit/s, want 10 ± 15 %%", dir, mbps)
		}
		port++
		mbps = measureThroughput(t, client, srv, free.EIP, free.VIP, port, dir, 500*time.Millisecond, time.Second)
		t.Logf("EIP %s, no limit, direction %s: %.0f Mbit/s", free.EIP, dir, mbps)
		if mbps < 100 {
			t.Errorf("unlimited EIP, direction %s: %.2f Mbit/s, want at least 100 (ten times the limit)", dir, mbps)
		}
	}

	// The bandwidth changed: the EIP's elements go to the new rate.
	limited.Bandwidth = 20
	before := m.Writes()
	if err := m.Apply(t.Context(), []Mapping{limited, free}); err != nil {
		t.Fatal(err)
	}
	if w := diffWrites(m, before); w != (Writes{Batches: 1, Limits: 4}) {
		t.Errorf("bandwidth change wrote %+v, want one batch replacing the EIP's two limit elements", w)
	}
	port++
	mbps := measureThroughput(t, client, srv, limited.EIP, limited.VIP, port, "in", limitedWarmUp, 4*time.Second)
	t.Logf("EIP %s, bandwidth 20, direction in: %.2f Mbit/s", limited.EIP, mbps)
	if mbps < 17 || mbps > 23 {
		t.Errorf("after the change to 20: %.2f Mbit/s, want 20 ± 15 %%", mbps)
	}
}

// limitedWarmUp is the warm-up before a limited EIP's goodput is
// measured. The kernel's byte limit starts with a second of the rate in
// its bucket, and a TCP flow that the limit keeps backing off may take
// more than a second to spend it: with a one-second warm-up, a 4 s window
// read up to 19 % over the rate after a change to 20 Mbit/s.
const limitedWarmUp = 3 * time.Second

var testLimitTable = &nftables.Table{Name: DefaultTable + LimitTableSuffix, Family: nftables.TableFamilyIPv4}

// handElement is a verdict map element as a person would add it.
func handElement(eip, chain string) []nftables.SetElement {
	k := addr(eip).As4()
	return []nftables.SetElement{{Key: k[:], VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}}}
}

func TestNetnsMapsLimitDrift(t *testing.T) {
	testutil.RequireRoot(t, "nft")
	ns := testutil.NewNetns(t, "ld")
	m := newNetnsMaps(t, ns, true)
	hand := handConn(t, ns)
	ms := []Mapping{
		{Group: "a", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10"), Bandwidth: 10},
		{Group: "b", EIP: addr("203.0.113.6"), VIP: addr("192.0.2.20"), Bandwidth: 100},
		{Group: "c", EIP: addr("203.0.113.7"), VIP: addr("192.0.2.30")},
	}
	if err := m.Apply(t.Context(), ms); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	want := map[netip.Addr]int{addr("203.0.113.5"): 10, addr("203.0.113.6"): 100}
	check := func(t *testing.T) {
		t.Helper()
		if got, err := m.Limits(); err != nil || !cmp.Equal(got, want) {
			t.Errorf("Limits = %v, %v; want %v", got, err, want)
		}
		rs := nftList(t, ns)
		lines := []string{
			"table ip vipkeeper_limit",
			"type filter hook prerouting priority mangle; policy accept;",
			"type filter hook postrouting priority srcnat + 10; policy accept;",
			"ip daddr vmap @eip_limit_in",
			"ip saddr vmap @eip_limit_out",
		}
		for eip, r := range want {
			lines = append(lines,
				fmt.Sprintf("%s : goto bw_%d_in", eip, r),
				fmt.Sprintf("%s : goto bw_%d_out", eip, r),
				fmt.Sprintf("update @bw_%d_in { ip daddr timeout 1m limit rate over %d bytes/second burst 128 kbytes } drop", r, r*125_000),
				fmt.Sprintf("update @bw_%d_out { ip saddr timeout 1m limit rate over %d bytes/second burst 128 kbytes } drop", r, r*125_000),
			)
		}
		for _, line := range lines {
			if !strings.Contains(rs, line) {
				t.Errorf("ruleset lacks %q:\n%s", line, rs)
			}
		}
		for _, e := range ms {
			if _, limited := want[e.EIP]; !limited && strings.Contains(rs, e.EIP.String()+" : goto") {
				t.Errorf("the unlimited EIP %s has a limit:\n%s", e.EIP, rs)
			}
		}
		if n := strings.Count(rs, "vmap @eip_limit_"); n != 2 {
			t.Errorf("%d limit lookups, want 2 (one per direction):\n%s", n, rs)
		}
		if n, r := strings.Count(rs, "update @bw_"), len(rates(want)); n != 2*r {
			t.Errorf("%d rate rules, want %d (one per rate and direction):\n%s", n, 2*r, rs)
		}
	}
	check(t)

	for _, tc := range []struct {
		name  string
		drift func(t *testing.T)
		want  Writes
	}{
		{"rate rule changed by hand", func(t *testing.T) {
			c := &nftables.Chain{Name: "bw_10_in", Table: testLimitTable}
			hand.FlushChain(c)
			exprs := rateRule(10, limitDirs[0], 0)
			exprs[1].(*expr.Dynset).Exprs = []expr.Any{limitExpr(1)}
			exprs[1].(*expr.Dynset).SetName = "bw_10_in"
			hand.AddRule(&nftables.Rule{Table: testLimitTable, Chain: c, Exprs: exprs})
		}, Writes{Batches: 1}},
		{"rate chain flushed", func(t *testing.T) {
			hand.FlushChain(&nftables.Chain{Name: "bw_100_out", Table: testLimitTable})
		}, Writes{Batches: 1}},
		{"element deleted by hand", func(t *testing.T) {
			s, err := hand.GetSetByName(testLimitTable, MapLimitOut)
			if err != nil {
				t.Fatal(err)
			}
			if err := hand.SetDeleteElements(s, handElement("203.0.113.5", "bw_10_out")); err != nil {
				t.Fatal(err)
			}
		}, Writes{Batches: 1, Limits: 1}},
		{"element changed by hand", func(t *testing.T) {
			s, err := hand.GetSetByName(testLimitTable, MapLimitIn)
			if err != nil {
				t.Fatal(err)
			}
			if err := hand.SetDeleteElements(s, handElement("203.0.113.6", "bw_100_in")); err != nil {
				t.Fatal(err)
			}
			if err := hand.SetAddElements(s, handElement("203.0.113.6", "bw_10_in")); err != nil {
				t.Fatal(err)
			}
		}, Writes{Batches: 1, Limits: 2}},
		{"foreign element added", func(t *testing.T) {
			s, err := hand.GetSetByName(testLimitTable, MapLimitIn)
			if err != nil {
				t.Fatal(err)
			}
			if err := hand.SetAddElements(s, handElement("203.0.113.7", "bw_10_in")); err != nil {
				t.Fatal(err)
			}
		}, Writes{Batches: 1, Limits: 1}},
		{"foreign chain and set added", func(t *testing.T) {
			set := &nftables.Set{Table: testLimitTable, Name: "bw_5_in", KeyType: nftables.TypeIPAddr, Dynamic: true,
				HasTimeout: true, Size: limitSetSize}
			if err := hand.AddSet(set, nil); err != nil {
				t.Fatal(err)
			}
			c := hand.AddChain(&nftables.Chain{Name: "bw_5_in", Table: testLimitTable})
			hand.AddRule(&nftables.Rule{Table: testLimitTable, Chain: c, Exprs: rateRule(5, limitDirs[0], set.ID)})
		}, Writes{Batches: 1}},
		{"base rule changed", func(t *testing.T) {
			c := &nftables.Chain{Name: "limit_out", Table: testLimitTable}
			hand.FlushChain(c)
			hand.AddRule(&nftables.Rule{Table: testLimitTable, Chain: c, Exprs: []expr.Any{&expr.Counter{}}})
		}, Writes{Batches: 1}},
		{"table deleted", func(t *testing.T) {
			hand.DelTable(testLimitTable)
		}, Writes{Batches: 1, Limits: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repairDrift(t, m, hand, ms, tc.drift, tc.want)
			check(t)
			if rs := nftList(t, ns); strings.Contains(rs, "bw_5_in") || strings.Contains(rs, "over 125000 bytes/second") {
				t.Errorf("drift left:\n%s", rs)
			}
			before := m.Writes()
			if err := m.Reconcile(t.Context()); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if w := diffWrites(m, before); w != (Writes{}) {
				t.Errorf("a second Reconcile wrote %+v, want nothing", w)
			}
		})
	}

	for _, step := range []struct {
		name string
		bw   [3]int
		want Writes
	}{
		// The EIP's elements go to the new rate's chain, made in the same
		// transaction; the old rate's chain and set go after its last EIP.
		{"one bandwidth changed", [3]int{10, 50, 0}, Writes{Batches: 1, Limits: 4}},
		{"a limit added at a rate in use", [3]int{10, 50, 10}, Writes{Batches: 1, Limits: 2}},
		{"a limit removed", [3]int{10, 0, 10}, Writes{Batches: 1, Limits: 2}},
		{"unchanged", [3]int{10, 0, 10}, Writes{}},
		{"every limit removed: the table goes", [3]int{0, 0, 0}, Writes{Batches: 1, Limits: 4}},
		{"back", [3]int{10, 100, 0}, Writes{Batches: 1, Limits: 4}},
	} {
		t.Run(step.name, func(t *testing.T) {
			want = map[netip.Addr]int{}
			for i := range ms {
				ms[i].Bandwidth = step.bw[i]
				if step.bw[i] > 0 {
					want[ms[i].EIP] = step.bw[i]
				}
			}
			before := m.Writes()
			if err := m.Apply(t.Context(), ms); err != nil {
				t.Fatal(err)
			}
			if w := diffWrites(m, before); w != step.want {
				t.Errorf("Apply wrote %+v, want %+v", w, step.want)
			}
			if len(want) == 0 {
				if rs := nftList(t, ns); strings.Contains(rs, "vipkeeper_limit") {
					t.Errorf("limit table left with no limit:\n%s", rs)
				}
				return
			}
			check(t)
			if rs := nftList(t, ns); strings.Contains(rs, "bw_50_") && want[addr("203.0.113.6")] != 50 {
				t.Errorf("the chain of a rate no longer in use is left:\n%s", rs)
			}
		})
	}
}

// TestNetnsMapsLimitWrites: 10,000 limited EIPs are programmed once;
// reconciling them unchanged writes nothing, one changed bandwidth writes
// one batch replacing its two limits.
func TestNetnsMapsLimitWrites(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "lw")
	m := newNetnsMaps(t, ns, false)
	ms := manyMappings(10_000)
	tiers := []int{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}
	for i := range ms {
		ms[i].Bandwidth = tiers[i%len(tiers)]
	}
	start := time.Now()
	if err := m.Apply(t.Context(), ms); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	t.Logf("first Apply of 10,000 limited mappings: %s, %+v", time.Since(start), m.Writes())
	if w := m.Writes(); w.Limits != 20_000 {
		t.Errorf("first Apply wrote %d limits, want 20,000", w.Limits)
	}
	changed := append([]Mapping(nil), ms...)
	changed[42].Bandwidth = 5000
	for _, step := range []struct {
		name      string
		mappings  []Mapping
		reconcile bool
		want      Writes
	}{
		{"unchanged", ms, false, Writes{}},
		{"unchanged, reconciled", ms, true, Writes{}},
		// A rate not in use yet: its chains are made in the same
		// transaction as the EIP's two elements are replaced.
		{"one bandwidth changed", changed, false, Writes{Batches: 1, Limits: 4}},
		{"changed set reconciled", changed, true, Writes{}},
	} {
		before := m.Writes()
		start := time.Now()
		if err := m.Apply(t.Context(), step.mappings); err != nil {
			t.Fatalf("%s: Apply: %v", step.name, err)
		}
		if step.reconcile {
			if err := m.Reconcile(t.Context()); err != nil {
				t.Fatalf("%s: Reconcile: %v", step.name, err)
			}
		}
		t.Logf("%s: %s", step.name, time.Since(start))
		if w := diffWrites(m, before); w != step.want {
			t.Errorf("%s: wrote %+v, want %+v", step.name, w, step.want)
		}
	}
	got, err := m.Limits()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10_000 || got[changed[42].EIP] != 5000 || got[changed[43].EIP] != tiers[43%len(tiers)] {
		t.Errorf("Limits holds %d EIPs, %s at %d, %s at %d", len(got), changed[42].EIP, got[changed[42].EIP], changed[43].EIP, got[changed[43].EIP])
	}
}
