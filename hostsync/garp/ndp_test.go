package garp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/packet"
)

var testVIP6 = netip.MustParseAddr("2001:db8::10")

// wantNA is the unsolicited NA for 2001:db8::10 owned by testMAC, written
// out byte by byte; its checksum was computed apart from the code under
// test (a one's-complement sum over the pseudo-header and the message).
var wantNA = []byte{
	0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // Ethernet destination: all-nodes multicast
	0x52, 0x54, 0x00, 0x00, 0x02, 0x0a, // Ethernet source: owner MAC
	0x86, 0xdd, // EtherType IPv6
	0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
	0x00, 0x20, // payload length 32
	0x3a,                                                                                           // next header ICMPv6
	0xff,                                                                                           // hop limit 255
	0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, // source: the VIP
	0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // destination ff02::1
	0x88, 0x00, // ICMPv6 type 136 (NA), code 0
	0xa6, 0xaf, // checksum
	0x20, 0x00, 0x00, 0x00, // flags: Override only (Router and Solicited clear)
	0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, // target: the VIP
	0x02, 0x01, 0x52, 0x54, 0x00, 0x00, 0x02, 0x0a, // option 2 (target link-layer address), length 1: owner MAC
}

// wantNS is the probe for 2001:db8::10 from an interface with MAC
// otherMAC, written out byte by byte (checksum computed apart as well).
var wantNS = []byte{
	0x33, 0x33, 0xff, 0x00, 0x00, 0x10, // Ethernet destination: the VIP's solicited-node multicast MAC
	0x52, 0x54, 0x00, 0x00, 0x02, 0x01, // Ethernet source: the probing interface
	0x86, 0xdd, // EtherType IPv6
	0x60, 0x00, 0x00, 0x00, // version 6
	0x00, 0x20, // payload length 32
	0x3a,                                                                                           // next header ICMPv6
	0xff,                                                                                           // hop limit 255
	0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x00, 0x02, 0x01, // source fe80::5054:ff:fe00:201 (EUI-64 of the MAC)
	0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0x10, // destination ff02::1:ff00:10
	0x87, 0x00, // ICMPv6 type 135 (NS), code 0
	0xa7, 0x9a, // checksum
	0x00, 0x00, 0x00, 0x00, // reserved
	0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, // target: the VIP
	0x01, 0x01, 0x52, 0x54, 0x00, 0x00, 0x02, 0x01, // option 1 (source link-layer address), length 1: the probing MAC
}

func TestNAFramesExactBytes(t *testing.T) {
	got, err := NAFrames(testVIP6, testMAC)
	if err != nil {
		t.Fatalf("NAFrames: %v", err)
	}
	if diff := cmp.Diff([][]byte{wantNA}, got); diff != "" {
		t.Errorf("NAFrames (-want +got):\n%s", diff)
	}
	// From the host's interface: only the Ethernet source differs, the
	// option still names the owner.
	from, err := NAFramesFrom(otherMAC, testVIP6, testMAC)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), wantNA...)
	copy(want[6:12], otherMAC)
	if diff := cmp.Diff([][]byte{want}, from); diff != "" {
		t.Errorf("NAFramesFrom (-want +got):\n%s", diff)
	}
}

func TestNSProbeFrameExactBytes(t *testing.T) {
	got, err := NSProbeFrame(otherMAC, testVIP6)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantNS, got); diff != "" {
		t.Errorf("NSProbeFrame (-want +got):\n%s", diff)
	}
	if _, _, _, ok := parseNA(got); ok {
		t.Error("a probe is itself taken for an observation")
	}
}

func TestNDPFramesInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		vip  netip.Addr
		mac  net.HardwareAddr
	}{
		{"IPv4 VIP", testVIP, testMAC},
		{"IPv4-mapped VIP", netip.MustParseAddr("::ffff:192.0.2.10"), testMAC},
		{"link-local VIP", netip.MustParseAddr("fe80::10"), testMAC},
		{"multicast VIP", netip.MustParseAddr("ff02::1"), testMAC},
		{"unspecified VIP", netip.IPv6Unspecified(), testMAC},
		{"loopback VIP", netip.IPv6Loopback(), testMAC},
		{"invalid VIP", netip.Addr{}, testMAC},
		{"zero MAC", testVIP6, zeroMAC},
		{"multicast MAC", testVIP6, allNodesMAC},
		{"short MAC", testVIP6, net.HardwareAddr{1, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NAFrames(tc.vip, tc.mac); !errors.Is(err, ErrInvalidAddress) {
				t.Errorf("NAFrames: %v, want ErrInvalidAddress", err)
			}
			if _, err := NSProbeFrame(tc.mac, tc.vip); !errors.Is(err, ErrInvalidAddress) {
				t.Errorf("NSProbeFrame: %v, want ErrInvalidAddress", err)
			}
		})
	}
}

// rawNA builds a neighbour advertisement frame by hand: flags is the
// first byte of the ICMPv6 body (0x80 Router, 0x40 Solicited, 0x20
// Override), opts the raw options; the checksum is computed with the
// test's own sum unless bad is set.
func rawNA(ethSrc net.HardwareAddr, src, dst netip.Addr, flags byte, target netip.Addr, opts []byte) []byte {
	icmp := []byte{136, 0, 0, 0, flags, 0, 0, 0}
	tg := target.As16()
	icmp = append(icmp, tg[:]...)
	icmp = append(icmp, opts...)
	binary.BigEndian.PutUint16(icmp[2:4], testChecksum(src, dst, icmp))
	b := []byte{0x33, 0x33, 0, 0, 0, 1}
	b = append(b, ethSrc...)
	b = append(b, 0x86, 0xdd, 0x60, 0, 0, 0, byte(len(icmp)>>8), byte(len(icmp)), 58, 255)
	s, d := src.As16(), dst.As16()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	return append(b, icmp...)
}

// testChecksum is the ICMPv6 checksum, written apart from icmpChecksum.
func testChecksum(src, dst netip.Addr, msg []byte) uint16 {
	buf := append(src.AsSlice(), dst.AsSlice()...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(msg)))
	buf = append(buf, 0, 0, 0, 58)
	buf = append(buf, msg...)
	if len(buf)%2 == 1 {
		buf = append(buf, 0)
	}
	var sum uint32
	for i := 0; i < len(buf); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(buf[i:]))
	}
	sum = (sum >> 16) + (sum & 0xffff)
	sum += sum >> 16
	return ^uint16(sum)
}

func tlla(mac net.HardwareAddr) []byte { return append([]byte{2, 1}, mac...) }

func TestParseNA(t *testing.T) {
	vip, other := testVIP6, netip.MustParseAddr("2001:db8::11")
	holderLL := linkLocal(testMAC)
	hostLL := linkLocal(otherMAC)
	unsolicited := rawNA(testMAC, vip, allNodes, 0x20, vip, tlla(testMAC))
	badSum := append([]byte(nil), unsolicited...)
	badSum[57] ^= 0xff
	hop64 := append([]byte(nil), unsolicited...)
	hop64[21] = 64
	code1 := rawNA(testMAC, vip, allNodes, 0x20, vip, tlla(testMAC))
	code1[55] = 1
	binary.BigEndian.PutUint16(code1[56:58], 0)
	binary.BigEndian.PutUint16(code1[56:58], testChecksum(vip, allNodes, code1[54:]))
	solicitedTo := func(dst netip.Addr) []byte {
		b := rawNA(testMAC, holderLL, dst, 0x60, vip, tlla(testMAC))
		copy(b[0:6], otherMAC)
		return b
	}
	padded := append(append([]byte(nil), unsolicited...), make([]byte, 10)...)

	for _, tc := range []struct {
		name      string
		frame     []byte
		ok, reply bool
	}{
		{"unsolicited with Override (keepalived, NAFrames)", unsolicited, true, false},
		{"NAFrames' own frame", wantNA, true, false},
		{"unsolicited from the holder's link-local", rawNA(testMAC, holderLL, allNodes, 0x20, vip, tlla(testMAC)), true, false},
		{"unsolicited with Router and Override", rawNA(testMAC, vip, allNodes, 0xa0, vip, tlla(testMAC)), true, false},
		{"Ethernet padding after the packet", padded, true, false},
		{"solicited answer to a probe", solicitedTo(hostLL), true, true},
		{"unsolicited without Override", rawNA(testMAC, vip, allNodes, 0x00, vip, tlla(testMAC)), false, false},
		{"solicited to a multicast address", rawNA(testMAC, vip, allNodes, 0x60, vip, tlla(testMAC)), false, false},
		{"no target link-layer address", rawNA(testMAC, vip, allNodes, 0x20, vip, nil), false, false},
		{"source link-layer address only", rawNA(testMAC, vip, allNodes, 0x20, vip, append([]byte{1, 1}, testMAC...)), false, false},
		{"two target link-layer addresses", rawNA(testMAC, vip, allNodes, 0x20, vip, append(tlla(testMAC), tlla(testMAC)...)), false, false},
		{"Ethernet source is not the advertised MAC", rawNA(otherMAC, vip, allNodes, 0x20, vip, tlla(testMAC)), false, false},
		{"multicast advertised MAC", rawNA(allNodesMAC, vip, allNodes, 0x20, vip, tlla(allNodesMAC)), false, false},
		{"zero advertised MAC", rawNA(zeroMAC, vip, allNodes, 0x20, vip, tlla(zeroMAC)), false, false},
		{"link-local target", rawNA(testMAC, holderLL, allNodes, 0x20, holderLL, tlla(testMAC)), false, false},
		{"multicast target", rawNA(testMAC, vip, allNodes, 0x20, allNodes, tlla(testMAC)), false, false},
		{"zero-length option", rawNA(testMAC, vip, allNodes, 0x20, vip, append(tlla(testMAC), 5, 0, 0, 0, 0, 0, 0, 0)), false, false},
		{"option past the end", rawNA(testMAC, vip, allNodes, 0x20, vip, []byte{2, 2, 0x52, 0x54, 0, 0, 2, 0x0a}), false, false},
		{"bad checksum", badSum, false, false},
		{"hop limit 64", hop64, false, false},
		{"ICMPv6 code 1", code1, false, false},
		{"another address", rawNA(testMAC, other, allNodes, 0x20, other, tlla(testMAC)), true, false},
		{"a neighbour solicitation", wantNS, false, false},
		{"truncated IPv6", unsolicited[:40], false, false},
		{"truncated ICMPv6", unsolicited[:70], false, false},
		{"an ARP frame", rawARP(1, testMAC, testMAC, [4]byte{192, 0, 2, 10}, zeroMAC, [4]byte{192, 0, 2, 10}), false, false},
		{"empty", nil, false, false},
		{"garbage", bytes.Repeat([]byte{0x86, 0xdd}, 50), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotVIP, gotMAC, reply, ok := parseNA(tc.frame)
			if ok != tc.ok || reply != tc.reply {
				t.Fatalf("ok, reply = %v, %v; want %v, %v", ok, reply, tc.ok, tc.reply)
			}
			if ok && !bytes.Equal(gotMAC, testMAC) {
				t.Errorf("MAC %s, want %s", gotMAC, testMAC)
			}
			if ok && gotVIP != vip && gotVIP != other {
				t.Errorf("VIP %s", gotVIP)
			}
		})
	}
}

func TestNDPSenderBurstAndProbe(t *testing.T) {
	conn := newFakeConn()
	ifi := &net.Interface{Name: "br0", Index: 3, HardwareAddr: otherMAC}
	s, err := NewNDPSender(ifi, conn, Options{Schedule: []time.Duration{0}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Announce(t.Context(), testVIP6, testMAC)
	if err != nil || n != 1 {
		t.Fatalf("Announce = %d, %v; want 1 frame", n, err)
	}
	if err := s.Probe(testVIP6); err != nil {
		t.Fatal(err)
	}
	w := conn.recorded()
	if len(w) != 2 {
		t.Fatalf("%d writes, want the NA and the NS", len(w))
	}
	na := append([]byte(nil), wantNA...)
	copy(na[6:12], otherMAC) // the host's interface sends it
	if !bytes.Equal(w[0].frame, na) {
		t.Errorf("NA\n got % x\nwant % x", w[0].frame, na)
	}
	if !bytes.Equal(w[1].frame, wantNS) {
		t.Errorf("NS\n got % x\nwant % x", w[1].frame, wantNS)
	}
	if a, ok := w[0].dst.(*packet.Addr); !ok || !bytes.Equal(a.HardwareAddr, allNodesMAC) {
		t.Errorf("NA written to %v, want %s", w[0].dst, allNodesMAC)
	}
	// An NDP sender refuses IPv4 VIPs, the ARP sender IPv6 ones.
	if _, err := s.Announce(t.Context(), testVIP, testMAC); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("NDP Announce(IPv4): %v, want ErrInvalidAddress", err)
	}
	if err := s.Probe(testVIP); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("NDP Probe(IPv4): %v, want ErrInvalidAddress", err)
	}
	arp, err := NewSender(ifi, newFakeConn(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := arp.Announce(t.Context(), testVIP6, testMAC); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("ARP Announce(IPv6): %v, want ErrInvalidAddress", err)
	}
}

func TestFamiliesDispatch(t *testing.T) {
	ifi := &net.Interface{Name: "br0", Index: 3, HardwareAddr: otherMAC}
	c4, c6 := newFakeConn(), newFakeConn()
	s4, err := NewSender(ifi, c4, Options{Schedule: []time.Duration{0}})
	if err != nil {
		t.Fatal(err)
	}
	s6, err := NewNDPSender(ifi, c6, Options{Schedule: []time.Duration{0}})
	if err != nil {
		t.Fatal(err)
	}
	f := Families{V4: s4, V6: s6}
	if _, err := f.Start(t.Context(), testVIP, testMAC); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Start(t.Context(), testVIP6, testMAC); err != nil {
		t.Fatal(err)
	}
	if err := f.Probe(testVIP6); err != nil {
		t.Fatal(err)
	}
	if n4, n6 := len(c4.recorded()), len(c6.recorded()); n4 != 2 || n6 != 2 {
		t.Errorf("writes: %d ARP (want 2: request and reply), %d NDP (want 2: NA and NS)", n4, n6)
	}
	if err := (Families{V4: s4}).Probe(testVIP6); !errors.Is(err, ErrInvalidAddress) {
		t.Errorf("no V6 sender: %v, want ErrInvalidAddress", err)
	}
}

func TestListenerReportsNA(t *testing.T) {
	conn := newFakeConn()
	l, err := NewListener("br0", conn, watchOnly(testVIP6), ListenerOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var got []Observation
	report := func(o Observation) { got = append(got, o) }
	l.handle(wantNA, nil, report)
	solicited := rawNA(testMAC, linkLocal(testMAC), linkLocal(otherMAC), 0x60, testVIP6, tlla(testMAC))
	l.handle(solicited, nil, report)
	l.handle(rawNA(testMAC, testVIP6, allNodes, 0x20, netip.MustParseAddr("2001:db8::99"), tlla(testMAC)), nil, report) // not watched
	if len(got) != 2 {
		t.Fatalf("%d observations, want the NA and the answer: %+v", len(got), got)
	}
	if got[0].VIP != testVIP6 || !bytes.Equal(got[0].MAC, testMAC) || got[0].Reply {
		t.Errorf("unsolicited NA gave %+v", got[0])
	}
	if got[1].VIP != testVIP6 || !got[1].Reply {
		t.Errorf("solicited NA gave %+v, want Reply", got[1])
	}
}

// FuzzListenerDecodeNA feeds arbitrary frames to the listener's decode
// path, seeded with neighbour advertisements and their near misses: it
// must never panic, and whatever it accepts must be an IPv6 VIP with a
// unicast MAC that, announced again, is learnt back the same.
func FuzzListenerDecodeNA(f *testing.F) {
	vip := testVIP6
	for _, s := range [][]byte{
		wantNA, wantNS, wantNA[:60], wantNA[:54], nil,
		rawNA(testMAC, linkLocal(testMAC), linkLocal(otherMAC), 0x60, vip, tlla(testMAC)),
		rawNA(testMAC, vip, allNodes, 0x00, vip, tlla(testMAC)),
		rawNA(testMAC, vip, allNodes, 0x20, vip, append(tlla(testMAC), 5, 0, 0, 0, 0, 0, 0, 0)),
		rawNA(testMAC, vip, allNodes, 0x20, vip, append(tlla(testMAC), 1, 1, 0x52, 0x54, 0, 0, 2, 1, 3, 4, 64, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
	} {
		f.Add(s)
	}
	fuzzListener(f, func(t *testing.T, o Observation) {
		if o.VIP.Is4() {
			return // an ARP frame: FuzzListenerDecode's part
		}
		if !usableVIP6(o.VIP) {
			t.Fatalf("accepted an unusable IPv6 address: %+v", o)
		}
		again, err := NAFrames(o.VIP, o.MAC)
		if err != nil {
			t.Fatalf("NAFrames(%s, %s): %v", o.VIP, o.MAC, err)
		}
		v, m, reply, ok := parseNA(again[0])
		if !ok || reply || v != o.VIP || !bytes.Equal(m, o.MAC) {
			t.Fatalf("round trip of %s %s gave %s %s %v %v", o.VIP, o.MAC, v, m, reply, ok)
		}
	})
}
