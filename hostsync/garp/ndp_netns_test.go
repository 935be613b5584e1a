package garp

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// neighMAC reads the MAC of ip's neighbour entry on dev in namespace ns
// through netlink (nil when there is none).
func neighMAC(ns, dev string, ip netip.Addr) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := testutil.InNetns(ns, func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("link %s: %w", dev, err)
		}
		ns, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("neighbours of %s: %w", dev, err)
		}
		for _, n := range ns {
			if a, ok := netip.AddrFromSlice(n.IP); ok && a == ip {
				mac = n.HardwareAddr
			}
		}
		return nil
	})
	return mac, err
}

func openNDPSenderIn(t *testing.T, ns, ifname string, opts Options) *Sender {
	t.Helper()
	var s *Sender
	var c io.Closer
	if err := testutil.InNetns(ns, func() (err error) {
		s, c, err = OpenNDPSender(ifname, opts)
		return err
	}); err != nil {
		t.Fatalf("OpenNDPSender(%s in %s): %v", ifname, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return s
}

// TestNetnsNDPProbeFindsHolder: a neighbour solicitation from one end of
// a veth is answered by the kernel of the namespace holding the IPv6 VIP
// (added with nodad, as keepalived adds it), and the Listener on the
// probing end reports the solicited advertisement as a reply with the
// holder's MAC; the listening end has no IPv6 address of its own.
func TestNetnsNDPProbeFindsHolder(t *testing.T) {
	testutil.RequireRoot(t)
	nsH, nsP := testutil.NewNetns(t, "nh"), testutil.NewNetns(t, "np")
	testutil.IP(t, "-n", nsH, "link", "add", "vh", "type", "veth", "peer", "name", "vp", "netns", nsP)
	holderMAC := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x02, 0x0b}
	testutil.IP(t, "-n", nsH, "link", "set", "vh", "address", holderMAC.String())
	testutil.IP(t, "-n", nsH, "link", "set", "vh", "up")
	testutil.IP(t, "-n", nsP, "link", "set", "vp", "up")
	testutil.IP(t, "-n", nsH, "addr", "add", testVIP6.String()+"/64", "dev", "vh", "nodad")

	col := listenIn(t, nsP, "vp", watchOnly(testVIP6))
	s := openNDPSenderIn(t, nsP, "vp", Options{Logger: testLogger(t), Schedule: []time.Duration{0}})
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := s.Probe(testVIP6); err != nil {
			t.Fatalf("Probe: %v", err)
		}
		select {
		case o := <-col.ch:
			if o.VIP != testVIP6 || !bytes.Equal(o.MAC, holderMAC) {
				t.Fatalf("observation %+v, want %s from %s", o, testVIP6, holderMAC)
			}
			if !o.Reply {
				continue // the holder's own unsolicited NA, if its kernel sends one
			}
			return
		case <-tick.C:
		case <-deadline:
			t.Fatal("no answer to the neighbour solicitation observed")
		}
	}
}

// TestNetnsNAUpdatesNeighbour: an unsolicited NA burst from one end of a
// veth (sent from a MAC other than the owner's, as hostsync sends it)
// makes the other end's kernel replace the MAC of its neighbour entry
// for the VIP, and a Listener there sees the NA of an announcer that
// sends from the MAC it names.
func TestNetnsNAUpdatesNeighbour(t *testing.T) {
	testutil.RequireRoot(t)
	nsA, nsB := testutil.NewNetns(t, "na"), testutil.NewNetns(t, "nb")
	testutil.IP(t, "-n", nsA, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nsB)
	testutil.IP(t, "-n", nsA, "link", "set", "va", "up")
	testutil.IP(t, "-n", nsB, "link", "set", "vb", "up")
	testutil.IP(t, "-n", nsB, "addr", "add", "2001:db8::2/64", "dev", "vb", "nodad")
	oldMAC := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x02, 0x0c}
	testutil.IP(t, "-n", nsB, "neigh", "replace", testVIP6.String(), "lladdr", oldMAC.String(), "dev", "vb", "nud", "stale")

	col := listenIn(t, nsB, "vb", watchOnly(testVIP6))
	s := openNDPSenderIn(t, nsA, "va", Options{Logger: testLogger(t), Schedule: []time.Duration{0}})
	// The sending interface's MAC is the Ethernet source; the owner is
	// another MAC, which the neighbour must take, but the Listener must not
	// (the frame does not come from the MAC it names).
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := s.Announce(t.Context(), testVIP6, testMAC); err != nil {
			t.Fatalf("Announce: %v", err)
		}
		mac, err := neighMAC(nsB, "vb", testVIP6)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(mac, testMAC) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("neighbour entry for %s still %s after the NAs", testVIP6, mac)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case o := <-col.ch:
		t.Fatalf("an NA whose Ethernet source is not the MAC it names was observed: %+v", o)
	default:
	}
}

// TestNetnsPortListenerNA: on a bridge, the port listener reports a
// guest's unsolicited NA with the port it came in on, and never the NAs
// this host sends out of the bridge itself.
func TestNetnsPortListenerNA(t *testing.T) {
	testutil.RequireRoot(t)
	nsH, nsG := testutil.NewNetns(t, "nph"), testutil.NewNetns(t, "npg")
	testutil.IP(t, "-n", nsH, "link", "add", "br0", "type", "bridge")
	testutil.IP(t, "-n", nsH, "link", "add", "hp0", "type", "veth", "peer", "name", "gp0", "netns", nsG)
	testutil.IP(t, "-n", nsH, "link", "set", "hp0", "master", "br0")
	for _, l := range []string{"br0", "hp0"} {
		testutil.IP(t, "-n", nsH, "link", "set", l, "up")
	}
	testutil.IP(t, "-n", nsG, "link", "set", "gp0", "address", testMAC.String())
	testutil.IP(t, "-n", nsG, "link", "set", "gp0", "up")

	var hp0 int
	var brMAC net.HardwareAddr
	var l *Listener
	var c io.Closer
	if err := testutil.InNetns(nsH, func() error {
		br, err := net.InterfaceByName("br0")
		if err != nil {
			return err
		}
		brMAC = br.HardwareAddr
		ifi, err := net.InterfaceByName("hp0")
		if err != nil {
			return err
		}
		hp0 = ifi.Index
		port := func(ifindex int) (string, bool) { return "hp0", ifindex == hp0 }
		l, c, err = OpenPortListener("br0", port, watchOnly(testVIP6), ListenerOptions{Logger: testLogger(t)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	stop := runListener(t, l, col)
	t.Cleanup(func() { _ = stop(); c.Close() })

	// This host's own NA out of the bridge is not reported, although it
	// names its own Ethernet source (a frame the parser would take): the
	// kernel filter drops what an interface transmits.
	host := openNDPSenderIn(t, nsH, "br0", Options{Logger: testLogger(t), Schedule: []time.Duration{0}})
	if _, err := host.Announce(t.Context(), testVIP6, brMAC); err != nil {
		t.Fatal(err)
	}
	guest := openNDPSenderIn(t, nsG, "gp0", Options{Logger: testLogger(t), Schedule: []time.Duration{0}})
	o := announceUntilObserved(t, guest, col, testVIP6, testMAC)
	if o.VIP != testVIP6 || !bytes.Equal(o.MAC, testMAC) || o.Port != "hp0" || o.Ifindex != hp0 || o.Reply {
		t.Fatalf("observation %+v, want %s from %s on port hp0", o, testVIP6, testMAC)
	}
	if _, err := host.Announce(t.Context(), testVIP6, brMAC); err != nil {
		t.Fatal(err)
	}
	second := time.Now()
	if _, err := guest.Announce(t.Context(), testVIP6, testMAC); err != nil {
		t.Fatal(err)
	}
	// The guest's NA sent after the host's is seen, so everything before
	// it was read.
	deadline := time.After(10 * time.Second)
	for {
		select {
		case o := <-col.ch:
			if !bytes.Equal(o.MAC, testMAC) {
				t.Fatalf("the host's own NA was observed: %+v", o)
			}
			if o.At.After(second) {
				return
			}
		case <-deadline:
			t.Fatal("the guest's NA after the host's was not observed")
		}
	}
}
