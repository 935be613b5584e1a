package hostsync

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
)

// TestPassiveGARPMovesOwnerOnTheWire is the host's GARP loop with real
// sockets in a network namespace of its own: a veth pair, hostsync's GARP
// sender and listener on one end (the "bridge"), a guest on the other. The
// guest's keepalived-style gratuitous ARP request moves the owner, and
// hostsync answers with its own burst (request and reply) for the new owner.
func TestPassiveGARPMovesOwnerOnTheWire(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "hs")
	testutil.IP(t, "-n", ns, "link", "add", "vkhost0", "type", "veth", "peer", "name", "vkguest0")
	testutil.IP(t, "-n", ns, "link", "set", "vkhost0", "up")
	testutil.IP(t, "-n", ns, "link", "set", "vkguest0", "up")

	// Open every socket inside the namespace.
	var (
		sender   *garp.Sender
		listener *garp.Listener
		guest    *packet.Conn
		closers  []io.Closer
	)
	f := newFixture(t, func(o *Options) { o.Announcer = nil })
	var svc *Service // set below, once the sender exists
	watch := func(a netip.Addr) bool { return svc.WatchVIP(a) }
	err := testutil.InNetns(ns, func() error {
		s, c, err := garp.OpenSender("vkhost0", garp.Options{Logger: testLogger(t), Schedule: []time.Duration{0}})
		if err != nil {
			return err
		}
		sender, closers = s, append(closers, c)
		l, c, err := garp.OpenListener("vkhost0", watch, garp.ListenerOptions{Logger: testLogger(t)})
		if err != nil {
			return err
		}
		listener, closers = l, append(closers, c)
		ifi, err := net.InterfaceByName("vkguest0")
		if err != nil {
			return err
		}
		guest, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	closers = append(closers, guest)
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})

	// The service announces through the real sender.
	svc, err = New(f.ctx, f.store, Options{Logger: testLogger(t), Announcer: sender, Backend: f.backend, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	f.svc.Close()
	f.svc = svc
	f.nginx()
	if _, err := svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lerr := make(chan error, 1)
	go func() {
		lerr <- listener.Run(ctx, func(o garp.Observation) {
			if _, err := svc.Observe(ctx, garp.Observation{VIP: o.VIP, MAC: o.MAC, At: o.At}); err != nil {
				t.Errorf("observe: %v", err)
			}
		})
	}()

	// nginx-slave's keepalived becomes MASTER and sends a gratuitous request.
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	vip := netip.MustParseAddr("192.0.2.10")
	req, err := arp.NewPacket(arp.OperationRequest, slaveMAC, vip, ethernet.Broadcast, vip)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := req.MarshalBinary()
	frame, _ := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: slaveMAC, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if _, err := guest.WriteTo(frame, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
		t.Fatal(err)
	}

	// hostsync's burst for the new owner reaches the guest's side: a
	// gratuitous reply (keepalived sends only requests) with the slave's MAC.
	_ = guest.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	for {
		n, _, err := guest.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no GARP reply from hostsync: %v", err)
		}
		var fr ethernet.Frame
		var p arp.Packet
		if fr.UnmarshalBinary(buf[:n]) != nil || p.UnmarshalBinary(fr.Payload) != nil {
			continue
		}
		if p.Operation == arp.OperationReply && p.SenderIP == vip && p.TargetIP == vip && p.SenderHardwareAddr.String() == slaveMAC.String() {
			break
		}
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g2" || o.Source != ownership.SourceGARP {
		t.Fatalf("owner = %+v, want g2 learnt from garp", o)
	}
	// The burst starts before the data plane is re-pointed; wait for it.
	waitFor(t, "the mapping re-pointed to nginx-slave", func() bool {
		ms := f.backend.LastSet()
		return len(ms) == 1 && ms[0].Owner == "nginx-slave"
	})
	cancel()
	if err := <-lerr; !errors.Is(err, context.Canceled) {
		t.Fatalf("listener: %v", err)
	}
}
