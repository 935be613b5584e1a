package inventory

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

// Identify resolves the caller to a member guest of a group with a VIP.
func Identify(tx registry.Tx, c Caller) (registry.Guest, registry.Group, error) {
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

// GroupMetadata returns the metadata of a group (id or name) with a VIP,
// validated: what its members are served (for cloud-init files).
func (s *Inventory) GroupMetadata(ctx context.Context, ref string) (*vrrp.Metadata, error) {
	var md *vrrp.Metadata
	err := s.store.View(ctx, func(tx registry.Tx) error {
		g, err := FindGroup(tx, ref)
		if err != nil {
			return err
		}
		if g.VIP == nil {
			return refuse(ErrNoVIP, "group %s", g.Name)
		}
		md, err = MetadataOf(tx, g)
		return err
	})
	return md, err
}

// MetadataOf builds the metadata of group g (with a VIP) its members are
// served, validated.
func MetadataOf(tx registry.Tx, g registry.Group) (*vrrp.Metadata, error) {
	n, err := getNetwork(tx, g.VIP.NetworkID)
	if err != nil {
		return nil, err
	}
	ms, err := Members(tx, g)
	if err != nil {
		return nil, err
	}
	var eipAddr netip.Addr
	if g.EIP != nil {
		eipAddr = g.EIP.Address
	}
	md := buildMetadata(g, g.VIP, n, ms, g.Members, &eipAddr)
	if err := md.Validate(); err != nil {
		return nil, fmt.Errorf("hostsync: metadata of group %s does not validate: %w", g.Name, err)
	}
	return md, nil
}

// buildMetadata assembles the document; guests and members are parallel
// (join order).
func buildMetadata(g registry.Group, vip *registry.VIPBinding, n registry.Network, guests []registry.Guest, ms []registry.Member, eipAddr *netip.Addr) *vrrp.Metadata {
	set := g.Settings
	md := &vrrp.Metadata{
		Version:         vrrp.CurrentVersion,
		Group:           vrrp.Group{ID: g.ID, Name: g.Name},
		Revision:        g.Revision,
		VIP:             netip.PrefixFrom(vip.Address, n.CIDR.Bits()),
		NetworkID:       vip.NetworkID,
		VirtualRouterID: vip.VRID,
		VRRPVersion:     set.VRRPVersion,
		AdvertInt:       set.AdvertInt,
		PreemptDelay:    set.PreemptDelay,
		Unicast:         set.Unicast,
		Checks:          set.Checks,
		Members:         make([]vrrp.Member, 0, len(guests)),
	}
	if vip.Address6.IsValid() {
		md.VIP6 = netip.PrefixFrom(vip.Address6, n.CIDR6.Bits())
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

// GroupByVIP reads the group whose VIP is vip (its IPv4 or its IPv6
// VIP); ErrForbidden (wrapped) when it is no group's VIP. Every observed
// GARP, ARP reply or NA looks its VIP up here, so the cost must not grow
// with the number of groups: the VIP index (written with the VIP's lease)
// names the group. A VIP attached before the index existed, or by an
// older hostsync sharing the etcd registry, has a lease only: the lease
// is found through the one guest network holding vip (networks do not
// overlap; a handful per host, against thousands of groups). Whatever
// names the group, the group's own binding must agree.
func GroupByVIP(tx registry.Tx, vip netip.Addr) (registry.Group, error) {
	vip = vip.Unmap()
	idx, err := registry.Get[registry.VIPIndex](tx, vip.String())
	switch {
	case err == nil:
		g, ok, err := groupWithVIP(tx, idx.GroupID, vip)
		if ok || err != nil {
			return g, err
		}
	case !errors.Is(err, registry.ErrNotFound):
		return registry.Group{}, err
	}
	if g, ok, err := groupByVIPLease(tx, vip); ok || err != nil {
		return g, err
	}
	return registry.Group{}, fmt.Errorf("%w: %s is no group's VIP", ErrForbidden, vip)
}

// groupByVIPLease finds vip's group through its lease.
func groupByVIPLease(tx registry.Tx, vip netip.Addr) (registry.Group, bool, error) {
	nets, err := registry.List[registry.Network](tx, "")
	if err != nil {
		return registry.Group{}, false, err
	}
	for _, n := range nets {
		if n.Kind != registry.KindGuest || !n.Contains(vip) {
			continue
		}
		l, err := registry.Get[registry.Lease](tx, registry.LeaseKey(n.ID, vip))
		if errors.Is(err, registry.ErrNotFound) || (err == nil && l.Kind != registry.LeaseVIP) {
			return registry.Group{}, false, nil
		}
		if err != nil {
			return registry.Group{}, false, err
		}
		return groupWithVIP(tx, l.Holder, vip)
	}
	return registry.Group{}, false, nil
}

// groupWithVIP reads group id and reports whether vip is its VIP.
func groupWithVIP(tx registry.Tx, id string, vip netip.Addr) (registry.Group, bool, error) {
	g, err := registry.Get[registry.Group](tx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return registry.Group{}, false, nil
	}
	if err != nil {
		return registry.Group{}, false, err
	}
	if g.VIP == nil || (g.VIP.Address != vip && !(vip.Is6() && g.VIP.Address6 == vip)) {
		return registry.Group{}, false, nil
	}
	return g, true, nil
}
