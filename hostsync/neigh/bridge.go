package neigh

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNotBridge is returned by NewBridge when the named interface is not a
// Linux bridge.
var ErrNotBridge = errors.New("neigh: not a bridge")

// learned are the forwarding-database states of entries the bridge learnt
// from traffic (NUD_REACHABLE, NUD_STALE: aging) or an operator added
// (NUD_NOARP: static). NUD_PERMANENT marks the ports' own addresses.
const learned = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_NOARP

// Bridge pins each MAC to the bridge port it was first learnt on, from the
// bridge's forwarding database (FDB), so a frame with that MAC as source
// can be checked against the port it came in on.
//
// Why pins and not the FDB itself: the bridge learns the source MAC of
// every frame on the port it came in on, so a guest that forges another
// guest's MAC moves the FDB entry to its own port with the very frame that
// is to be checked. A pin moves only when its port leaves the bridge (the
// guest was stopped or migrated away and its tap deleted); a MAC seen on
// another port while its pinned port still exists is a conflict and keeps
// its pin. Refresh must run periodically (and before the first check) so
// members are pinned from their own traffic, long before any GARP.
//
// Safe for concurrent use.
type Bridge struct {
	// Immutable after NewBridge.
	h     *netlink.Handle
	name  string
	index int

	mu   sync.Mutex // guards the fields below
	pins map[string]int
	// conflicts counts FDB entries seen on another port than their pin.
	conflicts uint64
}

// NewBridge returns the pin table of the named bridge, read through h (nil:
// the caller's network namespace), empty until Refresh. ErrNotBridge
// (wrapped) when name is not a bridge.
func NewBridge(h *netlink.Handle, name string) (*Bridge, error) {
	if h == nil {
		h = &netlink.Handle{}
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("neigh: interface %q: %w", name, err)
	}
	if l.Type() != "bridge" {
		return nil, fmt.Errorf("%w: %s is a %s", ErrNotBridge, name, l.Type())
	}
	return &Bridge{h: h, name: name, index: l.Attrs().Index, pins: map[string]int{}}, nil
}

// Name is the bridge's name.
func (b *Bridge) Name() string { return b.name }

// Port returns the name of interface ifindex when it is a port of the
// bridge.
func (b *Bridge) Port(ifindex int) (string, bool) {
	if ifindex <= 0 || ifindex == b.index {
		return "", false
	}
	l, err := b.h.LinkByIndex(ifindex)
	if err != nil || l.Attrs().MasterIndex != b.index {
		return "", false
	}
	return l.Attrs().Name, true
}

// Refresh reads the bridge's FDB: it drops the pins of ports that left the
// bridge and pins every learnt MAC that has no pin yet to its port.
func (b *Bridge) Refresh() error {
	links, err := b.h.LinkList()
	if err != nil {
		return fmt.Errorf("neigh: list links of bridge %s: %w", b.name, err)
	}
	ports := map[int]bool{}
	for _, l := range links {
		if l.Attrs().MasterIndex == b.index {
			ports[l.Attrs().Index] = true
		}
	}
	fdb, err := b.h.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("neigh: read the FDB of bridge %s: %w", b.name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for mac, port := range b.pins {
		if !ports[port] {
			delete(b.pins, mac)
		}
	}
	for _, n := range fdb {
		if n.MasterIndex != b.index || !ports[n.LinkIndex] || n.State&learned == 0 || n.Flags&netlink.NTF_SELF != 0 ||
			len(n.HardwareAddr) != 6 || n.HardwareAddr[0]&0x01 != 0 {
			continue
		}
		mac := n.HardwareAddr.String()
		switch pin, ok := b.pins[mac]; {
		case !ok:
			b.pins[mac] = n.LinkIndex
		case pin != n.LinkIndex:
			b.conflicts++
		}
	}
	return nil
}

// Pinned returns the port mac is pinned to; ok is false when the bridge
// never learnt mac (as of the last Refresh) or its port is gone.
func (b *Bridge) Pinned(mac net.HardwareAddr) (port string, ok bool) {
	b.mu.Lock()
	idx, ok := b.pins[mac.String()]
	b.mu.Unlock()
	if !ok {
		return "", false
	}
	return b.Port(idx)
}

// Conflicts is how many times Refresh saw a pinned MAC learnt on another
// port than its pin.
func (b *Bridge) Conflicts() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conflicts
}
