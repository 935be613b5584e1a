package inventory

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Names and ids end up in keepalived.conf and the metadata; these are
// vrrp's patterns (group.id, group.name, members[].name).
var (
	reID        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	reGroupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
	reGuestName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	reAttr      = regexp.MustCompile(`^[A-Za-z0-9._-]{0,64}$`)
)

// ValidID reports whether v is a valid id of a record (a network, guest,
// group, EIP or host): 1–64 of A-Z a-z 0-9 . _ -, starting with a letter
// or digit.
func ValidID(v string) bool { return reID.MatchString(v) }

func checkID(field, v string) error {
	if !reID.MatchString(v) {
		return Invalid(field, "%q is not an id (1–64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", v)
	}
	return nil
}

// FindGroup reads a group by id, then by name; ErrNotFound (wrapped) when
// none has that id or name. A group named N created without an id has id
// "ig-N", which is read first; other names are looked for among all
// groups.
func FindGroup(tx registry.Tx, ref string) (registry.Group, error) {
	g, err := registry.Get[registry.Group](tx, ref)
	if err == nil || !errors.Is(err, registry.ErrNotFound) {
		return g, err
	}
	switch g, err := registry.Get[registry.Group](tx, defaultGroupID(ref)); {
	case err == nil && g.Name == ref:
		return g, nil
	case err != nil && !errors.Is(err, registry.ErrNotFound):
		return g, err
	}
	groups, err := registry.List[registry.Group](tx, "")
	if err != nil {
		return registry.Group{}, err
	}
	for _, g := range groups {
		if g.Name == ref {
			return g, nil
		}
	}
	return registry.Group{}, fmt.Errorf("%w: no group with id or name %q", ErrNotFound, ref)
}

// findGuest reads a guest by id, then by name.
func findGuest(tx registry.Tx, ref string) (registry.Guest, error) {
	g, err := registry.Get[registry.Guest](tx, ref)
	if err == nil || !errors.Is(err, registry.ErrNotFound) {
		return g, err
	}
	guests, err := registry.List[registry.Guest](tx, "")
	if err != nil {
		return registry.Guest{}, err
	}
	for _, g := range guests {
		if g.Name == ref {
			return g, nil
		}
	}
	return registry.Guest{}, fmt.Errorf("%w: no guest with id or name %q", ErrNotFound, ref)
}

func getNetwork(tx registry.Tx, id string) (registry.Network, error) {
	n, err := registry.Get[registry.Network](tx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return n, fmt.Errorf("%w: no network %q", ErrNotFound, id)
	}
	return n, err
}

func guestByAddr(tx registry.Tx, a netip.Addr) (registry.Guest, error) {
	idx, err := registry.Get[registry.AddrIndex](tx, a.Unmap().String())
	if errors.Is(err, registry.ErrNotFound) {
		return registry.Guest{}, fmt.Errorf("%w: no guest has address %s", ErrNotFound, a)
	}
	if err != nil {
		return registry.Guest{}, err
	}
	g, err := registry.Get[registry.Guest](tx, idx.GuestID)
	if errors.Is(err, registry.ErrNotFound) {
		return g, fmt.Errorf("%w: no guest has address %s", ErrNotFound, a)
	}
	return g, err
}

// Members returns the group's guests in join order.
func Members(tx registry.Tx, g registry.Group) ([]registry.Guest, error) {
	out := make([]registry.Guest, 0, len(g.Members))
	for _, m := range g.Members {
		gu, err := registry.Get[registry.Guest](tx, m.GuestID)
		if err != nil {
			return nil, fmt.Errorf("hostsync: member %s of group %s: %w", m.GuestID, g.Name, err)
		}
		out = append(out, gu)
	}
	return out, nil
}

// Owner reads the owner record of a group; a group never owned has the zero owner
// at revision 0.
func Owner(tx registry.Tx, group string) (registry.Owner, error) {
	o, err := registry.Get[registry.Owner](tx, group)
	if errors.Is(err, registry.ErrNotFound) {
		return registry.Owner{Group: group}, nil
	}
	return o, err
}

// ShowGroup returns a group with its members, VIP, EIP and owner.
func (s *Inventory) ShowGroup(ctx context.Context, ref string) (api.GroupView, error) {
	var v api.GroupView
	err := s.store.View(ctx, func(tx registry.Tx) error {
		g, err := FindGroup(tx, ref)
		if err != nil {
			return err
		}
		v, err = groupView(tx, g)
		return err
	})
	return v, err
}

// ListGroups returns every group, by id.
func (s *Inventory) ListGroups(ctx context.Context) ([]api.GroupView, error) {
	var out []api.GroupView
	err := s.store.View(ctx, func(tx registry.Tx) error {
		groups, err := registry.List[registry.Group](tx, "")
		if err != nil {
			return err
		}
		for _, g := range groups {
			v, err := groupView(tx, g)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

func groupView(tx registry.Tx, g registry.Group) (api.GroupView, error) {
	set := g.Settings
	v := api.GroupView{
		ID: g.ID, Name: g.Name, Revision: g.Revision, Members: []api.MemberView{},
		Settings: api.GroupSettings{
			VRRPVersion: set.VRRPVersion, AdvertInt: set.AdvertInt, Unicast: set.Unicast,
			Preempt: !set.NoPreempt, PreemptDelay: set.PreemptDelay, Auth: set.AuthPass != "", Checks: set.Checks,
		},
	}
	if v.Settings.AdvertInt == 0 {
		v.Settings.AdvertInt = 1000
	}
	names := map[string]string{}
	for _, m := range g.Members {
		gu, err := registry.Get[registry.Guest](tx, m.GuestID)
		if err != nil {
			return v, fmt.Errorf("hostsync: member %s of group %s: %w", m.GuestID, g.Name, err)
		}
		names[gu.ID] = gu.Name
		mv := api.MemberView{
			GuestID: gu.ID, Name: gu.Name, Address: gu.Address, MAC: gu.MAC, NetworkID: gu.NetworkID,
			NICs: gu.NICs, Host: gu.Host, Priority: m.Priority,
		}
		if rs, err := registry.Get[registry.RoleState](tx, registry.RoleKey(g.ID, gu.ID)); err == nil {
			mv.Role, mv.RoleAt = rs.Role, rs.At
		}
		v.Members = append(v.Members, mv)
	}
	prios := make([]int, len(v.Members))
	for i, m := range v.Members {
		prios[i] = m.Priority
	}
	v.Warnings = vrrp.WeightWarnings(set.Checks, prios)
	if g.VIP != nil {
		n, err := getNetwork(tx, g.VIP.NetworkID)
		if err != nil {
			return v, err
		}
		v.VIP = &api.VIPView{Address: netip.PrefixFrom(g.VIP.Address, n.CIDR.Bits()), NetworkID: n.ID, VRID: g.VIP.VRID, Reserved: g.VIP.Reserved}
		if g.VIP.Address6.IsValid() {
			v.VIP.Address6 = netip.PrefixFrom(g.VIP.Address6, n.CIDR6.Bits())
		}
	}
	if g.EIP != nil {
		v.EIP = &api.EIPView{ID: g.EIP.EIPID, Address: g.EIP.Address}
		switch e, err := registry.Get[registry.EIP](tx, g.EIP.EIPID); {
		case err == nil:
			v.EIP.Bandwidth = e.Bandwidth
		case !errors.Is(err, registry.ErrNotFound):
			return v, err
		}
	}
	o, err := Owner(tx, g.ID)
	if err != nil {
		return v, err
	}
	if o.GuestID != "" {
		v.Owner = &api.OwnerView{GuestID: o.GuestID, Name: names[o.GuestID], Revision: o.Revision, Since: o.Since, Source: o.Source}
	}
	return v, nil
}

// ListNetworks returns every network with its lease count.
func (s *Inventory) ListNetworks(ctx context.Context) ([]api.NetworkInfo, error) {
	var out []api.NetworkInfo
	err := s.store.View(ctx, func(tx registry.Tx) error {
		nets, err := registry.List[registry.Network](tx, "")
		if err != nil {
			return err
		}
		for _, n := range nets {
			used := 0
			if err := tx.ForEach(registry.BucketLeases, n.ID+"/", func(string, []byte) error { used++; return nil }); err != nil {
				return err
			}
			out = append(out, networkInfo(n, used))
		}
		return nil
	})
	return out, err
}

// ListGuests returns every guest.
func (s *Inventory) ListGuests(ctx context.Context) ([]api.GuestInfo, error) {
	var out []api.GuestInfo
	err := s.store.View(ctx, func(tx registry.Tx) error {
		guests, err := registry.List[registry.Guest](tx, "")
		for _, g := range guests {
			out = append(out, guestInfo(g))
		}
		return err
	})
	return out, err
}

// ListEIPs returns every EIP.
func (s *Inventory) ListEIPs(ctx context.Context) ([]api.EIPInfo, error) {
	var out []api.EIPInfo
	err := s.store.View(ctx, func(tx registry.Tx) error {
		eips, err := registry.List[registry.EIP](tx, "")
		for _, e := range eips {
			out = append(out, eipInfo(e))
		}
		return err
	})
	return out, err
}

func networkInfo(n registry.Network, used int) api.NetworkInfo {
	return api.NetworkInfo{
		ID: n.ID, Name: n.Name, CIDR: n.CIDR, Gateway: n.Gateway, RangeStart: n.RangeStart, RangeEnd: n.RangeEnd,
		VPCID: n.VPCID, Kind: string(n.Kind), Reserved: n.Reserved, Used: used,
		CIDR6: n.CIDR6, Range6Start: n.Range6Start, Range6End: n.Range6End,
	}
}

func guestInfo(g registry.Guest) api.GuestInfo {
	return api.GuestInfo{
		ID: g.ID, Name: g.Name, NICs: g.NICs, NetworkID: g.NetworkID, Address: g.Address,
		MAC: g.MAC, Host: g.Host, Group: g.Group,
	}
}

func eipInfo(e registry.EIP) api.EIPInfo {
	return api.EIPInfo{
		ID: e.ID, Address: e.Address, NetworkID: e.NetworkID, Bandwidth: e.Bandwidth, BGPType: e.BGPType,
		ChargeType: e.ChargeType, AutoDeallocate: e.AutoDeallocate, Group: e.Group,
	}
}
