package inventory

import (
	"fmt"
	"math/big"
	"net/netip"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// IPv6: a guest network may carry an IPv6 prefix beside its IPv4 subnet
// (registry.Network.CIDR6), and a group's VIP an IPv6 address from it
// beside the IPv4 one (registry.VIPBinding.Address6): one VIP per family.
// The IPv4 VIP is the group's primary (its VRRP instance carries the IPv6
// VIP, its EIP maps to it), so an IPv6 VIP never stands alone.

// ErrNoIPv6Prefix: an IPv6 VIP comes from the network's IPv6 prefix, which
// this network does not have.
var ErrNoIPv6Prefix = fmt.Errorf("%w: the network has no IPv6 prefix (network-create --cidr6)", ErrAddressNotInNetwork)

// Bounds of a network's IPv6 prefix: a site (/48) to a small segment
// (/120); the usual LAN is /64.
const (
	minNetBits6 = 48
	maxNetBits6 = 120
)

// buildNetwork6 checks and completes the IPv6 part of a network: the
// prefix and its allocation range (default ::2 to the last address).
func buildNetwork6(n *registry.Network, req api.NetworkCreate) error {
	if !req.CIDR6.IsValid() {
		if req.Range6Start.IsValid() || req.Range6End.IsValid() {
			return Invalid("range6_start", "needs cidr6, the network's IPv6 prefix")
		}
		return nil
	}
	p := req.CIDR6
	if !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return Invalid("cidr6", "%s is not an IPv6 prefix, e.g. 2001:db8::/64", p)
	}
	if b := p.Bits(); b < minNetBits6 || b > maxNetBits6 {
		return Invalid("cidr6", "%s: prefix /%d is not supported, allowed /%d to /%d", p, b, minNetBits6, maxNetBits6)
	}
	if p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() || p.Addr().IsLoopback() {
		return Invalid("cidr6", "%s is not a unicast prefix a VIP can come from", p)
	}
	if n.Kind == registry.KindEIP {
		return Invalid("cidr6", "EIPs are IPv4: a network of kind eip has no IPv6 prefix")
	}
	n.CIDR6 = p.Masked()
	anycast := n.CIDR6.Addr() // the subnet-router anycast address, ::0
	host := func(field string, a netip.Addr) error {
		switch {
		case !n.CIDR6.Contains(a):
			return Invalid(field, "%s is not in %s", a, n.CIDR6)
		case a == anycast:
			return Invalid(field, "%s is the subnet-router anycast address of %s", a, n.CIDR6)
		}
		return nil
	}
	n.Range6Start, n.Range6End = req.Range6Start, req.Range6End
	if !n.Range6Start.IsValid() {
		n.Range6Start = anycast.Next().Next()
	}
	if !n.Range6End.IsValid() {
		n.Range6End = lastAddr6(n.CIDR6)
	}
	if err := host("range6_start", n.Range6Start); err != nil {
		return err
	}
	if err := host("range6_end", n.Range6End); err != nil {
		return err
	}
	if n.Range6Start.Compare(n.Range6End) > 0 {
		return Invalid("range6_start", "%s is after range6_end %s", n.Range6Start, n.Range6End)
	}
	return nil
}

// lastAddr6 is the highest address of an IPv6 prefix.
func lastAddr6(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(b)
}

// checkAttachFields refuses addresses of the wrong family in the fields
// that name them.
func checkAttachFields(req api.AttachNetwork) error {
	if req.IPAddr.IsValid() && !req.IPAddr.Unmap().Is4() {
		return Invalid("ip_addr", "%s is not IPv4; an IPv6 VIP goes in ip6_addr (--ip6-addr)", req.IPAddr)
	}
	if req.IP6Addr.IsValid() && (!req.IP6Addr.Is6() || req.IP6Addr.Is4In6()) {
		return Invalid("ip6_addr", "%s is not IPv6; an IPv4 VIP goes in ip_addr (--ip-addr)", req.IP6Addr)
	}
	if req.IP6Addr.IsValid() && (req.IP6Addr.Zone() != "" || req.IP6Addr.IsLinkLocalUnicast() || req.IP6Addr.IsMulticast()) {
		return Invalid("ip6_addr", "%s is not a unicast address a VIP can be", req.IP6Addr)
	}
	if req.RequireDesignatedIP && !req.IPAddr.IsValid() && !req.IP6Addr.IsValid() {
		return Invalid("require_designated_ip", "needs ip_addr (--ip-addr) or ip6_addr (--ip6-addr)")
	}
	return nil
}

// wantsIPv6 reports whether the request asks for an IPv6 VIP.
func wantsIPv6(req api.AttachNetwork) bool { return req.IP6Addr.IsValid() || req.RequireIPv6 }

// allocate6 picks a free IPv6 address of n for req, inside the Update
// transaction that then writes the lease (as allocate). The reserved
// pool is IPv4's: an IPv6 VIP comes from the IPv6 range.
func allocate6(tx registry.Tx, n registry.Network, req allocRequest, intn func(int) int) (netip.Addr, error) {
	if !n.CIDR6.IsValid() {
		return netip.Addr{}, refuse(ErrNoIPv6Prefix, "network %s", n.ID)
	}
	used := map[netip.Addr]string{}
	leases, err := registry.List[registry.Lease](tx, n.ID+"/")
	if err != nil {
		return netip.Addr{}, err
	}
	for _, l := range leases {
		if l.Address.Is6() {
			used[l.Address] = fmt.Sprintf("%s %s", l.Kind, l.Holder)
		}
	}
	why := func(a netip.Addr) string {
		switch {
		case !n.CIDR6.Contains(a):
			return "outside " + n.CIDR6.String()
		case a == n.CIDR6.Addr():
			return "the subnet-router anycast address"
		case used[a] != "":
			return "in use by " + used[a]
		case !n.InRange(a):
			return fmt.Sprintf("outside the usable range %s-%s", n.Range6Start, n.Range6End)
		}
		return ""
	}
	if req.Want.IsValid() {
		if !n.CIDR6.Contains(req.Want) {
			return netip.Addr{}, refuse(ErrAddressNotInNetwork, "%s is not in network %s (%s)", req.Want, n.ID, n.CIDR6)
		}
		reason := why(req.Want)
		if reason == "" {
			return req.Want, nil
		}
		if req.Require {
			return netip.Addr{}, refuse(ErrAddressUnavailable, "%s in network %s is %s", req.Want, n.ID, reason)
		}
	}
	// A range can hold 2^72 addresses and only the leased ones are
	// taken: a scan from either end meets a free one after at most
	// len(used)+1 steps, a random pick almost always at once.
	lo, hi := n.Range6Start, n.Range6End
	limit := len(used) + 1
	switch req.Dir {
	case api.AllocStepDown:
		for a, i := hi, 0; i <= limit && a.IsValid() && a.Compare(lo) >= 0; a, i = a.Prev(), i+1 {
			if why(a) == "" {
				return a, nil
			}
		}
	case api.AllocRandom:
		size := new(big.Int).Sub(addrInt(hi), addrInt(lo))
		size.Add(size, big.NewInt(1))
		span := maxRandomSpan
		if size.IsInt64() && size.Int64() < int64(span) {
			span = int(size.Int64())
		}
		for range randomTries {
			a := intAddr(new(big.Int).Add(addrInt(lo), big.NewInt(int64(intn(span)))))
			if why(a) == "" {
				return a, nil
			}
		}
		fallthrough
	default:
		for a, i := lo, 0; i <= limit && a.IsValid() && a.Compare(hi) <= 0; a, i = a.Next(), i+1 {
			if why(a) == "" {
				return a, nil
			}
		}
	}
	return netip.Addr{}, refuse(ErrNetworkFull, "network %s has no free IPv6 address in %s-%s", n.ID, lo, hi)
}

// maxRandomSpan bounds the offsets a random IPv6 allocation draws from
// (intn takes an int): the first 2^30 addresses of the range.
const maxRandomSpan = 1 << 30

func addrInt(a netip.Addr) *big.Int {
	b := a.As16()
	return new(big.Int).SetBytes(b[:])
}

func intAddr(i *big.Int) netip.Addr {
	var b [16]byte
	i.FillBytes(b[:])
	return netip.AddrFrom16(b)
}
