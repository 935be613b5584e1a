package inventory

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// CreateGroup creates an instance group with its VRRP settings.
func (s *Inventory) CreateGroup(ctx context.Context, req api.GroupCreate) (api.GroupView, error) {
	g, err := s.buildGroup(req)
	if err != nil {
		return api.GroupView{}, err
	}
	err = s.store.Update(ctx, func(tx registry.Tx) error {
		groups, err := registry.List[registry.Group](tx, "")
		if err != nil {
			return err
		}
		for _, o := range groups {
			if o.ID == g.ID || o.Name == g.Name || o.ID == g.Name || o.Name == g.ID {
				return refuse(ErrExists, "group %s (%s)", o.Name, o.ID)
			}
		}
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("group created", "op", "instancegroup-create", "group", g.Name)
	return s.ShowGroup(ctx, g.ID)
}

func (s *Inventory) buildGroup(req api.GroupCreate) (registry.Group, error) {
	if !reGroupName.MatchString(req.Name) {
		return registry.Group{}, Invalid("name", "%q is not a group name (1–32 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", req.Name)
	}
	id := req.ID
	if id == "" {
		id = defaultGroupID(req.Name)
	}
	if err := checkID("id", id); err != nil {
		return registry.Group{}, err
	}
	set := registry.Settings{
		VRRPVersion: req.VRRPVersion, AdvertInt: req.AdvertInt, AuthPass: req.AuthPass, Unicast: req.Unicast,
		NoPreempt: req.NoPreempt, PreemptDelay: req.PreemptDelay, Checks: req.Checks,
	}
	if set.VRRPVersion == 0 {
		set.VRRPVersion = 2
	}
	if set.VRRPVersion == 3 && set.AuthPass != "" {
		return registry.Group{}, Invalid("auth_pass", "authentication is only defined for VRRPv2")
	}
	if set.VRRPVersion == 2 && set.AuthPass == "" {
		set.AuthPass = randomPass()
	}
	g := registry.Group{ID: id, Name: req.Name, Settings: set, Revision: 1, CreatedAt: s.nowUTC()}
	// The settings are checked by vrrp's own rules on a probe document, so
	// a group can never be created with settings its metadata would fail.
	if err := fieldInvalid(probeMetadata(g).Validate()); err != nil {
		return registry.Group{}, err
	}
	return g, nil
}

// passAlphabet is what a generated VRRP password is made of (a subset of
// what vrrp accepts).
const passAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"

// randomPass returns 8 random characters for VRRPv2 PASS authentication
// (keepalived uses at most 8).
func randomPass() string {
	var b [8]byte
	// crypto/rand.Read never returns an error (Go 1.24+).
	_, _ = crand.Read(b[:])
	for i := range b {
		b[i] = passAlphabet[int(b[i])%len(passAlphabet)]
	}
	return string(b[:])
}

// DeleteGroup deletes a group without members and EIP, releasing its VIP.
func (s *Inventory) DeleteGroup(ctx context.Context, ref string) error {
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		if err := checkDelete(g); err != nil {
			return err
		}
		if g.VIP != nil {
			if err := deleteVIPLeases(tx, g.VIP); err != nil {
				return err
			}
		}
		if err := tx.Delete(registry.BucketOwners, g.ID); err != nil {
			return err
		}
		if err := deleteRoles(tx, g.ID); err != nil {
			return err
		}
		return tx.Delete(registry.BucketGroups, g.ID)
	})
	if err != nil {
		return err
	}
	s.log.Info("group deleted", "op", "instancegroup-delete", "group", g.Name)
	s.notify(ctx, Change{Op: "instancegroup-delete", Group: g.ID, OwnerGone: true, VIPs: true})
	return nil
}

func deleteRoles(tx registry.Tx, group string) error {
	var keys []string
	if err := tx.ForEach(registry.BucketRoles, group+"/", func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.Delete(registry.BucketRoles, k); err != nil {
			return err
		}
	}
	return nil
}

// Default priorities of members in join order: firstPriority, then
// priorityStep lower each, down to lastSpacedPriority.
//
// They are spaced because a backup's master-down timer is
// 3·advert_int + skew, with skew = (256 − priority)/256·advert_int: with
// neighbouring priorities (100, 99, 98) two backups' timers expire within
// 1/256 of an advert of each other, 0.4 ms at advert 0.1 s, less than the
// time the first one's advert takes to reach and stop the other, so both
// become MASTER for a moment. 20 apart they are 20/256·advert_int apart,
// 7.8 ms at advert 0.1 s, enough for the first one's advert to arrive.
// High priorities also keep the skew short: at 250 and advert 1 s a
// backup waits 23 ms more than 3·advert_int, and a resigning master
// (priority-0 advert) is replaced after the skew alone.
const (
	firstPriority      = 250
	priorityStep       = 20
	lastSpacedPriority = 10
)

// nextPriority is the priority of a new member: priorityStep below the
// lowest present (250, 230, 210, ... 10 by join order), so a newcomer
// never outranks the members already there; once that would fall below
// lastSpacedPriority (a 14th member), the highest free priority. Members'
// stored priorities never change here (SetPriority changes them).
func nextPriority(ms []registry.Member) int {
	if len(ms) == 0 {
		return firstPriority
	}
	used := map[int]bool{}
	low := 255
	for _, m := range ms {
		used[m.Priority] = true
		low = min(low, m.Priority)
	}
	if p := low - priorityStep; p >= lastSpacedPriority {
		return p
	}
	for p := 254; p >= 1; p-- {
		if !used[p] {
			return p
		}
	}
	return 0 // unreachable: MaxMembers < 254
}

// Join adds guests (ids or names) to a group, all or none.
func (s *Inventory) Join(ctx context.Context, ref string, guests []string) (api.GroupView, error) {
	if len(guests) == 0 {
		return api.GroupView{}, Invalid("guests", "name at least one guest")
	}
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		for _, gr := range guests {
			gu, err := findGuest(tx, gr)
			if err != nil {
				return err
			}
			if err := checkJoin(g, gu); err != nil {
				return err
			}
			g.Members = append(g.Members, registry.Member{GuestID: gu.ID, Priority: nextPriority(g.Members), JoinedAt: s.nowUTC()})
			gu.Group = g.ID
			if err := registry.Put(tx, gu); err != nil {
				return err
			}
		}
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("guests joined", "op", "instancegroup-join", "group", g.Name, "guests", guests)
	s.notify(ctx, Change{Op: "instancegroup-join", Group: g.ID})
	return s.ShowGroup(ctx, g.ID)
}

// Leave removes guests (ids or names) from a group, all or none. When the
// VIP's owner leaves, the group has no owner until the next MASTER claim.
func (s *Inventory) Leave(ctx context.Context, ref string, guests []string) (api.GroupView, error) {
	if len(guests) == 0 {
		return api.GroupView{}, Invalid("guests", "name at least one guest")
	}
	var g registry.Group
	ownerLeft := false
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		ownerLeft = false
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		owner, err := Owner(tx, g.ID)
		if err != nil {
			return err
		}
		for _, gr := range guests {
			gu, err := findGuest(tx, gr)
			if err != nil {
				return err
			}
			if _, ok := g.Member(gu.ID); !ok {
				return refuse(ErrNotMember, "guest %s is not in group %s", gu.Name, g.Name)
			}
			g.Members = slices.DeleteFunc(g.Members, func(m registry.Member) bool { return m.GuestID == gu.ID })
			gu.Group = ""
			if err := registry.Put(tx, gu); err != nil {
				return err
			}
			if err := tx.Delete(registry.BucketRoles, registry.RoleKey(g.ID, gu.ID)); err != nil {
				return err
			}
			if owner.GuestID == gu.ID {
				if _, err := registry.SwapOwner(tx, owner.Revision, registry.Owner{Group: g.ID, Since: s.nowUTC(), Source: "leave"}); err != nil {
					return err
				}
				ownerLeft = true
			}
		}
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("guests left", "op", "instancegroup-leave", "group", g.Name, "guests", guests)
	s.notify(ctx, Change{Op: "instancegroup-leave", Group: g.ID, OwnerGone: ownerLeft, DataPlane: ownerLeft})
	return s.ShowGroup(ctx, g.ID)
}

// AttachNetwork binds a VIP to a group (climc instancegroup-attachnetwork):
// the IPv4 VIP and, when asked (ip6_addr, require_ipv6), an IPv6 one from
// the same network's IPv6 prefix; or, for a group that has an IPv4 VIP,
// its IPv6 VIP alone. One VIP per family per group.
func (s *Inventory) AttachNetwork(ctx context.Context, ref string, req api.AttachNetwork) (api.GroupView, error) {
	switch req.AllocDir {
	case "", api.AllocStepUp, api.AllocStepDown, api.AllocRandom:
	default:
		return api.GroupView{}, Invalid("alloc_dir", "%q is not one of stepup, stepdown, random", req.AllocDir)
	}
	if err := checkAttachFields(req); err != nil {
		return api.GroupView{}, err
	}
	var g registry.Group
	added6 := false
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		if g.VIP != nil && !req.IPAddr.IsValid() && wantsIPv6(req) {
			added6 = true
			return s.attachIPv6(tx, &g, req)
		}
		added6 = false
		ms, err := Members(tx, g)
		if err != nil {
			return err
		}
		if len(ms) == 0 && req.NetworkID == "" && g.VIP == nil {
			// A group without members given only an address: the guest
			// network holding that address is the one chosen.
			switch {
			case req.IPAddr.IsValid():
				req.NetworkID, err = networkOf(tx, req.IPAddr)
			case req.IP6Addr.IsValid():
				req.NetworkID, err = networkOf(tx, req.IP6Addr)
			}
			if err != nil {
				return err
			}
		}
		netID, err := checkAttach(g, ms, req)
		if err != nil {
			return err
		}
		n, err := getNetwork(tx, netID)
		if err != nil {
			return err
		}
		if n.Kind != registry.KindGuest {
			return refuse(ErrNotGuestNetwork, "network %s is of kind %s", n.ID, n.Kind)
		}
		addr, err := allocate(tx, n, allocRequest{Want: req.IPAddr, Dir: req.AllocDir, Reserved: req.Reserved, Require: req.RequireDesignatedIP && req.IPAddr.IsValid()}, s.intn)
		if err != nil {
			return err
		}
		var addr6 netip.Addr
		if wantsIPv6(req) {
			if addr6, err = allocate6(tx, n, allocRequest{Want: req.IP6Addr, Dir: req.AllocDir, Require: req.RequireDesignatedIP && req.IP6Addr.IsValid()}, s.intn); err != nil {
				return err
			}
		}
		vrid, err := pickVRID(tx, g, n.ID)
		if err != nil {
			return err
		}
		for _, a := range []netip.Addr{addr, addr6} {
			if !a.IsValid() {
				continue
			}
			if err := putVIPLease(tx, n.ID, a, g.ID); err != nil {
				return err
			}
		}
		g.VIP = &registry.VIPBinding{Address: addr, Address6: addr6, NetworkID: n.ID, Reserved: req.Reserved, VRID: vrid, BoundAt: s.nowUTC()}
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	log := s.log.With("op", "instancegroup-attachnetwork", "group", g.Name, "network", g.VIP.NetworkID)
	if g.VIP.Address6.IsValid() {
		log = log.With("vip6", g.VIP.Address6)
	}
	if added6 {
		log.Info("ipv6 vip attached", "vip", g.VIP.Address)
	} else {
		log.Info("vip attached", "vip", g.VIP.Address)
	}
	s.notify(ctx, Change{Op: "instancegroup-attachnetwork", Group: g.ID, VIPs: true})
	return s.ShowGroup(ctx, g.ID)
}

// attachIPv6 adds an IPv6 VIP to group g, which has its IPv4 VIP: from
// the same network (the members' single NIC is on it), one per group.
// Inside the Update transaction.
func (s *Inventory) attachIPv6(tx registry.Tx, g *registry.Group, req api.AttachNetwork) error {
	if g.VIP.Address6.IsValid() {
		return refuse(ErrOneVIPPerGroup, "group %s already has IPv6 VIP %s", g.Name, g.VIP.Address6)
	}
	if req.NetworkID != "" && req.NetworkID != g.VIP.NetworkID {
		return refuse(ErrNetworkMismatch, "--network-id %s, but group %s's VIP %s is in network %s", req.NetworkID, g.Name, g.VIP.Address, g.VIP.NetworkID)
	}
	if req.Reserved {
		return Invalid("reserved", "the reserved pool is IPv4; an IPv6 VIP comes from the network's IPv6 range")
	}
	n, err := getNetwork(tx, g.VIP.NetworkID)
	if err != nil {
		return err
	}
	addr6, err := allocate6(tx, n, allocRequest{Want: req.IP6Addr, Dir: req.AllocDir, Require: req.RequireDesignatedIP}, s.intn)
	if err != nil {
		return err
	}
	if err := putVIPLease(tx, n.ID, addr6, g.ID); err != nil {
		return err
	}
	vip := *g.VIP
	vip.Address6 = addr6
	g.VIP = &vip
	g.Revision++
	return registry.Put(tx, *g)
}

// putVIPLease leases VIP address a of network to group, with the index
// entry GroupByVIP reads.
func putVIPLease(tx registry.Tx, network string, a netip.Addr, group string) error {
	if err := registry.Put(tx, registry.Lease{NetworkID: network, Address: a, Kind: registry.LeaseVIP, Holder: group}); err != nil {
		return err
	}
	return registry.Put(tx, registry.VIPIndex{Address: a, GroupID: group})
}

// deleteVIPLeases releases the leases of a VIP's addresses and their
// index entries.
func deleteVIPLeases(tx registry.Tx, vip *registry.VIPBinding) error {
	for _, a := range []netip.Addr{vip.Address, vip.Address6} {
		if !a.IsValid() {
			continue
		}
		if err := tx.Delete(registry.BucketLeases, registry.LeaseKey(vip.NetworkID, a)); err != nil {
			return err
		}
		if err := tx.Delete(registry.BucketByVIP, a.String()); err != nil {
			return err
		}
	}
	return nil
}

// networkOf finds the guest network holding a.
func networkOf(tx registry.Tx, a netip.Addr) (string, error) {
	nets, err := registry.List[registry.Network](tx, "")
	if err != nil {
		return "", err
	}
	for _, n := range nets {
		if n.Kind == registry.KindGuest && n.Contains(a.Unmap()) {
			return n.ID, nil
		}
	}
	return "", refuse(ErrAddressNotInNetwork, "%s is in no guest network", a)
}

// defaultGroupID is the id of a group created without one.
func defaultGroupID(name string) string { return "ig-" + name }

// pickVRID derives the group's virtual_router_id from its id (as vrrp
// does) and, when another group with a VIP in the same network already
// uses it, takes the next free one: two VRRP instances with one id on one
// segment would fight. The network's VIP leases name those groups, so
// the cost follows the network's size, not the number of groups.
func pickVRID(tx registry.Tx, g registry.Group, network string) (int, error) {
	used := map[int]bool{}
	seen := map[string]bool{g.ID: true}
	err := tx.ForEach(registry.BucketLeases, network+"/", func(key string, value []byte) error {
		var l registry.Lease
		if err := json.Unmarshal(value, &l); err != nil {
			return fmt.Errorf("registry: decode %s/%s: %w", registry.BucketLeases, key, err)
		}
		if l.Kind != registry.LeaseVIP || seen[l.Holder] {
			return nil
		}
		seen[l.Holder] = true
		o, err := registry.Get[registry.Group](tx, l.Holder)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			return nil
		case err != nil:
			return err
		}
		if o.VIP != nil && o.VIP.NetworkID == network {
			used[o.VIP.VRID] = true
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	first := vrrp.DeriveVRID(g.ID)
	for k := range 255 {
		if id := (first-1+k)%255 + 1; !used[id] {
			return id, nil
		}
	}
	return 0, refuse(ErrNetworkFull, "all 255 virtual_router_ids of network %s are in use", network)
}

// DetachNetwork unbinds a group's VIP (refused while an EIP is bound).
func (s *Inventory) DetachNetwork(ctx context.Context, ref string, req api.DetachNetwork) (api.GroupView, error) {
	var g registry.Group
	var vip netip.Addr
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		if err := checkDetach(g, req); err != nil {
			return err
		}
		vip = g.VIP.Address
		if err := deleteVIPLeases(tx, g.VIP); err != nil {
			return err
		}
		owner, err := Owner(tx, g.ID)
		if err != nil {
			return err
		}
		if owner.GuestID != "" {
			if _, err := registry.SwapOwner(tx, owner.Revision, registry.Owner{Group: g.ID, Since: s.nowUTC(), Source: "detach"}); err != nil {
				return err
			}
		}
		g.VIP = nil
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("vip detached", "op", "instancegroup-detachnetwork", "group", g.Name, "vip", vip)
	s.notify(ctx, Change{Op: "instancegroup-detachnetwork", Group: g.ID, OwnerGone: true, VIPs: true})
	return s.ShowGroup(ctx, g.ID)
}

// CreateGroupEIP allocates an EIP and binds it to the group's VIP.
func (s *Inventory) CreateGroupEIP(ctx context.Context, ref string, req api.CreateGroupEIP) (api.GroupView, error) {
	if err := checkEIPAttrs(req.Bandwidth, req.BGPType, req.ChargeType); err != nil {
		return api.GroupView{}, err
	}
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		vipNet, err := vipNetwork(tx, g)
		if err != nil {
			return err
		}
		if err := checkBindEIP(g, vipNet, nil); err != nil {
			return err
		}
		e, err := s.allocEIP(tx, api.EIPCreate{
			IPAddr: req.IPAddr, NetworkID: req.NetworkID, Bandwidth: req.Bandwidth, BGPType: req.BGPType,
			ChargeType: req.ChargeType, AutoDeallocate: req.AutoDeallocate,
		})
		if err != nil {
			return err
		}
		return s.bindEIP(tx, &g, e)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("eip created and associated", "op", "instancegroup-create-eip", "group", g.Name, "eip", g.EIP.Address)
	s.notify(ctx, Change{Op: "instancegroup-create-eip", Group: g.ID, DataPlane: true})
	return s.ShowGroup(ctx, g.ID)
}

func vipNetwork(tx registry.Tx, g registry.Group) (registry.Network, error) {
	if g.VIP == nil {
		return registry.Network{}, nil
	}
	return getNetwork(tx, g.VIP.NetworkID)
}

func (s *Inventory) bindEIP(tx registry.Tx, g *registry.Group, e registry.EIP) error {
	e.Group = g.ID
	g.EIP = &registry.EIPBinding{EIPID: e.ID, Address: e.Address, BoundAt: s.nowUTC()}
	g.Revision++
	if err := registry.Put(tx, e); err != nil {
		return err
	}
	return registry.Put(tx, *g)
}

// AssociateEIP binds an existing EIP (by id or address) to the group.
func (s *Inventory) AssociateEIP(ctx context.Context, ref string, req api.AssociateEIP) (api.GroupView, error) {
	if req.EIPID == "" && !req.IPAddr.IsValid() {
		return api.GroupView{}, Invalid("eip_id", "name the EIP with --eip-id or --ip-addr")
	}
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		e, err := findEIP(tx, req)
		if err != nil {
			return err
		}
		vipNet, err := vipNetwork(tx, g)
		if err != nil {
			return err
		}
		if err := checkBindEIP(g, vipNet, &e); err != nil {
			return err
		}
		return s.bindEIP(tx, &g, e)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("eip associated", "op", "instancegroup-associate-eip", "group", g.Name, "eip", g.EIP.Address)
	s.notify(ctx, Change{Op: "instancegroup-associate-eip", Group: g.ID, DataPlane: true})
	return s.ShowGroup(ctx, g.ID)
}

func findEIP(tx registry.Tx, req api.AssociateEIP) (registry.EIP, error) {
	if req.EIPID != "" {
		e, err := registry.Get[registry.EIP](tx, req.EIPID)
		if errors.Is(err, registry.ErrNotFound) {
			return e, fmt.Errorf("%w: no EIP %q", ErrNotFound, req.EIPID)
		}
		if err == nil && req.IPAddr.IsValid() && e.Address != req.IPAddr.Unmap() {
			return e, Invalid("ip_addr", "EIP %s has address %s, not %s", e.ID, e.Address, req.IPAddr)
		}
		return e, err
	}
	eips, err := registry.List[registry.EIP](tx, "")
	if err != nil {
		return registry.EIP{}, err
	}
	for _, e := range eips {
		if e.Address == req.IPAddr.Unmap() {
			return e, nil
		}
	}
	return registry.EIP{}, fmt.Errorf("%w: no EIP with address %s (eip-create first)", ErrNotFound, req.IPAddr)
}

// DissociateEIP unbinds the group's EIP, deleting it when it was created
// with auto-deallocate.
func (s *Inventory) DissociateEIP(ctx context.Context, ref string) (api.GroupView, error) {
	var g registry.Group
	var old registry.EIPBinding
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		if err := checkDissociate(g); err != nil {
			return err
		}
		old = *g.EIP
		e, err := registry.Get[registry.EIP](tx, g.EIP.EIPID)
		switch {
		case errors.Is(err, registry.ErrNotFound):
		case err != nil:
			return err
		case e.AutoDeallocate:
			if err := tx.Delete(registry.BucketLeases, registry.LeaseKey(e.NetworkID, e.Address)); err != nil {
				return err
			}
			if err := tx.Delete(registry.BucketEIPs, e.ID); err != nil {
				return err
			}
		default:
			e.Group = ""
			if err := registry.Put(tx, e); err != nil {
				return err
			}
		}
		g.EIP = nil
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("eip dissociated", "op", "instancegroup-dissociate-eip", "group", g.Name, "eip", old.Address)
	s.notify(ctx, Change{Op: "instancegroup-dissociate-eip", Group: g.ID, DataPlane: true})
	return s.ShowGroup(ctx, g.ID)
}
