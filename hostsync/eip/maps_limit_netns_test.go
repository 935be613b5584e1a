package eip

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

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
// receiver after a warm-up second, which empties the bucket the kernel
// starts full and lets TCP settle.
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
		mbps := measureThroughput(t, client, srv, limited.EIP, limited.VIP, port, dir, time.Second, 4*time.Second)
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

	// The bandwidth changed: the objects are replaced, the element stays.
	limited.Bandwidth = 20
	before := m.Writes()
	if err := m.Apply(t.Context(), []Mapping{limited, free}); err != nil {
		t.Fatal(err)
	}
	if w := m.Writes(); w.Limits-before.Limits != 2 || w.Batches-before.Batches != 1 || w.Elements != before.Elements {
		t.Errorf("bandwidth change wrote %+v (before %+v), want one batch replacing two limits", w, before)
	}
	port++
	mbps := measureThroughput(t, client, srv, limited.EIP, limited.VIP, port, "in", time.Second, 4*time.Second)
	t.Logf("EIP %s, bandwidth 20, direction in: %.2f Mbit/s", limited.EIP, mbps)
	if mbps < 17 || mbps > 23 {
		t.Errorf("after the change to 20: %.2f Mbit/s, want 20 ± 15 %%", mbps)
	}
}
