package eip

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// Privileged tests of the Maps backend: each creates its own network
// namespace and programs it through netlink; the hand-made drift is made
// through google/nftables too, never with nft.

// netnsFd opens ns and closes the handle when the test ends.
func netnsFd(tb testing.TB, ns string) int {
	tb.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return int(h)
}

// newNetnsMaps returns a Maps backend programming ns.
func newNetnsMaps(tb testing.TB, ns string, log bool) *Maps {
	tb.Helper()
	opts := MapsOptions{NetNS: netnsFd(tb, ns), Netlink: netlinkAt(tb, ns)}
	if log {
		opts.Logger = testLogger(tb)
	}
	m, err := NewMaps(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// handConn is a second nftables connection into ns: the "operator" who
// edits the table by hand.
// repairDrift makes drift by hand (its edits flushed through hand), then
// checks that an Apply of the same set trusts what m programmed (no read,
// no write) and that Reconcile reads the kernel and repairs the drift
// with exactly want written.
func repairDrift(t *testing.T, m *Maps, hand *nftables.Conn, ms []Mapping, drift func(*testing.T), want Writes) {
	t.Helper()
	drift(t)
	if err := hand.Flush(); err != nil {
		t.Fatalf("hand edit: %v", err)
	}
	before := m.Writes()
	if err := m.Apply(t.Context(), ms); err != nil {
		t.Fatal(err)
	}
	if w := diffWrites(m, before); w != (Writes{}) {
		t.Errorf("Apply of the same set wrote %+v", w)
	}
	before = m.Writes()
	if err := m.Reconcile(t.Context()); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if w := diffWrites(m, before); w != want {
		t.Errorf("Reconcile wrote %+v, want %+v", w, want)
	}
}

func handConn(t *testing.T, ns string) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(netnsFd(t, ns)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var testTable = &nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyIPv4}

// kernelPairs reads a map of the table in the kernel as "key value"
// strings.
func kernelPairs(t *testing.T, c *nftables.Conn, name string) map[string]string {
	t.Helper()
	s, err := c.GetSetByName(testTable, name)
	if err != nil {
		t.Fatalf("map %s: %v", name, err)
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range els {
		k, _ := netip.AddrFromSlice(e.Key)
		v, _ := netip.AddrFromSlice(e.Val)
		out[k.String()] = v.String()
	}
	return out
}

func pairsOf(ms []Mapping) (e2v, v2e map[string]string) {
	e2v, v2e = map[string]string{}, map[string]string{}
	for _, m := range ms {
		e2v[m.EIP.String()], v2e[m.VIP.String()] = m.VIP.String(), m.EIP.String()
	}
	return e2v, v2e
}

// element is one map element for hand edits.
func element(k, v string) []nftables.SetElement {
	ka, va := addr(k).As4(), addr(v).As4()
	return []nftables.SetElement{{Key: ka[:], Val: va[:]}}
}

// diffWrites is what the backend wrote since before, every field.
func diffWrites(m *Maps, before Writes) Writes {
	w := m.Writes()
	return Writes{Batches: w.Batches - before.Batches, Elements: w.Elements - before.Elements, Routes: w.Routes - before.Routes,
		Limits: w.Limits - before.Limits}
}

func TestNetnsMapsDriftRepaired(t *testing.T) {
	testutil.RequireRoot(t, "nft")
	ns, peer := testutil.NewNetns(t, "md"), testutil.NewNetns(t, "mp")
	testutil.IP(t, "-n", ns, "link", "add", "r0", "type", "veth", "peer", "name", "p0", "netns", peer)
	testutil.IP(t, "-n", ns, "addr", "add", "198.51.100.1/24", "dev", "r0")
	testutil.IP(t, "-n", ns, "link", "set", "r0", "up")
	testutil.IP(t, "-n", peer, "link", "set", "p0", "up")
	m := newNetnsMaps(t, ns, true)
	hand := handConn(t, ns)

	ms := []Mapping{
		{Group: "a", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10"), NextHop: addr("198.51.100.20")},
		{Group: "b", EIP: addr("203.0.113.6"), VIP: addr("192.0.2.20")},
		{Group: "c", EIP: addr("203.0.113.7"), VIP: addr("192.0.2.30")},
	}
	if err := m.Apply(t.Context(), ms); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantE2V, wantV2E := pairsOf(ms)
	check := func(t *testing.T) {
		t.Helper()
		if diff := cmp.Diff(wantE2V, kernelPairs(t, hand, MapEIPToVIP)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", MapEIPToVIP, diff)
		}
		if diff := cmp.Diff(wantV2E, kernelPairs(t, hand, MapVIPToEIP)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", MapVIPToEIP, diff)
		}
		st, err := m.Programmed(t.Context())
		if want := (State{Table: true, Rules: 3, Mappings: 3, Routes: 1}); err != nil || st != want {
			t.Errorf("Programmed = %+v, %v; want %+v", st, err, want)
		}
		rs := nftList(t, ns)
		for _, line := range []string{
			"dnat to ip daddr map @eip_to_vip",
			"snat to ip saddr map @vip_to_eip",
			"type nat hook prerouting priority dstnat; policy accept;",
			"type nat hook output priority -100; policy accept;",
			"type nat hook postrouting priority srcnat; policy accept;",
		} {
			if !strings.Contains(rs, line) {
				t.Errorf("ruleset lacks %q:\n%s", line, rs)
			}
		}
		if n := strings.Count(rs, "dnat to ip daddr map @eip_to_vip"); n != 2 {
			t.Errorf("%d DNAT rules, want 2 (prerouting and output):\n%s", n, rs)
		}
		if got := testutil.IP(t, "-n", ns, "route", "show", "proto", fmt.Sprint(DefaultRouteProtocol)); !strings.Contains(got, "192.0.2.10 via 198.51.100.20") {
			t.Errorf("VIP route = %q", got)
		}
	}
	check(t)

	for _, tc := range []struct {
		name  string
		drift func(t *testing.T)
		want  Writes // what the repair writes
	}{
		{"element deleted by hand", func(t *testing.T) {
			s, _ := hand.GetSetByName(testTable, MapEIPToVIP)
			if err := hand.SetDeleteElements(s, element("203.0.113.6", "192.0.2.20")); err != nil {
				t.Fatal(err)
			}
		}, Writes{Batches: 1, Elements: 1}},
		{"foreign element added", func(t *testing.T) {
			s, _ := hand.GetSetByName(testTable, MapVIPToEIP)
			if err := hand.SetAddElements(s, element("192.0.2.99", "203.0.113.99")); err != nil {
				t.Fatal(err)
			}
		}, Writes{Batches: 1, Elements: 1}},
		{"element changed by hand", func(t *testing.T) {
			s, _ := hand.GetSetByName(testTable, MapEIPToVIP)
			if err := hand.SetDeleteElements(s, element("203.0.113.7", "192.0.2.30")); err != nil {
				t.Fatal(err)
			}
			if err := hand.SetAddElements(s, element("203.0.113.7", "192.0.2.31")); err != nil {
				t.Fatal(err)
			}
		}, Writes{Batches: 1, Elements: 2}},
		{"rule changed", func(t *testing.T) {
			c := &nftables.Chain{Name: "prerouting", Table: testTable}
			hand.FlushChain(c)
			hand.AddRule(&nftables.Rule{Table: testTable, Chain: c, Exprs: []expr.Any{&expr.Counter{}}})
		}, Writes{Batches: 1}},
		{"route changed", func(t *testing.T) {
			testutil.IP(t, "-n", ns, "route", "replace", "192.0.2.10/32", "via", "198.51.100.66", "proto", fmt.Sprint(DefaultRouteProtocol))
		}, Writes{Routes: 1}},
		{"table deleted", func(t *testing.T) {
			hand.DelTable(testTable)
		}, Writes{Batches: 1, Elements: 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repairDrift(t, m, hand, ms, tc.drift, tc.want)
			check(t)
		})
	}

	t.Run("new backend repairs on its first Apply", func(t *testing.T) {
		s, _ := hand.GetSetByName(testTable, MapEIPToVIP)
		if err := hand.SetDeleteElements(s, element("203.0.113.5", "192.0.2.10")); err != nil {
			t.Fatal(err)
		}
		if err := hand.Flush(); err != nil {
			t.Fatal(err)
		}
		fresh := newNetnsMaps(t, ns, true)
		if err := fresh.Apply(t.Context(), ms); err != nil {
			t.Fatal(err)
		}
		if w := fresh.Writes(); w != (Writes{Batches: 1, Elements: 1}) {
			t.Errorf("first Apply wrote %+v, want one element", w)
		}
		check(t)
	})

	t.Run("Apply reads back after ReadBack", func(t *testing.T) {
		now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		rb, err := NewMaps(MapsOptions{NetNS: netnsFd(t, ns), Netlink: netlinkAt(t, ns), Logger: testLogger(t),
			ReadBack: time.Minute, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		defer rb.Close()
		if err := rb.Apply(t.Context(), ms); err != nil {
			t.Fatal(err)
		}
		s, _ := hand.GetSetByName(testTable, MapVIPToEIP)
		if err := hand.SetDeleteElements(s, element("192.0.2.30", "203.0.113.7")); err != nil {
			t.Fatal(err)
		}
		if err := hand.Flush(); err != nil {
			t.Fatal(err)
		}
		now = now.Add(59 * time.Second)
		before := rb.Writes()
		if err := rb.Apply(t.Context(), ms); err != nil {
			t.Fatal(err)
		}
		if w := diffWrites(rb, before); w != (Writes{}) {
			t.Errorf("Apply 59s after the read wrote %+v, want nothing", w)
		}
		now = now.Add(time.Second)
		if err := rb.Apply(t.Context(), ms); err != nil {
			t.Fatal(err)
		}
		if w := diffWrites(rb, before); w != (Writes{Batches: 1, Elements: 1}) {
			t.Errorf("Apply 60s after the read wrote %+v, want the element repaired", w)
		}
		check(t)
	})

	t.Run("NewNFT defaults to Maps", func(t *testing.T) {
		var n *NFT
		if err := testutil.InNetns(ns, func() (err error) {
			// The netlink socket is opened here, inside ns, and stays there.
			n, err = NewNFT(NFTOptions{Netlink: netlinkAt(t, ns), Logger: testLogger(t)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if n.maps == nil {
			t.Fatal("NewNFT with default options is not the Maps backend")
		}
		if err := n.Apply(t.Context(), ms); err != nil {
			t.Fatal(err)
		}
		if w := n.maps.Writes(); w != (Writes{}) {
			t.Errorf("first Apply over a sound table wrote %+v", w)
		}
		if err := n.Reconcile(t.Context()); err != nil {
			t.Fatal(err)
		}
		check(t)
	})

	t.Run("owner moved: one route, no NAT write", func(t *testing.T) {
		moved := append([]Mapping(nil), ms...)
		moved[0].NextHop = addr("198.51.100.21")
		before := m.Writes()
		if err := m.Apply(t.Context(), moved); err != nil {
			t.Fatal(err)
		}
		if w := diffWrites(m, before); w != (Writes{Routes: 1}) {
			t.Errorf("move wrote %+v, want one route", w)
		}
		if got := testutil.IP(t, "-n", ns, "route", "show", "proto", fmt.Sprint(DefaultRouteProtocol)); !strings.Contains(got, "192.0.2.10 via 198.51.100.21") {
			t.Errorf("VIP route after the move = %q", got)
		}
		if err := m.Apply(t.Context(), ms); err != nil {
			t.Fatal(err)
		}
		check(t)
	})

	t.Run("empty set removes the table and the route", func(t *testing.T) {
		if err := m.Apply(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		if st, err := m.Programmed(t.Context()); err != nil || !st.Empty() {
			t.Errorf("Programmed = %+v, %v; want nothing", st, err)
		}
		if rs := nftList(t, ns); strings.Contains(rs, DefaultTable) {
			t.Errorf("table left:\n%s", rs)
		}
		// And back.
		if err := m.Apply(t.Context(), ms); err != nil {
			t.Fatal(err)
		}
		check(t)
	})
}

// manyMappings returns n mappings with distinct addresses. Beyond the
// documentation ranges' 254 hosts the EIPs come from 198.18.0.0/16 and the
// VIPs from 198.19.0.0/16 (RFC 2544's benchmarking range), in a network
// namespace of the test's own.
func manyMappings(n int) []Mapping {
	ms := make([]Mapping, n)
	for i := range ms {
		ms[i] = Mapping{
			Group: fmt.Sprintf("g%05d", i),
			EIP:   netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}),
			VIP:   netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}),
		}
		if n < 254 {
			ms[i].EIP = netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)})
			ms[i].VIP = netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		}
	}
	return ms
}

func TestNetnsMapsWrites(t *testing.T) {
	testutil.RequireRoot(t, "nft")
	ns := testutil.NewNetns(t, "mw")
	m := newNetnsMaps(t, ns, false)
	ms := manyMappings(10_000)
	if err := m.Apply(t.Context(), ms); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if st, err := m.Programmed(t.Context()); err != nil || st != (State{Table: true, Rules: 3, Mappings: 10_000}) {
		t.Fatalf("Programmed = %+v, %v", st, err)
	}
	changedVIP := append([]Mapping(nil), ms...)
	changedVIP[42].VIP = addr("198.19.200.1")
	for _, step := range []struct {
		name      string
		mappings  []Mapping
		reconcile bool
		want      Writes
	}{
		{"unchanged", ms, false, Writes{}},
		{"unchanged, reconciled", ms, true, Writes{}},
		{"one mapping added", append(ms[:len(ms):len(ms)], Mapping{Group: "new", EIP: addr("198.18.200.1"), VIP: addr("198.19.200.2")}),
			false, Writes{Batches: 1, Elements: 2}},
		{"one mapping removed", ms, false, Writes{Batches: 1, Elements: 2}},
		// The pair's element in each map is replaced: deleted and added
		// in the same transaction.
		{"one VIP changed", changedVIP, false, Writes{Batches: 1, Elements: 4}},
		{"changed set unchanged, reconciled", changedVIP, true, Writes{}},
	} {
		before := m.Writes()
		if err := m.Apply(t.Context(), step.mappings); err != nil {
			t.Fatalf("%s: Apply: %v", step.name, err)
		}
		if step.reconcile {
			if err := m.Reconcile(t.Context()); err != nil {
				t.Fatalf("%s: Reconcile: %v", step.name, err)
			}
		}
		if w := diffWrites(m, before); w != step.want {
			t.Errorf("%s: wrote %+v, want %+v", step.name, w, step.want)
		}
	}
	hand := handConn(t, ns)
	// One mapping changed in the kernel (its element in eip_to_vip
	// deleted by hand): the reconcile of the 10,000 writes that one
	// element back.
	set, err := hand.GetSetByName(testTable, MapEIPToVIP)
	if err != nil {
		t.Fatal(err)
	}
	if err := hand.SetDeleteElements(set, element("198.18.0.7", "198.19.0.7")); err != nil {
		t.Fatal(err)
	}
	if err := hand.Flush(); err != nil {
		t.Fatal(err)
	}
	before := m.Writes()
	if err := m.Reconcile(t.Context()); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if w := diffWrites(m, before); w != (Writes{Batches: 1, Elements: 1}) {
		t.Errorf("reconcile of one element deleted by hand wrote %+v, want one element", w)
	}
	e2v := kernelPairs(t, hand, MapEIPToVIP)
	if e2v["198.18.0.7"] != "198.19.0.7" {
		t.Errorf("198.18.0.7 → %q after the reconcile, want 198.19.0.7", e2v["198.18.0.7"])
	}
	if len(e2v) != 10_000 || e2v["198.18.0.42"] != "198.19.200.1" {
		t.Errorf("%s holds %d pairs, 198.18.0.42 → %q", MapEIPToVIP, len(e2v), e2v["198.18.0.42"])
	}
	v2e := kernelPairs(t, hand, MapVIPToEIP)
	if len(v2e) != 10_000 || v2e["198.19.200.1"] != "198.18.0.42" || v2e["198.19.0.42"] != "" {
		t.Errorf("%s holds %d pairs, wrong for the changed VIP", MapVIPToEIP, len(v2e))
	}
}

// BenchmarkMapsApply measures one Apply of n mappings through netlink in
// a network namespace: "unchanged" applies the same set again (no write),
// "one-changed" moves one pair's VIP back and forth (one batch).
func BenchmarkMapsApply(b *testing.B) {
	testutil.RequireRoot(b, "nft")
	for _, size := range []int{1, 1_000, 10_000} {
		for _, mode := range []string{"unchanged", "one-changed"} {
			b.Run(fmt.Sprintf("mappings=%d/%s", size, mode), func(b *testing.B) {
				ns := testutil.NewNetns(b, "mx")
				m := newNetnsMaps(b, ns, false)
				ms := manyMappings(size)
				alt := append([]Mapping(nil), ms...)
				alt[0].VIP = addr("198.19.255.254")
				ctx := b.Context()
				if err := m.Apply(ctx, ms); err != nil {
					b.Fatal(err)
				}
				before := m.Writes()
				i := 0
				for b.Loop() {
					set := ms
					if mode == "one-changed" && i%2 == 0 {
						set = alt
					}
					i++
					if err := m.Apply(ctx, set); err != nil {
						b.Fatal(err)
					}
				}
				w := diffWrites(m, before)
				b.ReportMetric(float64(w.Batches)/float64(i), "batches/op")
				b.ReportMetric(float64(w.Elements)/float64(i), "elements/op")
			})
		}
	}
}

// TestNetnsMapsConnectionSurvivesChurn keeps a TCP connection open
// through EIP A while EIP B is associated, dissociated and the table
// reconciled 100 times: A's elements are never written, and the
// connection carries an echo after every step.
func TestNetnsMapsConnectionSurvivesChurn(t *testing.T) {
	testutil.RequireRoot(t, "nft")
	client, gw, srv := testutil.NewNetns(t, "tc"), testutil.NewNetns(t, "tg"), testutil.NewNetns(t, "ts")
	// client 198.51.100.2 -- 198.51.100.1 gateway 192.0.2.1 -- 192.0.2.10 server (VIP of A)
	testutil.IP(t, "-n", client, "link", "add", "c0", "type", "veth", "peer", "name", "g0", "netns", gw)
	testutil.IP(t, "-n", client, "addr", "add", "198.51.100.2/24", "dev", "c0")
	testutil.IP(t, "-n", client, "link", "set", "c0", "up")
	testutil.IP(t, "-n", client, "route", "add", "203.0.113.0/24", "via", "198.51.100.1")
	testutil.IP(t, "-n", gw, "addr", "add", "198.51.100.1/24", "dev", "g0")
	testutil.IP(t, "-n", gw, "link", "set", "g0", "up")
	testutil.IP(t, "-n", gw, "link", "add", "g1", "type", "veth", "peer", "name", "s0", "netns", srv)
	testutil.IP(t, "-n", gw, "addr", "add", "192.0.2.1/24", "dev", "g1")
	testutil.IP(t, "-n", gw, "link", "set", "g1", "up")
	testutil.IP(t, "-n", srv, "addr", "add", "192.0.2.10/24", "dev", "s0")
	testutil.IP(t, "-n", srv, "link", "set", "s0", "up")
	testutil.IP(t, "-n", srv, "route", "add", "default", "via", "192.0.2.1")
	if out, err := exec.Command("ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("enable forwarding: %v\n%s", err, out)
	}

	// An echo server in srv and a client socket in client, both opened
	// from a thread inside the namespace; the sockets stay there.
	var ln net.Listener
	if err := testutil.InNetns(srv, func() (err error) {
		ln, err = net.Listen("tcp4", "192.0.2.10:7007")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	m := newNetnsMaps(t, gw, false)
	a := Mapping{Group: "a", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10")}
	b := Mapping{Group: "b", EIP: addr("203.0.113.6"), VIP: addr("192.0.2.20")}
	if err := m.Apply(t.Context(), []Mapping{a}); err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	if err := testutil.InNetns(client, func() (err error) {
		conn, err = net.DialTimeout("tcp4", "203.0.113.5:7007", 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect through EIP A: %v", err)
	}
	defer conn.Close()
	buf := make([]byte, 5)
	echo := func(step string) {
		t.Helper()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("ping\n")); err != nil {
			t.Fatalf("%s: write: %v", step, err)
		}
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping\n" {
			t.Fatalf("%s: echo %q, %v", step, buf, err)
		}
	}
	echo("before")
	before := m.Writes()
	for i := range 100 {
		if err := m.Apply(t.Context(), []Mapping{a, b}); err != nil {
			t.Fatal(err)
		}
		echo(fmt.Sprintf("round %d, B associated", i))
		if err := m.Apply(t.Context(), []Mapping{a}); err != nil {
			t.Fatal(err)
		}
		echo(fmt.Sprintf("round %d, B dissociated", i))
		if err := m.Reconcile(t.Context()); err != nil {
			t.Fatal(err)
		}
		echo(fmt.Sprintf("round %d, reconciled", i))
	}
	// Only B's two elements, added and deleted: 2 batches of 2 per round.
	if w := diffWrites(m, before); w != (Writes{Batches: 200, Elements: 400}) {
		t.Errorf("100 rounds wrote %+v, want 200 batches of B's 2 elements", w)
	}
}
