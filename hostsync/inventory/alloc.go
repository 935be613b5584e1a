package inventory

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// allocRequest is what an allocation asks for.
type allocRequest struct {
	// Want is honoured when free and in range (invalid: pick one).
	Want netip.Addr
	// Dir is api.AllocStepUp (default), api.AllocStepDown or api.AllocRandom.
	Dir string
	// Reserved takes the address from the network's reserved pool only.
	Reserved bool
	// Require fails with ErrAddressUnavailable instead of picking another
	// address when Want cannot be had.
	Require bool
}

// randomTries is how many random picks are tried before a random
// allocation scans from a random starting point (a nearly full range).
const randomTries = 32

// allocate picks a free address of n for req. It must run inside the
// Update transaction that then writes the lease: leases are read here and
// bbolt serializes writers, so two allocations never return the same
// address. intn returns a uniform int in [0, n).
func allocate(tx registry.Tx, n registry.Network, req allocRequest, intn func(int) int) (netip.Addr, error) {
	used := map[netip.Addr]string{}
	leases, err := registry.List[registry.Lease](tx, n.ID+"/")
	if err != nil {
		return netip.Addr{}, err
	}
	for _, l := range leases {
		used[l.Address] = fmt.Sprintf("%s %s", l.Kind, l.Holder)
	}
	// why returns "" when a is available for req, else the reason.
	why := func(a netip.Addr) string {
		switch {
		case !n.CIDR.Contains(a):
			return "outside " + n.CIDR.String()
		case a == n.CIDR.Masked().Addr():
			return "the network address"
		case a == lastAddr(n.CIDR):
			return "the broadcast address"
		case a == n.Gateway:
			return "the gateway"
		case used[a] != "":
			return "in use by " + used[a]
		case req.Reserved && !n.IsReserved(a):
			return "not in the reserved pool"
		case !req.Reserved && n.IsReserved(a):
			return "reserved (use --reserved)"
		case !req.Reserved && !n.InRange(a):
			return fmt.Sprintf("outside the usable range %s-%s", n.RangeStart, n.RangeEnd)
		}
		return ""
	}
	if req.Want.IsValid() {
		want := req.Want.Unmap()
		if !n.CIDR.Contains(want) {
			return netip.Addr{}, refuse(ErrAddressNotInNetwork, "%s is not in network %s (%s)", want, n.ID, n.CIDR)
		}
		reason := why(want)
		if reason == "" {
			return want, nil
		}
		if req.Require {
			return netip.Addr{}, refuse(ErrAddressUnavailable, "%s in network %s is %s", want, n.ID, reason)
		}
	}

	var cands []netip.Addr
	if req.Reserved {
		cands = slices.Clone(n.Reserved)
		slices.SortFunc(cands, netip.Addr.Compare)
	}
	switch req.Dir {
	case "", api.AllocStepUp:
	case api.AllocStepDown:
		if req.Reserved {
			slices.Reverse(cands)
		}
	case api.AllocRandom:
	default:
		return netip.Addr{}, Invalid("alloc_dir", "%q is not one of stepup, stepdown, random", req.Dir)
	}
	if req.Reserved {
		if req.Dir == api.AllocRandom {
			for i := len(cands) - 1; i > 0; i-- {
				j := intn(i + 1)
				cands[i], cands[j] = cands[j], cands[i]
			}
		}
		for _, a := range cands {
			if why(a) == "" {
				return a, nil
			}
		}
		return netip.Addr{}, refuse(ErrNetworkFull, "the reserved pool of network %s has no free address", n.ID)
	}

	lo, hi := v4(n.RangeStart), v4(n.RangeEnd)
	size := int(hi - lo + 1)
	at := func(i int) netip.Addr { return fromV4(lo + uint32(i)) }
	switch req.Dir {
	case api.AllocStepDown:
		for i := size - 1; i >= 0; i-- {
			if a := at(i); why(a) == "" {
				return a, nil
			}
		}
	case api.AllocRandom:
		for range randomTries {
			if a := at(intn(size)); why(a) == "" {
				return a, nil
			}
		}
		start := intn(size)
		for k := range size {
			if a := at((start + k) % size); why(a) == "" {
				return a, nil
			}
		}
	default:
		for i := range size {
			if a := at(i); why(a) == "" {
				return a, nil
			}
		}
	}
	return netip.Addr{}, refuse(ErrNetworkFull, "network %s has no free address in %s-%s", n.ID, n.RangeStart, n.RangeEnd)
}

func v4(a netip.Addr) uint32 {
	b := a.Unmap().As4()
	return binary.BigEndian.Uint32(b[:])
}

func fromV4(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// lastAddr is the highest address of p's subnet (IPv4).
func lastAddr(p netip.Prefix) netip.Addr {
	m := p.Masked()
	return fromV4(v4(m.Addr()) | (1<<(32-m.Bits()) - 1))
}
