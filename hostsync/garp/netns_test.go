package garp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// Privileged tests: they build network namespaces joined by veth pairs and
// a bridge, and run the Sender and Listener on real AF_PACKET sockets.

func openSenderIn(t *testing.T, ns, ifname string, opts Options) *Sender {
	t.Helper()
	var s *Sender
	var c io.Closer
	if err := testutil.InNetns(ns, func() (err error) {
		s, c, err = OpenSender(ifname, opts)
		return err
	}); err != nil {
		t.Fatalf("OpenSender(%s in %s): %v", ifname, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return s
}

// listenIn opens a Listener on ifname inside ns and runs it until the test
// ends; observations arrive on the returned collector.
func listenIn(t *testing.T, ns, ifname string, watch func(netip.Addr) bool) *collector {
	t.Helper()
	var l *Listener
	var c io.Closer
	if err := testutil.InNetns(ns, func() (err error) {
		l, c, err = OpenListener(ifname, watch, ListenerOptions{Logger: testLogger(t)})
		return err
	}); err != nil {
		t.Fatalf("OpenListener(%s in %s): %v", ifname, ns, err)
	}
	col := newCollector()
	stop := runListener(t, l, col)
	t.Cleanup(func() {
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("Listener.Run = %v, want context.Canceled", err)
		}
		c.Close()
	})
	return col
}

// announceUntilObserved repeats a one-round announcement (links may still
// be coming up) until the collector reports an observation or the
// deadline passes, and returns that observation.
func announceUntilObserved(t *testing.T, s *Sender, col *collector, vip netip.Addr, mac net.HardwareAddr) Observation {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := s.Announce(t.Context(), vip, mac); err != nil {
			t.Fatalf("Announce: %v", err)
		}
		select {
		case o := <-col.ch:
			return o
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("no observation of %s within the deadline", vip)
	return Observation{}
}

func checkObservation(t *testing.T, o Observation, vip netip.Addr, mac net.HardwareAddr, ifname string) {
	t.Helper()
	if o.VIP != vip || !bytes.Equal(o.MAC, mac) || o.Interface != ifname || o.At.IsZero() {
		t.Errorf("observation = %+v, want VIP %s MAC %s on %s", o, vip, mac, ifname)
	}
}

func TestNetnsVethSenderToListener(t *testing.T) {
	testutil.RequireRoot(t)
	nsA, nsB := testutil.NewNetns(t, "ga"), testutil.NewNetns(t, "gb")
	testutil.IP(t, "-n", nsA, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nsB)
	// A announces for its own MAC: a listener only believes a frame whose
	// Ethernet source is the MAC the ARP payload names.
	testutil.IP(t, "-n", nsA, "link", "set", "va", "address", testMAC.String())
	testutil.IP(t, "-n", nsA, "link", "set", "va", "up")
	testutil.IP(t, "-n", nsB, "link", "set", "vb", "up")

	vip2 := netip.MustParseAddr("192.0.2.20")
	vip3 := netip.MustParseAddr("192.0.2.30")
	mac2 := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x02, 0x14}
	col := listenIn(t, nsB, "vb", watchOnly(testVIP, vip2, vip3))
	single := Options{Logger: testLogger(t), Schedule: []time.Duration{0}}
	sA := openSenderIn(t, nsA, "va", single)
	sB := openSenderIn(t, nsB, "vb", single)

	checkObservation(t, announceUntilObserved(t, sA, col, testVIP, testMAC), testVIP, testMAC, "vb")

	// The link works. B's own announcement goes out before A's next one,
	// made with another MAC: had the listener taken B's frame, it would be
	// queued before A's. The host's own frames are not observed.
	if _, err := sB.Announce(t.Context(), vip2, mac2); err != nil {
		t.Fatalf("Announce from B: %v", err)
	}
	if _, err := sA.Announce(t.Context(), vip3, testMAC); err != nil {
		t.Fatalf("Announce from A: %v", err)
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case o := <-col.ch:
			if o.VIP == vip2 {
				t.Fatalf("observed B's own announcement: %+v", o)
			}
			if o.VIP == vip3 {
				checkObservation(t, o, vip3, testMAC, "vb")
				return
			}
		case <-deadline:
			t.Fatal("A's second announcement was not observed")
		}
	}
}

func TestNetnsBridgeWithoutIPv4(t *testing.T) {
	testutil.RequireRoot(t)
	nsH, nsG := testutil.NewNetns(t, "gh"), testutil.NewNetns(t, "gg")
	testutil.IP(t, "-n", nsH, "link", "add", "br0", "type", "bridge")
	// The announced owner is the bridge's own MAC here, so the frame's
	// Ethernet source matches the ARP payload and the far end believes it.
	testutil.IP(t, "-n", nsH, "link", "set", "br0", "address", testMAC.String())
	testutil.IP(t, "-n", nsH, "link", "add", "hp0", "type", "veth", "peer", "name", "gp0", "netns", nsG)
	testutil.IP(t, "-n", nsH, "link", "set", "hp0", "master", "br0")
	for _, l := range []string{"br0", "hp0"} {
		testutil.IP(t, "-n", nsH, "link", "set", l, "up")
	}
	testutil.IP(t, "-n", nsG, "link", "set", "gp0", "up")
	if out, err := exec.Command("ip", "-n", nsH, "-4", "-o", "addr", "show", "dev", "br0").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("br0 must have no IPv4 address: %v %q", err, out)
	}

	// A raw capture on the bridge port itself sees the exact frames.
	var port *packet.Conn
	if err := testutil.InNetns(nsH, func() error {
		ifi, err := net.InterfaceByName("hp0")
		if err != nil {
			return err
		}
		// Frames leaving a port reach ETH_P_ALL sockets only.
		port, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	}); err != nil {
		t.Fatalf("capture on hp0: %v", err)
	}
	t.Cleanup(func() { port.Close() })

	// The guest behind that port learns the owner through a Listener.
	col := listenIn(t, nsG, "gp0", watchOnly(testVIP))
	s := openSenderIn(t, nsH, "br0", Options{Logger: testLogger(t), Schedule: []time.Duration{0}})
	checkObservation(t, announceUntilObserved(t, s, col, testVIP, testMAC), testVIP, testMAC, "gp0")

	// The frames leave with the bridge's own MAC as Ethernet source (so no
	// bridge downstream learns the owner's MAC on this port) and the
	// owner's MAC in the ARP payload.
	var brMAC net.HardwareAddr
	if err := testutil.InNetns(nsH, func() error {
		br, err := net.InterfaceByName("br0")
		if err == nil {
			brMAC = br.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want, err := FramesFrom(brMAC, testVIP, testMAC)
	if err != nil {
		t.Fatal(err)
	}
	// The capture holds every announcement round so far; the first two
	// frames are the first round's request and reply, byte for byte.
	if err := port.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for i := 0; i < len(want); {
		n, _, err := port.ReadFrom(buf)
		if err != nil {
			t.Fatalf("read frame %d on hp0: %v", i, err)
		}
		if n < 14 || ethernet.EtherType(uint16(buf[12])<<8|uint16(buf[13])) != ethernet.EtherTypeARP {
			continue // IPv6 neighbour discovery and the like
		}
		if !bytes.Equal(buf[:n], want[i]) {
			t.Errorf("frame %d on hp0 = % x, want % x", i, buf[:n], want[i])
		}
		i++
	}
}

// TestNetnsProbeFindsHolder: a probe from one end of a veth is answered
// by the kernel of the namespace holding the VIP, and the Listener on the
// probing end reports that reply with the holder's MAC.
func TestNetnsProbeFindsHolder(t *testing.T) {
	testutil.RequireRoot(t)
	nsH, nsP := testutil.NewNetns(t, "gh"), testutil.NewNetns(t, "gp")
	testutil.IP(t, "-n", nsH, "link", "add", "vh", "type", "veth", "peer", "name", "vp", "netns", nsP)
	holderMAC := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x02, 0x0b}
	testutil.IP(t, "-n", nsH, "link", "set", "vh", "address", holderMAC.String())
	testutil.IP(t, "-n", nsH, "link", "set", "vh", "up")
	testutil.IP(t, "-n", nsP, "link", "set", "vp", "up")
	testutil.IP(t, "-n", nsH, "addr", "add", testVIP.String()+"/24", "dev", "vh")

	col := listenIn(t, nsP, "vp", watchOnly(testVIP))
	s := openSenderIn(t, nsP, "vp", Options{Logger: testLogger(t), Schedule: []time.Duration{0}})
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := s.Probe(testVIP); err != nil {
			t.Fatalf("Probe: %v", err)
		}
		select {
		case o := <-col.ch:
			if !o.Reply || o.VIP != testVIP || !bytes.Equal(o.MAC, holderMAC) {
				t.Fatalf("observation %+v, want a reply for %s from %s", o, testVIP, holderMAC)
			}
			return
		case <-tick.C:
		case <-deadline:
			t.Fatal("no reply to the probe observed")
		}
	}
}
