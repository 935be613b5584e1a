package ownership

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
)

// TestNetnsProbeRoundLosesNoAnswer probes 750 addresses (every usable
// address of the three documentation /24s but a few) held by the kernel
// of one namespace, through hostsync's real sender and listener: the
// engine's paced round gets every answer. The same probes sent as one
// burst, as rounds were sent before, are logged beside it: their answers
// outrun the listener's socket buffer and part of them is lost.
func TestNetnsProbeRoundLosesNoAnswer(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "pr")
	testutil.IP(t, "-n", ns, "link", "add", "hosts0", "type", "veth", "peer", "name", "guests0")
	testutil.IP(t, "-n", ns, "link", "set", "hosts0", "up")
	testutil.IP(t, "-n", ns, "link", "set", "guests0", "up")
	var vips []netip.Addr
	for _, p := range []string{"192.0.2.0", "198.51.100.0", "203.0.113.0"} {
		b := netip.MustParseAddr(p).As4()
		for i := 2; i < 252; i++ {
			b[3] = byte(i)
			vips = append(vips, netip.AddrFrom4(b))
		}
	}
	f := newFixture(t)
	var (
		mu       sync.Mutex
		answered map[netip.Addr]bool
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(answered)
	}
	err := testutil.InNetns(ns, func() error {
		l, err := netlink.LinkByName("guests0")
		if err != nil {
			return err
		}
		for _, v := range vips {
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: netlink.NewIPNet(v.AsSlice())}); err != nil {
				return err
			}
		}
		sender, sc, err := garp.OpenSender("hosts0", garp.Options{})
		if err != nil {
			return err
		}
		defer sc.Close()
		lis, lc, err := garp.OpenListener("hosts0", func(netip.Addr) bool { return true }, garp.ListenerOptions{})
		if err != nil {
			return err
		}
		defer lc.Close()
		ctx, cancel := context.WithCancel(f.ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = lis.Run(ctx, func(o garp.Observation) {
				if o.Reply {
					mu.Lock()
					answered[o.VIP] = true
					mu.Unlock()
				}
			})
		}()
		defer func() { cancel(); <-done }()

		// The listener's socket is open: a probe's answer is read.
		mu.Lock()
		answered = map[netip.Addr]bool{}
		mu.Unlock()
		start := time.Now()
		f.svc.probe(f.ctx, sender, append([]netip.Addr(nil), vips...))
		sent := time.Since(start)
		hstest.WaitFor(t, "every address to answer the paced round", func() bool { return count() == len(vips) })
		t.Logf("paced round: %d of %d answered (sent in %s)", count(), len(vips), sent.Round(time.Millisecond))

		mu.Lock()
		answered = map[netip.Addr]bool{}
		mu.Unlock()
		for _, v := range vips {
			if err := sender.Probe(v); err != nil {
				return err
			}
		}
		deadline := time.Now().Add(2 * time.Second)
		for count() < len(vips) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // the real kernel's answers; nothing to inject
		}
		t.Logf("one burst (as before): %d of %d answered within 2 s", count(), len(vips))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
