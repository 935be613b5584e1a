package inventory

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// The platform's rules (the seed's, and the ones Cloudpods codes). Each
// sentinel states its rule; errors returned by Inventory wrap one of them with
// the objects involved, e.g.
//
//	hostsync: one VIP per group: group nginx already has VIP 192.0.2.10
//
// so errors.Is finds the rule and the text explains it. The admin API
// answers them with 409 Conflict.
var (
	// ErrOneVIPPerGroup: a group binds at most one VIP per address family
	// (an IPv4 VIP and, beside it, an IPv6 one).
	ErrOneVIPPerGroup = errors.New("hostsync: one VIP per group")
	// ErrNetworkRequired: a group without members must be told the VIP's
	// network (--network-id).
	ErrNetworkRequired = errors.New("hostsync: a group without members needs --network-id to choose the VIP's network")
	// ErrMembersNotInOneNetwork: a group with members binds a VIP only when
	// all of them are in the same network.
	ErrMembersNotInOneNetwork = errors.New("hostsync: a group binds a VIP only when all its members are in the same network")
	// ErrNetworkMismatch: --network-id of a group with members must be the
	// members' network.
	ErrNetworkMismatch = errors.New("hostsync: the VIP's network must be the network of the group's members")
	// ErrOneNIC: members of a group with a VIP (or about to get one) must
	// have exactly one NIC.
	ErrOneNIC = errors.New("hostsync: members of a group with a VIP must have exactly one NIC")
	// ErrWrongNetwork: once a group has a VIP, only guests of the VIP's
	// network may join.
	ErrWrongNetwork = errors.New("hostsync: only guests of the VIP's network may join a group with a VIP")
	// ErrNotGuestNetwork: VIPs and guests live on guest networks, EIPs on
	// EIP networks.
	ErrNotGuestNetwork = errors.New("hostsync: VIPs and guests need a network of kind guest")
	// ErrNotEIPNetwork: EIPs come from networks of kind eip.
	ErrNotEIPNetwork = errors.New("hostsync: EIPs come from a network of kind eip")
	// ErrAddressNotInNetwork: a requested address is outside the network's
	// subnet.
	ErrAddressNotInNetwork = errors.New("hostsync: the address is not in the network")
	// ErrAddressUnavailable: a requested address is taken, reserved, the
	// gateway or outside the usable range, and --require-designated-ip
	// forbids picking another.
	ErrAddressUnavailable = errors.New("hostsync: the designated address is not available")
	// ErrAddressInUse: a guest or EIP address is already leased.
	ErrAddressInUse = errors.New("hostsync: the address is already in use")
	// ErrNetworkFull: no free address is left in the range (or in the
	// reserved pool with --reserved).
	ErrNetworkFull = errors.New("hostsync: no free address left")
	// ErrVIPRequired: a group binds an EIP only after it has a VIP.
	ErrVIPRequired = errors.New("hostsync: a group binds an EIP only after it has a VIP")
	// ErrEIPNeedsVPC: EIPs are for groups whose VIP is in a VPC network.
	ErrEIPNeedsVPC = errors.New("hostsync: an EIP binds only to a group whose VIP is in a VPC network")
	// ErrOneEIPPerGroup: a group binds at most one EIP.
	ErrOneEIPPerGroup = errors.New("hostsync: one EIP per group")
	// ErrEIPInUse: an EIP maps to one group's VIP at a time.
	ErrEIPInUse = errors.New("hostsync: the EIP is bound to another group")
	// ErrNoEIP: there is no EIP to dissociate.
	ErrNoEIP = errors.New("hostsync: the group has no EIP")
	// ErrDetachWithEIP: the VIP cannot be detached while an EIP is bound.
	ErrDetachWithEIP = errors.New("hostsync: dissociate the EIP before detaching the VIP")
	// ErrNoVIP: there is no VIP to detach (or serve).
	ErrNoVIP = errors.New("hostsync: the group has no VIP")
	// ErrVIPMismatch: detachnetwork --ip-addr names another address than
	// the group's VIP.
	ErrVIPMismatch = errors.New("hostsync: the address is not the group's VIP")
	// ErrGroupHasMembers: a group with members cannot be deleted.
	ErrGroupHasMembers = errors.New("hostsync: a group with members cannot be deleted")
	// ErrGroupHasEIP: a group with an EIP cannot be deleted.
	ErrGroupHasEIP = errors.New("hostsync: a group with an EIP cannot be deleted")
	// ErrAlreadyMember: the guest is already a member of this group.
	ErrAlreadyMember = errors.New("hostsync: the guest is already a member")
	// ErrInOtherGroup: a guest is a member of at most one group, because
	// the guest API serves each guest the metadata of its one group.
	ErrInOtherGroup = errors.New("hostsync: a guest is a member of at most one group")
	// ErrNotMember: the guest is not a member of the group.
	ErrNotMember = errors.New("hostsync: the guest is not a member of the group")
	// ErrTooManyMembers: VRRP metadata carries at most MaxMembers members.
	ErrTooManyMembers = errors.New("hostsync: too many members")
	// ErrExists: an object with this id or name already exists.
	ErrExists = errors.New("hostsync: already exists")
	// ErrGuestInGroup: a guest that is a member cannot be removed.
	ErrGuestInGroup = errors.New("hostsync: the guest is a member of a group")
	// ErrNotFound: no object has this id or name.
	ErrNotFound = errors.New("hostsync: not found")
	// ErrInvalid: the request is malformed (the admin API answers 400).
	ErrInvalid = errors.New("hostsync: invalid request")
)

// MaxMembers bounds a group (vrrp's metadata limit).
const MaxMembers = 32

// refuse wraps a rule with the particulars.
func refuse(rule error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{rule}, args...)...)
}

// InvalidError is a malformed request naming its field (Invalid); it
// wraps ErrInvalid.
type InvalidError struct {
	Field string
	Msg   string
}

func (e *InvalidError) Error() string {
	if e.Field == "" {
		return ErrInvalid.Error() + ": " + e.Msg
	}
	return ErrInvalid.Error() + ": " + e.Field + ": " + e.Msg
}

func (e *InvalidError) Unwrap() error { return ErrInvalid }

// Invalid returns an *InvalidError for field.
func Invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// IsRefusal reports whether err is a rule refusal (as opposed to a
// malformed request, a missing object or a store failure).
func IsRefusal(err error) bool {
	for _, r := range []error{
		ErrOneVIPPerGroup, ErrNetworkRequired, ErrMembersNotInOneNetwork, ErrNetworkMismatch,
		ErrOneNIC, ErrWrongNetwork, ErrNotGuestNetwork, ErrNotEIPNetwork, ErrAddressNotInNetwork,
		ErrAddressUnavailable, ErrAddressInUse, ErrNetworkFull, ErrVIPRequired, ErrEIPNeedsVPC,
		ErrOneEIPPerGroup, ErrEIPInUse, ErrNoEIP, ErrDetachWithEIP, ErrNoVIP, ErrVIPMismatch,
		ErrGroupHasMembers, ErrGroupHasEIP, ErrAlreadyMember, ErrInOtherGroup, ErrNotMember, ErrNoIPv6Prefix,
		ErrTooManyMembers, ErrExists, ErrGuestInGroup, ErrNetworkOverlap, ErrRevisionChanged,
	} {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// ErrNetworkOverlap: networks may not overlap, since guests are told apart
// by their source address.
var ErrNetworkOverlap = errors.New("hostsync: networks may not overlap")

// The rule checks below are pure functions of the records involved; Service
// calls them inside the Update transaction that then writes, so what they
// checked still holds when the write commits.

// checkJoin: may guest join group?
func checkJoin(g registry.Group, guest registry.Guest) error {
	if _, ok := g.Member(guest.ID); ok {
		return refuse(ErrAlreadyMember, "guest %s is already in group %s", guest.Name, g.Name)
	}
	if guest.Group != "" && guest.Group != g.ID {
		return refuse(ErrInOtherGroup, "guest %s is already in group %s", guest.Name, guest.Group)
	}
	if len(g.Members) >= MaxMembers {
		return refuse(ErrTooManyMembers, "group %s has %d members, at most %d are allowed", g.Name, len(g.Members), MaxMembers)
	}
	if g.VIP != nil {
		if guest.NetworkID != g.VIP.NetworkID {
			return refuse(ErrWrongNetwork, "guest %s is in network %s, group %s's VIP %s is in network %s",
				guest.Name, guest.NetworkID, g.Name, g.VIP.Address, g.VIP.NetworkID)
		}
		if guest.NICs != 1 {
			return refuse(ErrOneNIC, "guest %s has %d NICs", guest.Name, guest.NICs)
		}
	}
	return nil
}

// checkAttach: may group bind a VIP, and in which network? members are the
// group's guests in join order. It returns the network id the VIP comes
// from.
func checkAttach(g registry.Group, members []registry.Guest, req api.AttachNetwork) (string, error) {
	if g.VIP != nil {
		return "", refuse(ErrOneVIPPerGroup, "group %s already has VIP %s", g.Name, g.VIP.Address)
	}
	if len(members) == 0 {
		if req.NetworkID == "" {
			return "", refuse(ErrNetworkRequired, "group %s has no members", g.Name)
		}
		return req.NetworkID, nil
	}
	var multi []string
	nets := map[string][]string{}
	var order []string
	for _, m := range members {
		if m.NICs != 1 {
			multi = append(multi, fmt.Sprintf("%s has %d NICs", m.Name, m.NICs))
		}
		if _, ok := nets[m.NetworkID]; !ok {
			order = append(order, m.NetworkID)
		}
		nets[m.NetworkID] = append(nets[m.NetworkID], m.Name)
	}
	if len(multi) > 0 {
		return "", refuse(ErrOneNIC, "in group %s, %s", g.Name, strings.Join(multi, ", "))
	}
	if len(order) > 1 {
		parts := make([]string, len(order))
		for i, n := range order {
			parts[i] = fmt.Sprintf("%s in %s", strings.Join(nets[n], ", "), n)
		}
		return "", refuse(ErrMembersNotInOneNetwork, "group %s has %s", g.Name, strings.Join(parts, "; "))
	}
	if req.NetworkID != "" && req.NetworkID != order[0] {
		return "", refuse(ErrNetworkMismatch, "--network-id %s, but the members of group %s are in network %s", req.NetworkID, g.Name, order[0])
	}
	return order[0], nil
}

// checkBindEIP: may group bind e? vipNet is the network of the group's VIP
// (zero when it has none).
func checkBindEIP(g registry.Group, vipNet registry.Network, e *registry.EIP) error {
	if g.VIP == nil {
		return refuse(ErrVIPRequired, "group %s has no VIP; attach a network first", g.Name)
	}
	if g.EIP != nil {
		return refuse(ErrOneEIPPerGroup, "group %s already has EIP %s", g.Name, g.EIP.Address)
	}
	if !vipNet.IsVPC() {
		return refuse(ErrEIPNeedsVPC, "group %s's VIP %s is in classic network %s", g.Name, g.VIP.Address, vipNet.ID)
	}
	if e != nil && e.Group != "" && e.Group != g.ID {
		return refuse(ErrEIPInUse, "EIP %s (%s) is bound to group %s", e.ID, e.Address, e.Group)
	}
	return nil
}

// checkDetach: may group's VIP be detached?
func checkDetach(g registry.Group, req api.DetachNetwork) error {
	if g.VIP == nil {
		return refuse(ErrNoVIP, "group %s", g.Name)
	}
	if a := req.IPAddr.Unmap(); req.IPAddr.IsValid() && a != g.VIP.Address && (!a.Is6() || a != g.VIP.Address6) {
		return refuse(ErrVIPMismatch, "%s is not group %s's VIP %s", req.IPAddr, g.Name, g.VIP.Address)
	}
	if g.EIP != nil {
		return refuse(ErrDetachWithEIP, "group %s has EIP %s", g.Name, g.EIP.Address)
	}
	return nil
}

// checkDelete: may group be deleted?
func checkDelete(g registry.Group) error {
	if len(g.Members) > 0 {
		return refuse(ErrGroupHasMembers, "group %s has %d members; let them leave first", g.Name, len(g.Members))
	}
	if g.EIP != nil {
		return refuse(ErrGroupHasEIP, "group %s has EIP %s; dissociate it first", g.Name, g.EIP.Address)
	}
	return nil
}

// checkDissociate: has group an EIP to dissociate?
func checkDissociate(g registry.Group) error {
	if g.EIP == nil {
		return refuse(ErrNoEIP, "group %s", g.Name)
	}
	return nil
}
