package inventory

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// CreateNetwork registers an IPv4 subnet, with an optional IPv6 prefix
// (a dual-stack guest network).
func (s *Inventory) CreateNetwork(ctx context.Context, req api.NetworkCreate) (api.NetworkInfo, error) {
	n, err := buildNetwork(req, s.nowUTC())
	if err != nil {
		return api.NetworkInfo{}, err
	}
	err = s.store.Update(ctx, func(tx registry.Tx) error {
		nets, err := registry.List[registry.Network](tx, "")
		if err != nil {
			return err
		}
		for _, o := range nets {
			if o.ID == n.ID {
				return refuse(ErrExists, "network %s", n.ID)
			}
			if o.CIDR.Overlaps(n.CIDR) {
				return refuse(ErrNetworkOverlap, "%s overlaps network %s (%s)", n.CIDR, o.ID, o.CIDR)
			}
			if n.CIDR6.IsValid() && o.CIDR6.IsValid() && o.CIDR6.Overlaps(n.CIDR6) {
				return refuse(ErrNetworkOverlap, "%s overlaps network %s (%s)", n.CIDR6, o.ID, o.CIDR6)
			}
		}
		return registry.Put(tx, n)
	})
	if err != nil {
		return api.NetworkInfo{}, err
	}
	s.log.Info("network created", "op", "network-create", "network", n.ID, "cidr", n.CIDR)
	return networkInfo(n, 0), nil
}

func buildNetwork(req api.NetworkCreate, now time.Time) (registry.Network, error) {
	if err := checkID("id", req.ID); err != nil {
		return registry.Network{}, err
	}
	if req.Name != "" && !reAttr.MatchString(req.Name) {
		return registry.Network{}, Invalid("name", "%q is not allowed (A-Z a-z 0-9 . _ -)", req.Name)
	}
	if !req.CIDR.IsValid() {
		return registry.Network{}, Invalid("cidr", "is required, e.g. 192.0.2.0/24")
	}
	if !req.CIDR.Addr().Is4() || req.CIDR.Addr().Zone() != "" {
		return registry.Network{}, Invalid("cidr", "%s is not IPv4; only IPv4 networks are supported (gratuitous ARP is IPv4)", req.CIDR)
	}
	if b := req.CIDR.Bits(); b < 16 || b > 30 {
		return registry.Network{}, Invalid("cidr", "%s: prefix /%d is not supported, allowed /16 to /30", req.CIDR, b)
	}
	if req.VPCID != "" && !reID.MatchString(req.VPCID) {
		return registry.Network{}, Invalid("vpc_id", "%q is not an id", req.VPCID)
	}
	n := registry.Network{
		ID: req.ID, Name: req.Name, CIDR: req.CIDR.Masked(), VPCID: req.VPCID,
		Kind: registry.NetworkKind(req.Kind), CreatedAt: now,
	}
	switch n.Kind {
	case "":
		n.Kind = registry.KindGuest
	case registry.KindGuest, registry.KindEIP:
	default:
		return registry.Network{}, Invalid("kind", "%q is not one of guest, eip", req.Kind)
	}
	netAddr, bcast := n.CIDR.Addr(), lastAddr(n.CIDR)
	host := func(field string, a netip.Addr) error {
		switch {
		case !n.CIDR.Contains(a):
			return Invalid(field, "%s is not in %s", a, n.CIDR)
		case a == netAddr:
			return Invalid(field, "%s is the network address", a)
		case a == bcast:
			return Invalid(field, "%s is the broadcast address", a)
		}
		return nil
	}
	n.Gateway = req.Gateway.Unmap()
	if !n.Gateway.IsValid() {
		n.Gateway = netAddr.Next()
	}
	if err := host("gateway", n.Gateway); err != nil {
		return registry.Network{}, err
	}
	n.RangeStart, n.RangeEnd = req.RangeStart.Unmap(), req.RangeEnd.Unmap()
	if !n.RangeStart.IsValid() {
		n.RangeStart = netAddr.Next()
		if n.RangeStart == n.Gateway {
			n.RangeStart = n.RangeStart.Next()
		}
	}
	if !n.RangeEnd.IsValid() {
		n.RangeEnd = bcast.Prev()
		if n.RangeEnd == n.Gateway {
			n.RangeEnd = n.RangeEnd.Prev()
		}
	}
	if err := host("range_start", n.RangeStart); err != nil {
		return registry.Network{}, err
	}
	if err := host("range_end", n.RangeEnd); err != nil {
		return registry.Network{}, err
	}
	if n.RangeStart.Compare(n.RangeEnd) > 0 {
		return registry.Network{}, Invalid("range_start", "%s is after range_end %s", n.RangeStart, n.RangeEnd)
	}
	for i, r := range req.Reserved {
		r = r.Unmap()
		field := fmt.Sprintf("reserved[%d]", i)
		if err := host(field, r); err != nil {
			return registry.Network{}, err
		}
		if r == n.Gateway {
			return registry.Network{}, Invalid(field, "%s is the gateway", r)
		}
		if !n.IsReserved(r) {
			n.Reserved = append(n.Reserved, r)
		}
	}
	slices.SortFunc(n.Reserved, netip.Addr.Compare)
	if err := buildNetwork6(&n, req); err != nil {
		return registry.Network{}, err
	}
	return n, nil
}

// RegisterGuest registers a VM and leases its address.
func (s *Inventory) RegisterGuest(ctx context.Context, req api.GuestRegister) (api.GuestInfo, error) {
	if err := checkID("id", req.ID); err != nil {
		return api.GuestInfo{}, err
	}
	if !reGuestName.MatchString(req.Name) {
		return api.GuestInfo{}, Invalid("name", "%q is not a guest name (1–63 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", req.Name)
	}
	if req.NICs < 1 || req.NICs > 64 {
		return api.GuestInfo{}, Invalid("nics", "%d is out of range, allowed 1–64", req.NICs)
	}
	hw, err := net.ParseMAC(req.MAC)
	if err != nil || len(hw) != 6 || hw[0]&1 != 0 {
		return api.GuestInfo{}, Invalid("mac", "%q is not a unicast MAC address such as 52:54:00:12:34:56", req.MAC)
	}
	if req.Host != "" && !reID.MatchString(req.Host) {
		return api.GuestInfo{}, Invalid("host", "%q is not a host id", req.Host)
	}
	if !req.Address.IsValid() {
		return api.GuestInfo{}, Invalid("address", "is required")
	}
	g := registry.Guest{
		ID: req.ID, Name: req.Name, NICs: req.NICs, NetworkID: req.NetworkID,
		Address: req.Address.Unmap(), MAC: hw.String(), Host: req.Host, CreatedAt: s.nowUTC(),
	}
	err = s.store.Update(ctx, func(tx registry.Tx) error {
		n, err := getNetwork(tx, g.NetworkID)
		if err != nil {
			return err
		}
		if n.Kind != registry.KindGuest {
			return refuse(ErrNotGuestNetwork, "network %s is of kind %s", n.ID, n.Kind)
		}
		guests, err := registry.List[registry.Guest](tx, "")
		if err != nil {
			return err
		}
		for _, o := range guests {
			switch {
			case o.ID == g.ID:
				return refuse(ErrExists, "guest %s", g.ID)
			case o.Name == g.Name:
				return refuse(ErrExists, "a guest named %s (%s)", g.Name, o.ID)
			case o.MAC == g.MAC:
				return refuse(ErrExists, "MAC %s is guest %s's", g.MAC, o.Name)
			}
		}
		if err := leaseExact(tx, n, g.Address, registry.LeaseGuest, g.ID); err != nil {
			return err
		}
		if err := registry.Put(tx, registry.AddrIndex{Address: g.Address, GuestID: g.ID}); err != nil {
			return err
		}
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GuestInfo{}, err
	}
	s.log.Info("guest registered", "op", "guest-register", "guest", g.Name, "address", g.Address, "network", g.NetworkID)
	return guestInfo(g), nil
}

// leaseExact leases addr (which the caller does not choose from a pool: a
// guest's or an EIP's given address).
func leaseExact(tx registry.Tx, n registry.Network, addr netip.Addr, kind registry.LeaseKind, holder string) error {
	if !n.CIDR.Contains(addr) {
		return refuse(ErrAddressNotInNetwork, "%s is not in network %s (%s)", addr, n.ID, n.CIDR)
	}
	if addr == n.CIDR.Addr() || addr == lastAddr(n.CIDR) || addr == n.Gateway {
		return refuse(ErrAddressUnavailable, "%s is the network, broadcast or gateway address of network %s", addr, n.ID)
	}
	l, err := registry.Get[registry.Lease](tx, registry.LeaseKey(n.ID, addr))
	switch {
	case err == nil:
		return refuse(ErrAddressInUse, "%s in network %s is in use by %s %s", addr, n.ID, l.Kind, l.Holder)
	case !errors.Is(err, registry.ErrNotFound):
		return err
	}
	return registry.Put(tx, registry.Lease{NetworkID: n.ID, Address: addr, Kind: kind, Holder: holder})
}

// CreateEIP allocates a public address from an EIP network.
func (s *Inventory) CreateEIP(ctx context.Context, req api.EIPCreate) (api.EIPInfo, error) {
	if err := checkEIPAttrs(req.Bandwidth, req.BGPType, req.ChargeType); err != nil {
		return api.EIPInfo{}, err
	}
	if req.ID != "" {
		if err := checkID("id", req.ID); err != nil {
			return api.EIPInfo{}, err
		}
	}
	var e registry.EIP
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		e, err = s.allocEIP(tx, req)
		return err
	})
	if err != nil {
		return api.EIPInfo{}, err
	}
	s.log.Info("eip created", "op", "eip-create", "eip", e.ID, "address", e.Address)
	return eipInfo(e), nil
}

func checkEIPAttrs(bw int, bgp, charge string) error {
	if bw < 0 || bw > 1_000_000 {
		return Invalid("bandwidth", "%d is out of range, allowed 0–1000000 Mbit/s", bw)
	}
	if !reAttr.MatchString(bgp) {
		return Invalid("bgp_type", "%q is not allowed (A-Z a-z 0-9 . _ -)", bgp)
	}
	switch charge {
	case "", "traffic", "bandwidth":
	default:
		return Invalid("charge_type", "%q is not one of traffic, bandwidth", charge)
	}
	return nil
}

// allocEIP allocates and writes an EIP record and its lease (inside Update).
func (s *Inventory) allocEIP(tx registry.Tx, req api.EIPCreate) (registry.EIP, error) {
	nets, err := registry.List[registry.Network](tx, "")
	if err != nil {
		return registry.EIP{}, err
	}
	var cands []registry.Network
	for _, n := range nets {
		switch {
		case req.NetworkID != "" && n.ID == req.NetworkID:
			if n.Kind != registry.KindEIP {
				return registry.EIP{}, refuse(ErrNotEIPNetwork, "network %s is of kind %s", n.ID, n.Kind)
			}
			cands = append(cands, n)
		case req.NetworkID == "" && n.Kind == registry.KindEIP &&
			(!req.IPAddr.IsValid() || n.CIDR.Contains(req.IPAddr.Unmap())):
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		switch {
		case req.NetworkID != "":
			return registry.EIP{}, fmt.Errorf("%w: no network %q", ErrNotFound, req.NetworkID)
		case req.IPAddr.IsValid():
			return registry.EIP{}, refuse(ErrAddressNotInNetwork, "%s is in no EIP network", req.IPAddr)
		}
		return registry.EIP{}, refuse(ErrNotEIPNetwork, "no EIP network is registered (network-create --kind eip)")
	}
	var lastErr error
	for _, n := range cands {
		addr, err := allocate(tx, n, allocRequest{Want: req.IPAddr, Require: req.IPAddr.IsValid()}, s.intn)
		if errors.Is(err, ErrNetworkFull) {
			lastErr = err
			continue
		}
		if err != nil {
			return registry.EIP{}, err
		}
		id := req.ID
		if id == "" {
			id = "eip-" + strings.ReplaceAll(addr.String(), ".", "-")
		}
		if _, err := registry.Get[registry.EIP](tx, id); err == nil {
			return registry.EIP{}, refuse(ErrExists, "EIP %s", id)
		} else if !errors.Is(err, registry.ErrNotFound) {
			return registry.EIP{}, err
		}
		e := registry.EIP{
			ID: id, Address: addr, NetworkID: n.ID, Bandwidth: req.Bandwidth, BGPType: req.BGPType,
			ChargeType: req.ChargeType, AutoDeallocate: req.AutoDeallocate, CreatedAt: s.nowUTC(),
		}
		if err := registry.Put(tx, registry.Lease{NetworkID: n.ID, Address: addr, Kind: registry.LeaseEIP, Holder: id}); err != nil {
			return registry.EIP{}, err
		}
		return e, registry.Put(tx, e)
	}
	return registry.EIP{}, lastErr
}
