// Package garp sends gratuitous ARP for a VIP on behalf of its new owner and
// listens for the gratuitous ARP that keepalived sends, so hostsync learns a
// move even when the guest's agent is down. For IPv6 VIPs it does the same
// with neighbour discovery (ndp.go): unsolicited neighbour advertisements
// in the same bounded bursts, neighbour solicitations as probes, and the
// advertisements keepalived sends learnt by the same Listener.
//
// Frames are built with mdlayher/arp and mdlayher/ethernet and written to or
// read from a net.PacketConn: in production an AF_PACKET socket from
// mdlayher/packet (see OpenSender and OpenListener), which works on a bridge
// that carries no IPv4 address; in tests a fake that records the bytes.
package garp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

var (
	// ErrInvalidAddress is returned by Start and Announce when the VIP is not a
	// usable unicast IPv4 address or the MAC is not a unicast Ethernet
	// address.
	ErrInvalidAddress = errors.New("garp: invalid address")
	// ErrInvalidOptions is returned by NewSender, NewListener and the Open
	// helpers when a required argument is missing or a schedule breaks the
	// burst policy.
	ErrInvalidOptions = errors.New("garp: invalid options")
)

// usableVIP reports whether ip may be announced or learnt: unicast IPv4
// (an IPv4-mapped IPv6 address counts as IPv4), not 0.0.0.0, not
// broadcast, not multicast, not loopback.
func usableVIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.Is4() && !ip.IsUnspecified() && !ip.IsMulticast() && !ip.IsLoopback() &&
		ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// unicastMAC reports whether mac is a 6-byte unicast Ethernet address other
// than all zeros.
func unicastMAC(mac net.HardwareAddr) bool {
	if len(mac) != 6 || mac[0]&0x01 != 0 {
		return false
	}
	for _, b := range mac {
		if b != 0 {
			return true
		}
	}
	return false
}

// parseFrame decodes an ARP frame (parseARP) or an IPv6 neighbour
// advertisement (parseNA): the announced or answering VIP, the MAC that
// holds it, and whether it answers a probe.
func parseFrame(b []byte) (ip netip.Addr, mac net.HardwareAddr, reply, ok bool) {
	if ip, mac, reply, ok = parseARP(b); ok {
		return ip, mac, reply, ok
	}
	return parseNA(b)
}

// parseGratuitous decodes one Ethernet frame and returns the announced
// address and the announcer's MAC when the frame is a gratuitous ARP
// (request or reply over Ethernet/IPv4 whose sender IP equals its target
// IP) for a usable address. The MAC is the ARP sender hardware address, a
// fresh copy. Anything else (other EtherTypes, ordinary requests and
// replies, ARP probes with sender 0.0.0.0, truncated or malformed frames)
// gives ok == false; it never panics on any input.
func parseGratuitous(b []byte) (vip netip.Addr, mac net.HardwareAddr, ok bool) {
	vip, mac, reply, ok := parseARP(b)
	if !ok || reply {
		return netip.Addr{}, nil, false
	}
	return vip, mac, true
}

// parseARP is parseGratuitous that also accepts an ARP reply whose sender
// is a usable address (reply == true): only the holder of an address
// answers for it, so a reply to a probe says who holds the VIP now.
func parseARP(b []byte) (ip netip.Addr, mac net.HardwareAddr, reply, ok bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(b); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return netip.Addr{}, nil, false, false
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return netip.Addr{}, nil, false, false
	}
	switch {
	case p.HardwareType != 1, // Ethernet
		p.ProtocolType != uint16(ethernet.EtherTypeIPv4),
		p.HardwareAddrLength != 6,
		p.IPLength != 4,
		p.Operation != arp.OperationRequest && p.Operation != arp.OperationReply,
		!usableVIP(p.SenderIP),
		!unicastMAC(p.SenderHardwareAddr),
		// The frame must come from the MAC it names: a hypervisor's MAC
		// anti-spoofing guards the Ethernet source of a guest's frames,
		// not what the guest writes into the ARP payload, so a guest could
		// otherwise announce the VIP for another member.
		!bytes.Equal(f.Source, p.SenderHardwareAddr):
		return netip.Addr{}, nil, false, false
	}
	gratuitous := p.SenderIP == p.TargetIP
	if !gratuitous && p.Operation != arp.OperationReply {
		return netip.Addr{}, nil, false, false
	}
	return p.SenderIP.Unmap(), append(net.HardwareAddr(nil), p.SenderHardwareAddr...), !gratuitous, true
}
