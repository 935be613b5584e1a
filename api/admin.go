package api

import (
	"net/netip"
	"time"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// hostsync admin API: HTTP over a unix socket (default DefaultAdminSocket,
// mode 0600, root only), JSON bodies decoded strictly. vipctl's admin
// commands are its client. Refusals by a rule answer 409 with an Error whose
// text states the rule; unknown objects 404; malformed input 400.
const (
	// DefaultAdminSocket is hostsync's admin socket.
	DefaultAdminSocket = "/run/vipkeeper/hostsync.sock"

	// PathAdminNetworks takes POST of a NetworkCreate (answers NetworkInfo)
	// and answers GET with []NetworkInfo.
	PathAdminNetworks = "/v1/admin/networks"
	// PathAdminGuests takes POST of a GuestRegister (answers GuestInfo) and
	// answers GET with []GuestInfo.
	PathAdminGuests = "/v1/admin/guests"
	// PathAdminEIPs takes POST of an EIPCreate (answers EIPInfo) and
	// answers GET with []EIPInfo.
	PathAdminEIPs = "/v1/admin/eips"
	// PathAdminGroups takes POST of a GroupCreate (answers GroupView) and
	// answers GET with []GroupView.
	PathAdminGroups = "/v1/admin/groups"
	// PathAdminGroup + "{group}" (id or name) answers GET with GroupView and
	// takes DELETE; PathAdminGroup + "{group}/" + an Action takes POST of the
	// action's request and answers GroupView.
	PathAdminGroup = "/v1/admin/groups/"
	// PathAdminStatus answers GET with HostsyncStatus.
	PathAdminStatus = "/v1/admin/status"
)

// The group actions, POSTed to PathAdminGroup + "{group}/" + action.
const (
	ActionJoin          = "join"           // GroupMembers
	ActionLeave         = "leave"          // GroupMembers
	ActionAttachNetwork = "attachnetwork"  // AttachNetwork
	ActionDetachNetwork = "detachnetwork"  // DetachNetwork
	ActionCreateEIP     = "create-eip"     // CreateGroupEIP
	ActionAssociateEIP  = "associate-eip"  // AssociateEIP
	ActionDissociateEIP = "dissociate-eip" // DissociateEIP
	// ActionChangeEIPBandwidth takes a ChangeEIPBandwidth; {group} may
	// also name the EIP (id or address) of a group.
	ActionChangeEIPBandwidth = "change-eip-bandwidth"
	ActionUpdate             = "update"       // GroupUpdate
	ActionSetPriority        = "set-priority" // PriorityUpdate
)

// NetworkCreate registers an IP subnet.
type NetworkCreate struct {
	ID   string       `json:"id"`
	Name string       `json:"name,omitempty"`
	CIDR netip.Prefix `json:"cidr"`
	// Gateway defaults to the first address of the subnet.
	Gateway netip.Addr `json:"gateway,omitzero"`
	// RangeStart/RangeEnd default to the subnet without network, gateway
	// and broadcast addresses.
	RangeStart netip.Addr `json:"range_start,omitzero"`
	RangeEnd   netip.Addr `json:"range_end,omitzero"`
	// VPCID empty means a classic network.
	VPCID string `json:"vpc_id,omitempty"`
	// Kind is "guest" (default: guests and VIPs) or "eip" (a pool of EIPs).
	Kind     string       `json:"kind,omitempty"`
	Reserved []netip.Addr `json:"reserved,omitempty"`
	// CIDR6 is an optional IPv6 prefix of a guest network (/48 to /120),
	// where dual-stack groups take their IPv6 VIPs from. Range6Start and
	// Range6End default to the prefix from ::2 (::0 is the subnet-router
	// anycast address, ::1 usually the router) to its last address.
	CIDR6       netip.Prefix `json:"cidr6,omitzero"`
	Range6Start netip.Addr   `json:"range6_start,omitzero"`
	Range6End   netip.Addr   `json:"range6_end,omitzero"`
}

// NetworkInfo is a registered network.
type NetworkInfo struct {
	ID         string       `json:"id"`
	Name       string       `json:"name,omitempty"`
	CIDR       netip.Prefix `json:"cidr"`
	Gateway    netip.Addr   `json:"gateway,omitzero"`
	RangeStart netip.Addr   `json:"range_start"`
	RangeEnd   netip.Addr   `json:"range_end"`
	VPCID      string       `json:"vpc_id,omitempty"`
	Kind       string       `json:"kind"`
	Reserved   []netip.Addr `json:"reserved,omitempty"`
	// CIDR6 and its range, when the network has an IPv6 prefix.
	CIDR6       netip.Prefix `json:"cidr6,omitzero"`
	Range6Start netip.Addr   `json:"range6_start,omitzero"`
	Range6End   netip.Addr   `json:"range6_end,omitzero"`
	// Used is the number of addresses leased (guests, VIPs, EIPs).
	Used int `json:"used"`
}

// GuestRegister registers a VM.
type GuestRegister struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	NICs      int        `json:"nics"`
	NetworkID string     `json:"network_id"`
	Address   netip.Addr `json:"address"`
	MAC       string     `json:"mac"`
	Host      string     `json:"host,omitempty"`
}

// GuestInfo is a registered VM.
type GuestInfo struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	NICs      int        `json:"nics"`
	NetworkID string     `json:"network_id"`
	Address   netip.Addr `json:"address"`
	MAC       string     `json:"mac"`
	Host      string     `json:"host,omitempty"`
	Group     string     `json:"group,omitempty"`
}

// EIPCreate allocates a public address from an EIP network.
type EIPCreate struct {
	ID string `json:"id,omitempty"` // default derived from the address
	// IPAddr is honoured when free; empty allocates one.
	IPAddr netip.Addr `json:"ip_addr,omitzero"`
	// NetworkID is the EIP network; empty picks the first with room.
	NetworkID      string `json:"network_id,omitempty"`
	Bandwidth      int    `json:"bandwidth,omitempty"`
	BGPType        string `json:"bgp_type,omitempty"`
	ChargeType     string `json:"charge_type,omitempty"`
	AutoDeallocate bool   `json:"auto_deallocate,omitempty"`
}

// EIPInfo is a public address.
type EIPInfo struct {
	ID             string     `json:"id"`
	Address        netip.Addr `json:"address"`
	NetworkID      string     `json:"network_id"`
	Bandwidth      int        `json:"bandwidth,omitempty"`
	BGPType        string     `json:"bgp_type,omitempty"`
	ChargeType     string     `json:"charge_type,omitempty"`
	AutoDeallocate bool       `json:"auto_deallocate,omitempty"`
	Group          string     `json:"group,omitempty"`
}

// GroupCreate creates an instance group with its VRRP settings.
type GroupCreate struct {
	// ID defaults to "ig-" + Name.
	ID   string `json:"id,omitempty"`
	Name string `json:"name"`
	// VRRPVersion is 2 (default) or 3.
	VRRPVersion int `json:"vrrp_version,omitempty"`
	// AdvertInt defaults to 1 s.
	AdvertInt vrrp.Seconds `json:"advert_int,omitempty"`
	// AuthPass (VRRPv2) is generated (8 characters) when empty.
	AuthPass     string       `json:"auth_pass,omitempty"`
	Unicast      bool         `json:"unicast,omitempty"`
	NoPreempt    bool         `json:"nopreempt,omitempty"`
	PreemptDelay vrrp.Seconds `json:"preempt_delay,omitempty"`
	Checks       []vrrp.Check `json:"checks,omitempty"`
}

// GroupUpdate changes a live group's VRRP settings: only the fields set
// (non-nil) change, all in one new revision the members apply live. The
// result must pass the same rules as at create (vrrp's), else nothing
// changes.
type GroupUpdate struct {
	// VRRPVersion is 2 or 3. Switching to 3 drops the password; switching
	// to 2 takes AuthPass or generates one.
	VRRPVersion *int `json:"vrrp_version,omitempty"`
	// AdvertInt 0 means the default, 1 s.
	AdvertInt *vrrp.Seconds `json:"advert_int,omitempty"`
	// NoPreempt true: a higher-priority member does not take the VIP back
	// (a preempt_delay must then be 0).
	NoPreempt    *bool         `json:"nopreempt,omitempty"`
	PreemptDelay *vrrp.Seconds `json:"preempt_delay,omitempty"`
	// AuthPass is a new VRRPv2 password (1–8 characters).
	AuthPass *string `json:"auth_pass,omitempty"`
	// Checks replaces the group's checks; an empty list removes them.
	Checks *[]vrrp.Check `json:"checks,omitempty"`
	// Revision, when not 0, is the revision the update was computed from:
	// the update is refused (409) when the group has changed since.
	Revision uint64 `json:"revision,omitempty"`
}

// PriorityUpdate sets one member's VRRP priority. Members may share a
// priority (VRRP prefers the higher address).
type PriorityUpdate struct {
	// Member is the guest's id or name.
	Member string `json:"member"`
	// Priority is 1–254.
	Priority int `json:"priority"`
}

// GroupMembers names guests (id or name) to join or leave a group.
type GroupMembers struct {
	Guests []string `json:"guests"`
}

// Allocation directions of AttachNetwork.AllocDir.
const (
	AllocStepUp   = "stepup"
	AllocStepDown = "stepdown"
	AllocRandom   = "random"
)

// AttachNetwork binds a VIP to a group (climc instancegroup-attachnetwork).
// A group has at most one VIP per address family: an IPv4 one, and with
// IP6Addr or RequireIPv6 an IPv6 one from the network's IPv6 prefix
// beside it (one call for both, or a later one adding the IPv6 VIP to a
// group that has the IPv4 one). EIPs map to the IPv4 VIP.
type AttachNetwork struct {
	// IPAddr is honoured when free and in range.
	IPAddr netip.Addr `json:"ip_addr,omitzero"`
	// IP6Addr is the IPv6 VIP wanted, honoured when free and in the
	// network's IPv6 range (with RequireDesignatedIP: or refused).
	IP6Addr netip.Addr `json:"ip6_addr,omitzero"`
	// RequireIPv6 allocates an IPv6 VIP as well (from the network's IPv6
	// range, in AllocDir's direction) when IP6Addr is not given.
	RequireIPv6 bool `json:"require_ipv6,omitempty"`
	// AllocDir is stepup (default), stepdown or random.
	AllocDir string `json:"alloc_dir,omitempty"`
	// Reserved takes the address from the network's reserved pool.
	Reserved bool `json:"reserved,omitempty"`
	// RequireDesignatedIP fails instead of picking another address when
	// IPAddr cannot be had.
	RequireDesignatedIP bool `json:"require_designated_ip,omitempty"`
	// NetworkID chooses the network of a group without members; for a
	// group with members it must be the members' network.
	NetworkID string `json:"network_id,omitempty"`
}

// DetachNetwork unbinds the VIP (both families); IPAddr, when set, must
// be the IPv4 or the IPv6 VIP.
type DetachNetwork struct {
	IPAddr netip.Addr `json:"ip_addr,omitzero"`
}

// CreateGroupEIP allocates an EIP and binds it to the group.
type CreateGroupEIP struct {
	Bandwidth      int        `json:"bandwidth,omitempty"`
	BGPType        string     `json:"bgp_type,omitempty"`
	AutoDeallocate bool       `json:"auto_deallocate,omitempty"`
	IPAddr         netip.Addr `json:"ip_addr,omitzero"`
	ChargeType     string     `json:"charge_type,omitempty"`
	NetworkID      string     `json:"network_id,omitempty"`
}

// AssociateEIP binds an existing EIP, named by id or address.
type AssociateEIP struct {
	IPAddr netip.Addr `json:"ip_addr,omitzero"`
	EIPID  string     `json:"eip_id,omitempty"`
}

// DissociateEIP unbinds the group's EIP (deleting it when it was created
// with auto-deallocate).
type DissociateEIP struct{}

// ChangeEIPBandwidth sets the bandwidth of the group's EIP (climc
// eip-change-bandwidth): one new revision, and the data plane limits the
// EIP to it in each direction.
type ChangeEIPBandwidth struct {
	// Bandwidth in Mbit/s, 0–1000000; 0 is unlimited. Required.
	Bandwidth *int `json:"bandwidth"`
}

// GroupView is what instancegroup-show prints.
type GroupView struct {
	ID       string        `json:"id"`
	Name     string        `json:"name"`
	Revision uint64        `json:"revision"`
	Members  []MemberView  `json:"members"`
	VIP      *VIPView      `json:"vip,omitempty"`
	EIP      *EIPView      `json:"eip,omitempty"`
	Owner    *OwnerView    `json:"owner,omitempty"`
	Settings GroupSettings `json:"settings"`
	// Warnings are settings that are valid but probably not meant, such
	// as a lower_priority check whose weight cannot move the VIP
	// (vrrp.WeightWarnings).
	Warnings []string `json:"warnings,omitempty"`
}

// MemberView is one member of a group.
type MemberView struct {
	GuestID   string     `json:"guest_id"`
	Name      string     `json:"name"`
	Address   netip.Addr `json:"address"`
	MAC       string     `json:"mac"`
	NetworkID string     `json:"network_id"`
	NICs      int        `json:"nics"`
	Host      string     `json:"host,omitempty"`
	Priority  int        `json:"priority"`
	// Role is the last role the member reported, if any.
	Role   vrrp.Role `json:"role,omitempty"`
	RoleAt time.Time `json:"role_at,omitzero"`
}

// VIPView is a group's VIP.
type VIPView struct {
	Address netip.Prefix `json:"address"`
	// Address6 is the IPv6 VIP of a dual-stack group, with the network's
	// IPv6 prefix length.
	Address6  netip.Prefix `json:"address6,omitzero"`
	NetworkID string       `json:"network_id"`
	VRID      int          `json:"virtual_router_id"`
	Reserved  bool         `json:"reserved,omitempty"`
}

// EIPView is a group's EIP.
type EIPView struct {
	ID      string     `json:"id"`
	Address netip.Addr `json:"address"`
	// Bandwidth in Mbit/s the data plane limits the EIP to in each
	// direction; 0 is unlimited.
	Bandwidth int `json:"bandwidth"`
}

// OwnerView is the member holding the VIP.
type OwnerView struct {
	GuestID  string    `json:"guest_id"`
	Name     string    `json:"name"`
	Revision uint64    `json:"revision"`
	Since    time.Time `json:"since"`
	Source   string    `json:"source,omitempty"`
}

// GroupSettings are the VRRP settings served in the group's metadata
// (the password is not shown).
type GroupSettings struct {
	VRRPVersion  int          `json:"vrrp_version"`
	AdvertInt    vrrp.Seconds `json:"advert_int"`
	Unicast      bool         `json:"unicast,omitempty"`
	Preempt      bool         `json:"preempt"`
	PreemptDelay vrrp.Seconds `json:"preempt_delay,omitempty"`
	Auth         bool         `json:"auth"`
	Checks       []vrrp.Check `json:"checks,omitempty"`
}

// SplitBrain is one event of two members claiming MASTER at once.
type SplitBrain struct {
	Group   string    `json:"group"`
	Members []string  `json:"members"`
	Winner  string    `json:"winner"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// HostsyncStatus is what `vipctl hostsync-status` prints.
type HostsyncStatus struct {
	Networks int `json:"networks"`
	Guests   int `json:"guests"`
	Groups   int `json:"groups"`
	VIPs     int `json:"vips"`
	EIPs     int `json:"eips"`
	// Owned is the number of groups whose VIP has a known owner.
	Owned          int         `json:"owned"`
	LastMove       time.Time   `json:"last_move,omitzero"`
	Moves          uint64      `json:"moves"`
	Claims         uint64      `json:"claims"`
	Rejected       uint64      `json:"rejected"`
	SplitBrains    uint64      `json:"split_brains"`
	LastSplitBrain *SplitBrain `json:"last_split_brain,omitempty"`
	LastApply      time.Time   `json:"last_apply,omitzero"`
	LastApplyError string      `json:"last_apply_error,omitempty"`
	// DataPlaneHeld says why hostsync keeps the data plane as it is
	// instead of applying an empty set from a registry with no group.
	DataPlaneHeld string `json:"dataplane_held,omitempty"`
	Sentence      string `json:"sentence"`
	// RecentMoves are the last owner changes this hostsync made, oldest
	// first (kept in memory, at most 64).
	RecentMoves []Move `json:"recent_moves,omitempty"`
}

// Move is one owner change with the time of each step, for timelines.
type Move struct {
	Group  string `json:"group"`
	From   string `json:"from,omitempty"`
	To     string `json:"to"`
	Source string `json:"source"` // "claim" (an agent's report) or "garp" (passive)
	// Received is when the claim or observation reached hostsync,
	// Recorded when the owner compare-and-swap committed, Announced when
	// the first GARP round was written, Applied when the data plane
	// returned.
	Received   time.Time `json:"received"`
	Recorded   time.Time `json:"recorded"`
	Announced  time.Time `json:"announced,omitzero"`
	Applied    time.Time `json:"applied,omitzero"`
	ApplyError string    `json:"apply_error,omitempty"`
}
