package garp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
)

// IPv6 VIPs are announced and learnt with neighbour discovery (RFC 4861),
// built with mdlayher/ndp: the IPv6 counterparts of the gratuitous ARP
// and the ARP probe.
//
//   - Announcement: an unsolicited neighbour advertisement (NA) to the
//     all-nodes address ff02::1, Override set, Solicited and Router clear,
//     target = the VIP, target link-layer address option = the owner's
//     MAC, IPv6 source = the VIP (as keepalived sends it). Override makes
//     every neighbour that has an entry for the VIP replace its MAC at
//     once (RFC 4861 7.2.5). One NA per round, in the GARP burst's rounds.
//   - Probe: a neighbour solicitation (NS) for the VIP to its
//     solicited-node multicast address, from the sending interface's
//     EUI-64 link-local address with its MAC as source link-layer
//     address. Every holder answers with a solicited NA (Solicited set)
//     to that MAC, which the Listener reports with Reply set. A DAD-style
//     probe from :: would be answered to all-nodes with Solicited clear,
//     indistinguishable from an announcement, which is why the probe has
//     a source.

// EtherTypeIPv6 is the EtherType of IPv6 frames.
const EtherTypeIPv6 ethernet.EtherType = 0x86dd

const (
	ipv6HeaderLen = 40
	protoICMPv6   = 58
	// naMinLen and nsMinLen are the ICMPv6 lengths of a bare NA and NS:
	// type, code, checksum, flags/reserved, target.
	naMinLen = 24
	icmpNA   = 136
	icmpNS   = 135
)

var (
	allNodes    = netip.MustParseAddr("ff02::1")
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
)

var ndpProtocol = protocol{name: "ndp", usable: usableVIP6, round: NAFramesFrom, probe: NSProbeFrame, dst: allNodesMAC}

// usableVIP6 reports whether ip may be announced or learnt as an IPv6
// VIP: global unicast or unique-local IPv6, not link-local (a VIP is
// never link-local), not an IPv4-mapped address.
func usableVIP6(ip netip.Addr) bool {
	return ip.Is6() && !ip.Is4In6() && ip.Zone() == "" && !ip.IsUnspecified() && !ip.IsLoopback() &&
		!ip.IsMulticast() && !ip.IsLinkLocalUnicast()
}

// NewNDPSender returns a Sender that announces IPv6 VIPs with
// unsolicited neighbour advertisements and probes them with neighbour
// solicitations, in the same bounded bursts as NewSender's gratuitous
// ARP (opts.Schedule), writing Ethernet frames for interface ifi through
// conn. It refuses IPv4 VIPs (ErrInvalidAddress).
func NewNDPSender(ifi *net.Interface, conn net.PacketConn, opts Options) (*Sender, error) {
	return newSender(ndpProtocol, ifi, conn, opts)
}

// OpenNDPSender is OpenSender for neighbour advertisements: a raw
// AF_PACKET socket for IPv6 frames on the named interface (a bridge
// without any IPv6 address works) that reads nothing. Needs CAP_NET_RAW.
func OpenNDPSender(ifname string, opts Options) (*Sender, io.Closer, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, nil, fmt.Errorf("ndp: interface %q: %w", ifname, err)
	}
	conn, err := packet.Listen(ifi, packet.Raw, int(EtherTypeIPv6), &packet.Config{Filter: dropAllFilter()})
	if err != nil {
		return nil, nil, fmt.Errorf("ndp: open packet socket on %s: %w", ifname, err)
	}
	s, err := NewNDPSender(ifi, conn, opts)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return s, conn, nil
}

// NAFrames returns the frames of one NA round for vip owned by mac: one
// unsolicited neighbour advertisement from mac to ff02::1.
func NAFrames(vip netip.Addr, mac net.HardwareAddr) ([][]byte, error) {
	return NAFramesFrom(mac, vip, mac)
}

// NAFramesFrom is NAFrames with the Ethernet source src instead of mac
// (the target link-layer address option still names mac as the VIP's
// owner, as GARP's payload does).
func NAFramesFrom(src net.HardwareAddr, vip netip.Addr, mac net.HardwareAddr) ([][]byte, error) {
	if !usableVIP6(vip) || !unicastMAC(mac) || !unicastMAC(src) {
		return nil, fmt.Errorf("%w: vip %s mac %s", ErrInvalidAddress, vip, mac)
	}
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: vip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
	b, err := ipv6Frame(allNodesMAC, src, vip, allNodes, na)
	if err != nil {
		return nil, err
	}
	return [][]byte{b}, nil
}

// NSProbeFrame is the frame Probe sends for an IPv6 VIP: a neighbour
// solicitation for vip to its solicited-node multicast address, from
// src's EUI-64 link-local address, with src as the source link-layer
// address option.
func NSProbeFrame(src net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	if !usableVIP6(vip) || !unicastMAC(src) {
		return nil, fmt.Errorf("%w: vip %s mac %s", ErrInvalidAddress, vip, src)
	}
	dst, err := ndp.SolicitedNodeMulticast(vip)
	if err != nil {
		return nil, fmt.Errorf("ndp: solicited-node address of %s: %w", vip, err)
	}
	d := dst.As16()
	dstMAC := net.HardwareAddr{0x33, 0x33, d[12], d[13], d[14], d[15]}
	ns := &ndp.NeighborSolicitation{
		TargetAddress: vip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: src}},
	}
	return ipv6Frame(dstMAC, src, linkLocal(src), dst, ns)
}

// linkLocal is the EUI-64 link-local address of mac (RFC 4291 appendix
// A): fe80::, then mac with ff:fe in the middle and the universal/local
// bit flipped.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// ipv6Frame wraps an NDP message in an IPv6 header (hop limit 255, as
// RFC 4861 requires of every NDP message) and an Ethernet frame.
func ipv6Frame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, m ndp.Message) ([]byte, error) {
	icmp, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		return nil, fmt.Errorf("ndp: marshal %s: %w", m.Type(), err)
	}
	ip := make([]byte, ipv6HeaderLen, ipv6HeaderLen+len(icmp))
	ip[0] = 6 << 4 // version 6, traffic class and flow label 0
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(icmp)))
	ip[6] = protoICMPv6
	ip[7] = ndp.HopLimit
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	f := ethernet.Frame{Destination: dstMAC, Source: srcMAC, EtherType: EtherTypeIPv6, Payload: append(ip, icmp...)}
	b, err := f.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("ndp: marshal frame: %w", err)
	}
	return b, nil
}

// parseNA decodes one Ethernet frame and returns the advertised target
// and the advertiser's MAC when the frame is a valid neighbour
// advertisement (RFC 4861 7.1.2: hop limit 255, ICMPv6 code 0, a correct
// checksum, options of non-zero length, Solicited clear when sent to a
// multicast address) for a usable IPv6 address, that carries a target
// link-layer address option naming the frame's own Ethernet source (the
// rule parseARP applies to GARP). An unsolicited NA counts only with
// Override set (one without it changes no neighbour's cache, so it does
// not announce a move); a solicited one is an answer to a probe (reply ==
// true). Anything else gives ok == false; it never panics on any input.
func parseNA(b []byte) (target netip.Addr, mac net.HardwareAddr, reply, ok bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil || f.EtherType != EtherTypeIPv6 {
		return netip.Addr{}, nil, false, false
	}
	p := f.Payload
	if len(p) < ipv6HeaderLen || p[0]>>4 != 6 || p[6] != protoICMPv6 || p[7] != ndp.HopLimit {
		return netip.Addr{}, nil, false, false
	}
	n := int(binary.BigEndian.Uint16(p[4:6]))
	if n < naMinLen || len(p) < ipv6HeaderLen+n {
		return netip.Addr{}, nil, false, false
	}
	src := netip.AddrFrom16([16]byte(p[8:24]))
	dst := netip.AddrFrom16([16]byte(p[24:40]))
	icmp := p[ipv6HeaderLen : ipv6HeaderLen+n]
	if icmp[0] != icmpNA || icmp[1] != 0 || icmpChecksum(src, dst, icmp) != 0 || !optionsWellFormed(icmp[naMinLen:]) {
		return netip.Addr{}, nil, false, false
	}
	m, err := ndp.ParseMessage(icmp)
	if err != nil {
		return netip.Addr{}, nil, false, false
	}
	na, isNA := m.(*ndp.NeighborAdvertisement)
	if !isNA || !usableVIP6(na.TargetAddress) || (na.Solicited && dst.IsMulticast()) ||
		(!na.Solicited && !na.Override) {
		return netip.Addr{}, nil, false, false
	}
	var tlla net.HardwareAddr
	for _, o := range na.Options {
		lla, isLLA := o.(*ndp.LinkLayerAddress)
		if !isLLA || lla.Direction != ndp.Target {
			continue
		}
		if tlla != nil {
			return netip.Addr{}, nil, false, false // two answers in one message
		}
		tlla = lla.Addr
	}
	if !unicastMAC(tlla) || !bytes.Equal(f.Source, tlla) {
		return netip.Addr{}, nil, false, false
	}
	return na.TargetAddress, append(net.HardwareAddr(nil), tlla...), na.Solicited, true
}

// optionsWellFormed walks NDP options: each has a non-zero length (in
// units of 8 bytes) and ends within b (RFC 4861 4.6: a zero length is
// invalid and the whole message is dropped).
func optionsWellFormed(b []byte) bool {
	for len(b) > 0 {
		if len(b) < 2 || b[1] == 0 || int(b[1])*8 > len(b) {
			return false
		}
		b = b[int(b[1])*8:]
	}
	return true
}

// icmpChecksum is the ICMPv6 checksum over the IPv6 pseudo-header and
// msg (RFC 4443 2.3); 0 when msg carries a correct checksum.
func icmpChecksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(b[0])<<8 | uint32(b[1])
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var l [8]byte
	binary.BigEndian.PutUint32(l[0:4], uint32(len(msg)))
	l[7] = protoICMPv6
	add(l[:])
	add(msg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Families announces and probes VIPs of both address families: IPv4
// VIPs through V4 (gratuitous ARP, NewSender), IPv6 VIPs through V6
// (neighbour advertisements, NewNDPSender). A nil Sender refuses its
// family with ErrInvalidAddress. It implements the ownership engine's
// Announcer and Prober.
type Families struct {
	V4, V6 *Sender
}

func (f Families) sender(vip netip.Addr) (*Sender, error) {
	s := f.V4
	if vip.Is6() && !vip.Is4In6() {
		s = f.V6
	}
	if s == nil {
		return nil, fmt.Errorf("%w: no sender for the address family of %s", ErrInvalidAddress, vip)
	}
	return s, nil
}

// Start starts the burst for vip through the Sender of its family.
func (f Families) Start(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) (Progress, error) {
	s, err := f.sender(vip)
	if err != nil {
		return Progress{}, err
	}
	return s.Start(ctx, vip, mac)
}

// Probe probes vip through the Sender of its family.
func (f Families) Probe(vip netip.Addr) error {
	s, err := f.sender(vip)
	if err != nil {
		return err
	}
	return s.Probe(vip)
}
