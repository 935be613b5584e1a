// Package neigh reads the host's neighbour (ARP) table through netlink, so
// hostsync's guest API can check that a request's source address comes
// from the MAC registered for it.
package neigh

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// usable are the neighbour states whose link-layer address is believed.
const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT

// Table looks addresses up in the neighbour table of one network namespace.
type Table struct {
	// Immutable after New.
	h *netlink.Handle
}

// New returns a Table reading through h (nil: the caller's network
// namespace). The caller keeps ownership of h.
func New(h *netlink.Handle) *Table {
	if h == nil {
		// The zero Handle opens a socket per call in the caller's netns.
		h = &netlink.Handle{}
	}
	return &Table{h: h}
}

// Lookup returns the MAC of addr from an entry in a usable state on any
// link; (nil, nil) when there is none.
func (t *Table) Lookup(addr netip.Addr) (net.HardwareAddr, error) {
	addr = addr.Unmap()
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	list, err := t.h.NeighList(0, family)
	if err != nil {
		return nil, fmt.Errorf("neigh: list: %w", err)
	}
	for _, n := range list {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || ip.Unmap() != addr || n.State&usable == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		return append(net.HardwareAddr(nil), n.HardwareAddr...), nil
	}
	return nil, nil
}
