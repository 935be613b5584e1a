package ownership

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/neigh"
)

// TestForgedGARPOnBridgeChangesNothing is the privileged regression test
// for issue 11 defect 6, on a real Linux bridge with two member ports
// (vkp-m: nginx-master, vkp-s: nginx-slave) and a stranger's port (vkp-x),
// hostsync's production bridge listener (bridgeListen) attributing each
// frame to its ingress port. A GARP with nginx-slave's MAC from the
// stranger's port, and one from nginx-master's port, change nothing: owner,
// GARP sent and data plane untouched; both are counted as forged. The same
// GARP from nginx-slave's own port then moves the VIP.
func TestForgedGARPOnBridgeChangesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "fg")
	testutil.IP(t, "-n", ns, "link", "add", "vkbr0", "type", "bridge")
	testutil.IP(t, "-n", ns, "link", "set", "vkbr0", "up")
	ports := []string{"m", "s", "x"}
	for _, p := range ports {
		testutil.IP(t, "-n", ns, "link", "add", "vkp-"+p, "type", "veth", "peer", "name", "vkg-"+p)
		testutil.IP(t, "-n", ns, "link", "set", "vkp-"+p, "master", "vkbr0")
		testutil.IP(t, "-n", ns, "link", "set", "vkp-"+p, "up")
		testutil.IP(t, "-n", ns, "link", "set", "vkg-"+p, "up")
	}
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br, err := neigh.NewBridge(h, "vkbr0")
	if err != nil {
		t.Fatal(err)
	}

	// A guest's side of each port.
	guests := map[string]*packet.Conn{}
	err = testutil.InNetns(ns, func() error {
		for _, p := range ports {
			ifi, err := net.InterfaceByName("vkg-" + p)
			if err != nil {
				return err
			}
			c, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
			if err != nil {
				return err
			}
			guests[p] = c
		}
		return nil
	})
	for _, c := range guests {
		defer c.Close()
	}
	if err != nil {
		t.Fatal(err)
	}

	logs := testutil.NewLogRecorder(testLogger(t).Handler())
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.Logger = slog.New(logs); o.Metrics = m })
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute) // past the split-brain window
	if err := f.svc.refreshVIPs(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.rec.Take()

	masterMAC, _ := net.ParseMAC("52:54:00:00:00:11")
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	strangerMAC, _ := net.ParseMAC("52:54:00:00:00:99")
	vip := netip.MustParseAddr("192.0.2.10")
	send := func(port string, mac net.HardwareAddr, sender netip.Addr) {
		t.Helper()
		p, err := arp.NewPacket(arp.OperationRequest, mac, sender, ethernet.Broadcast, vip)
		if err != nil {
			t.Fatal(err)
		}
		pb, _ := p.MarshalBinary()
		fr, _ := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: mac, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
		if _, err := guests[port].WriteTo(fr, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
			t.Fatal(err)
		}
	}

	// Each guest talks from its own port first (an RFC 5227 probe: no
	// observation), so the bridge learns and hostsync pins its MAC.
	send("m", masterMAC, netip.IPv4Unspecified())
	send("s", slaveMAC, netip.IPv4Unspecified())
	send("x", strangerMAC, netip.IPv4Unspecified())
	waitFor(t, "the members' MACs pinned to their ports", func() bool {
		if err := br.Refresh(); err != nil {
			t.Fatal(err)
		}
		pm, _ := br.Pinned(masterMAC)
		ps, _ := br.Pinned(slaveMAC)
		return pm == "vkp-m" && ps == "vkp-s"
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan struct{})
	lerr := make(chan error, 1)
	go func() {
		lerr <- testutil.InNetns(ns, func() error {
			close(listening)
			return bridgeListen(br, testLogger(t))(ctx, f.svc.WatchVIP, func(o garp.Observation) {
				if _, err := f.svc.Observe(ctx, o); err != nil && !errors.Is(err, inventory.ErrForbidden) {
					t.Errorf("observe: %v", err)
				}
			})
		})
	}()
	<-listening
	forged := func() float64 { return promtest.ToFloat64(m.observations.WithLabelValues(observationForged)) }
	// The listener's socket may not be open yet when the first frame goes
	// out: resend each forgery until it has been counted.
	for i, port := range []string{"x", "m"} {
		want := float64(i + 1)
		waitFor(t, "the forged GARP from vkp-"+port+" counted", func() bool {
			if forged() < want {
				send(port, slaveMAC, vip)
				time.Sleep(20 * time.Millisecond)
			}
			return forged() >= want
		})
		if got, _ := logs.Attr(msgObservationRefused, "iface"); got != "vkp-"+port {
			t.Errorf("refusal logged for iface %q, want vkp-%s", got, port)
		}
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g1" {
		t.Fatalf("owner = %+v after forged GARPs, want g1 (nginx-master) unchanged", o)
	}
	if ev := f.rec.Take(); len(ev) != 0 {
		t.Fatalf("side effects of forged GARPs: %q, want none (no GARP sent, no data-plane apply)", ev)
	}
	if got := promtest.ToFloat64(m.observations.WithLabelValues("accepted")); got != 0 {
		t.Fatalf("accepted observations = %v, want 0", got)
	}
	if got, _ := logs.Attr(msgObservationRefused, "group"); got != "nginx" {
		t.Errorf("refusal logged for group %q, want nginx", got)
	}

	// The same GARP from nginx-slave's own port is a real move.
	send("s", slaveMAC, vip)
	waitFor(t, "the owner moved to nginx-slave", func() bool { return f.owner("ig-nginx").GuestID == "g2" })
	if got := forged(); got < 2 {
		t.Fatalf("forged = %v", got)
	}
	cancel()
	if err := <-lerr; !errors.Is(err, context.Canceled) {
		t.Fatalf("listener: %v", err)
	}
}
