package hostsync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// ErrForbidden is returned (wrapped) by Metadata, Claim and Observe when
// the caller is not a member of a group with a VIP, or its MAC is not the
// one registered for its address. The guest API answers 403.
var ErrForbidden = errors.New("hostsync: forbidden")

// Caller is a guest as seen on the wire: its source address and, when the
// neighbour table has it, its MAC. Never what a request body says.
type Caller struct {
	Addr netip.Addr
	MAC  net.HardwareAddr // nil when unknown
}

// identify resolves the caller to a member guest of a group with a VIP.
func identify(tx registry.Tx, c Caller) (registry.Guest, registry.Group, error) {
	gu, err := guestByAddr(tx, c.Addr)
	if errors.Is(err, ErrNotFound) {
		return gu, registry.Group{}, fmt.Errorf("%w: %s is not a registered guest", ErrForbidden, c.Addr)
	}
	if err != nil {
		return gu, registry.Group{}, err
	}
	if c.MAC != nil && c.MAC.String() != gu.MAC {
		return gu, registry.Group{}, fmt.Errorf("%w: %s answers from MAC %s, guest %s is registered with %s", ErrForbidden, c.Addr, c.MAC, gu.Name, gu.MAC)
	}
	if gu.Group == "" {
		return gu, registry.Group{}, fmt.Errorf("%w: guest %s is not a member of any group", ErrForbidden, gu.Name)
	}
	g, err := registry.Get[registry.Group](tx, gu.Group)
	if errors.Is(err, registry.ErrNotFound) {
		return gu, g, fmt.Errorf("%w: guest %s is not a member of any group", ErrForbidden, gu.Name)
	}
	if err != nil {
		return gu, g, err
	}
	if _, ok := g.Member(gu.ID); !ok {
		return gu, g, fmt.Errorf("%w: guest %s is not a member of group %s", ErrForbidden, gu.Name, g.Name)
	}
	if g.VIP == nil {
		return gu, g, fmt.Errorf("%w: group %s of guest %s has no VIP", ErrForbidden, g.Name, gu.Name)
	}
	return gu, g, nil
}

// Metadata returns the metadata of the caller's group, validated by vrrp.
//
// With a claim queue (a shared registry), the document is remembered per
// guest address, and while the registry is unreachable
// (registry.ErrUnavailable) the caller is served the last one (when its
// MAC, if known, is the one registered).
func (s *Service) Metadata(ctx context.Context, c Caller) (*vrrp.Metadata, error) {
	var md *vrrp.Metadata
	var mac string
	err := s.bounded(ctx, func(ctx context.Context) error {
		return s.store.View(ctx, func(tx registry.Tx) error {
			gu, g, err := identify(tx, c)
			if err != nil {
				return err
			}
			mac = gu.MAC
			md, err = groupMetadata(tx, g)
			return err
		})
	})
	if s.queue == nil {
		return md, err
	}
	switch {
	case err == nil:
		s.rememberMetadata(c.Addr, md, mac)
		return md, nil
	case errors.Is(err, registry.ErrUnavailable):
		s.mu.Lock()
		last, ok := s.lastMetadata[c.Addr]
		s.mu.Unlock()
		if ok && (c.MAC == nil || c.MAC.String() == last.mac) {
			return last.md, nil
		}
	case errors.Is(err, ErrForbidden):
		s.rememberMetadata(c.Addr, nil, "")
	}
	return nil, err
}

// cachedMetadata is the last document served to a guest, with the MAC
// registered for it then.
type cachedMetadata struct {
	md  *vrrp.Metadata
	mac string
}

// GroupMetadata returns the metadata of a group (id or name) with a VIP,
// validated: what its members are served (for cloud-init files).
func (s *Service) GroupMetadata(ctx context.Context, ref string) (*vrrp.Metadata, error) {
	var md *vrrp.Metadata
	err := s.store.View(ctx, func(tx registry.Tx) error {
		g, err := findGroup(tx, ref)
		if err != nil {
			return err
		}
		if g.VIP == nil {
			return refuse(ErrNoVIP, "group %s", g.Name)
		}
		md, err = groupMetadata(tx, g)
		return err
	})
	return md, err
}

func groupMetadata(tx registry.Tx, g registry.Group) (*vrrp.Metadata, error) {
	n, err := getNetwork(tx, g.VIP.NetworkID)
	if err != nil {
		return nil, err
	}
	ms, err := members(tx, g)
	if err != nil {
		return nil, err
	}
	var eipAddr netip.Addr
	if g.EIP != nil {
		eipAddr = g.EIP.Address
	}
	md := buildMetadata(g, g.VIP, n.CIDR, ms, g.Members, &eipAddr)
	if err := md.Validate(); err != nil {
		return nil, fmt.Errorf("hostsync: metadata of group %s does not validate: %w", g.Name, err)
	}
	return md, nil
}

// buildMetadata assembles the document; guests and members are parallel
// (join order).
func buildMetadata(g registry.Group, vip *registry.VIPBinding, cidr netip.Prefix, guests []registry.Guest, ms []registry.Member, eipAddr *netip.Addr) *vrrp.Metadata {
	set := g.Settings
	md := &vrrp.Metadata{
		Version:         vrrp.CurrentVersion,
		Group:           vrrp.Group{ID: g.ID, Name: g.Name},
		Revision:        g.Revision,
		VIP:             netip.PrefixFrom(vip.Address, cidr.Bits()),
		NetworkID:       vip.NetworkID,
		VirtualRouterID: vip.VRID,
		VRRPVersion:     set.VRRPVersion,
		AdvertInt:       set.AdvertInt,
		PreemptDelay:    set.PreemptDelay,
		Unicast:         set.Unicast,
		Checks:          set.Checks,
		Members:         make([]vrrp.Member, 0, len(guests)),
	}
	if set.NoPreempt {
		f := false
		md.Preempt = &f
	}
	if set.AuthPass != "" {
		md.Auth = &vrrp.Auth{Type: "PASS", Pass: set.AuthPass}
	}
	for i, gu := range guests {
		md.Members = append(md.Members, vrrp.Member{
			Name: gu.Name, GuestID: gu.ID, Address: gu.Address, MAC: gu.MAC, Priority: ms[i].Priority,
		})
	}
	if eipAddr != nil {
		md.EIP = *eipAddr
	}
	return md
}
