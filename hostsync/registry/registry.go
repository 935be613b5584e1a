// Package registry is hostsync's storage: the records of networks, guests,
// instance groups, EIPs, address leases and VIP owners, two lookup indexes
// (a guest by address, a group by VIP address), and the small Store
// interface they are kept behind. The embedded implementation is bbolt
// (OpenBolt); the shared one, for several hosts and gateways, is etcd
// (OpenEtcd, NewEtcd), with optimistic transactions and a Watcher. Every
// read-modify-write happens inside one Update and the VIP owner carries a
// revision that is changed only by compare-and-swap (SwapOwner).
//
// The package holds no rules: package hostsync checks the platform's rules
// inside Update transactions.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Errors of the store.
var (
	// ErrNotFound is returned (wrapped) by Tx.Get and the typed Get helpers
	// when no record has the key.
	ErrNotFound = errors.New("registry: not found")
	// ErrRevisionMismatch is returned (wrapped) by SwapOwner when the stored
	// owner revision is not the expected one: somebody else moved the owner
	// since the caller read it. The caller reads again and re-decides.
	ErrRevisionMismatch = errors.New("registry: owner revision changed")
	// ErrClosed is returned by a Store after Close.
	ErrClosed = errors.New("registry: store closed")
	// ErrUnavailable is returned (wrapped) by a shared Store (etcd) when
	// the store could not be reached in time (no connection, no leader,
	// the request timed out) while the caller's context was still live.
	// A commit that failed so may or may not have been applied: callers
	// retry with an idempotent operation. The embedded bbolt store never
	// returns it.
	ErrUnavailable = errors.New("registry: store unavailable")
)

// Bucket names a collection of records.
type Bucket string

// The buckets. Every record is JSON under its key.
const (
	BucketNetworks Bucket = "networks" // key: network id
	BucketGuests   Bucket = "guests"   // key: guest id
	BucketGroups   Bucket = "groups"   // key: group id
	BucketEIPs     Bucket = "eips"     // key: eip id
	BucketLeases   Bucket = "leases"   // key: network id "/" address
	BucketOwners   Bucket = "owners"   // key: group id
	BucketRoles    Bucket = "roles"    // key: group id "/" guest id
	BucketByAddr   Bucket = "guest_by_addr"
	BucketByVIP    Bucket = "group_by_vip" // key: VIP address
)

// Buckets lists every bucket; implementations create them on open.
var Buckets = []Bucket{BucketNetworks, BucketGuests, BucketGroups, BucketEIPs, BucketLeases, BucketOwners, BucketRoles, BucketByAddr, BucketByVIP}

// Store keeps the registry.
//
// Concurrency contract: View and Update may be called from any goroutine.
// Each Update runs fn in one serializable read-write transaction: either all
// of its writes are committed or none (fn returned an error, or the commit
// failed), and no other Update interleaves with it, so a check followed by a
// write inside fn cannot race. View sees a consistent snapshot. The Tx must
// not be used after fn returns. fn may be run more than once by
// implementations that retry on conflict (etcd), so it must not have side
// effects outside the Tx.
type Store interface {
	View(ctx context.Context, fn func(Tx) error) error
	Update(ctx context.Context, fn func(Tx) error) error
	Close() error
}

// Tx is one transaction. Values are JSON-encoded records.
type Tx interface {
	// Get decodes the record at key into v; ErrNotFound when absent.
	Get(b Bucket, key string, v any) error
	// Put encodes v and stores it at key (only inside Update).
	Put(b Bucket, key string, v any) error
	// Delete removes key; deleting an absent key is not an error.
	Delete(b Bucket, key string) error
	// ForEach calls fn for every key with the prefix, in key order, with
	// the raw JSON value (valid only during the call).
	ForEach(b Bucket, prefix string, fn func(key string, value []byte) error) error
}

// Record is implemented by every record type.
type Record interface {
	Bucket() Bucket
	Key() string
}

// Get reads the record of type T at key.
func Get[T Record](tx Tx, key string) (T, error) {
	var v T
	err := tx.Get(v.Bucket(), key, &v)
	return v, err
}

// Put writes a record at its key.
func Put[T Record](tx Tx, v T) error { return tx.Put(v.Bucket(), v.Key(), v) }

// List returns every record of type T whose key has the prefix, in key order.
func List[T Record](tx Tx, prefix string) ([]T, error) {
	var zero T
	var out []T
	err := tx.ForEach(zero.Bucket(), prefix, func(key string, value []byte) error {
		var v T
		if err := json.Unmarshal(value, &v); err != nil {
			return fmt.Errorf("registry: decode %s/%s: %w", zero.Bucket(), key, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// NetworkKind says what a network's addresses are for.
type NetworkKind string

// The network kinds.
const (
	// KindGuest networks hold guests and VIPs.
	KindGuest NetworkKind = "guest"
	// KindEIP networks are the pools public addresses (EIPs) come from.
	KindEIP NetworkKind = "eip"
)

// Network is an IP subnet.
type Network struct {
	ID   string       `json:"id"`
	Name string       `json:"name,omitempty"`
	CIDR netip.Prefix `json:"cidr"`
	// Gateway is never allocated.
	Gateway netip.Addr `json:"gateway,omitzero"`
	// RangeStart..RangeEnd (inclusive) is the usable range allocation
	// draws from.
	RangeStart netip.Addr `json:"range_start"`
	RangeEnd   netip.Addr `json:"range_end"`
	// VPCID is the VPC the network belongs to; empty means classic network.
	VPCID string      `json:"vpc_id,omitempty"`
	Kind  NetworkKind `json:"kind"`
	// Reserved addresses are set aside: normal allocation skips them, an
	// allocation with --reserved takes only from them.
	Reserved []netip.Addr `json:"reserved,omitempty"`
	// CIDR6 is the network's IPv6 prefix, when it has one (a dual-stack
	// network); IPv6 VIPs are drawn from Range6Start..Range6End
	// (inclusive).
	CIDR6       netip.Prefix `json:"cidr6,omitzero"`
	Range6Start netip.Addr   `json:"range6_start,omitzero"`
	Range6End   netip.Addr   `json:"range6_end,omitzero"`
	CreatedAt   time.Time    `json:"created_at"`
}

func (Network) Bucket() Bucket    { return BucketNetworks }
func (n Network) Key() string     { return n.ID }
func (n Network) IsVPC() bool     { return n.VPCID != "" }
func (n Network) IsClassic() bool { return n.VPCID == "" }

// IsReserved reports whether a is in the reserved pool.
func (n Network) IsReserved(a netip.Addr) bool {
	for _, r := range n.Reserved {
		if r == a {
			return true
		}
	}
	return false
}

// InRange reports whether a is in the usable range (of its family).
func (n Network) InRange(a netip.Addr) bool {
	if a.Is6() {
		return n.CIDR6.IsValid() && a.Compare(n.Range6Start) >= 0 && a.Compare(n.Range6End) <= 0
	}
	return a.Compare(n.RangeStart) >= 0 && a.Compare(n.RangeEnd) <= 0
}

// Contains reports whether a is in the network's IPv4 subnet or its IPv6
// prefix.
func (n Network) Contains(a netip.Addr) bool {
	return n.CIDR.Contains(a) || (n.CIDR6.IsValid() && n.CIDR6.Contains(a))
}

// Guest is a VM.
type Guest struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	NICs      int        `json:"nics"`
	NetworkID string     `json:"network_id"`
	Address   netip.Addr `json:"address"`
	// MAC is lower-case colon form, as in vrrp.Member.
	MAC       string    `json:"mac"`
	Host      string    `json:"host,omitempty"`
	Group     string    `json:"group,omitempty"` // group id when a member
	CreatedAt time.Time `json:"created_at"`
}

func (Guest) Bucket() Bucket { return BucketGuests }
func (g Guest) Key() string  { return g.ID }

// Member is a guest's membership in a group.
type Member struct {
	GuestID  string    `json:"guest_id"`
	Priority int       `json:"priority"`
	JoinedAt time.Time `json:"joined_at"`
}

// VIPBinding is a group's VIP: an IPv4 address and, in a dual-stack
// group, an IPv6 one of the same network (one per family).
type VIPBinding struct {
	Address netip.Addr `json:"address"`
	// Address6 is the IPv6 VIP, from the network's CIDR6 (zero: none).
	Address6  netip.Addr `json:"address6,omitzero"`
	NetworkID string     `json:"network_id"`
	Reserved  bool       `json:"reserved,omitempty"`
	// VRID is the virtual_router_id, unique among the groups of the network.
	VRID    int       `json:"vrid"`
	BoundAt time.Time `json:"bound_at"`
}

// EIPBinding is a group's EIP.
type EIPBinding struct {
	EIPID   string     `json:"eip_id"`
	Address netip.Addr `json:"address"`
	BoundAt time.Time  `json:"bound_at"`
}

// Settings are a group's VRRP settings served in its metadata.
type Settings struct {
	VRRPVersion  int          `json:"vrrp_version,omitempty"`
	AdvertInt    vrrp.Seconds `json:"advert_int,omitempty"`
	AuthPass     string       `json:"auth_pass,omitempty"`
	Unicast      bool         `json:"unicast,omitempty"`
	NoPreempt    bool         `json:"nopreempt,omitempty"`
	PreemptDelay vrrp.Seconds `json:"preempt_delay,omitempty"`
	Checks       []vrrp.Check `json:"checks,omitempty"`
}

// Group is an instance group (anti-affinity group).
type Group struct {
	ID       string      `json:"id"`
	Name     string      `json:"name"`
	Members  []Member    `json:"members,omitempty"`
	VIP      *VIPBinding `json:"vip,omitempty"`
	EIP      *EIPBinding `json:"eip,omitempty"`
	Settings Settings    `json:"settings"`
	// Revision is bumped on every change that affects the group's metadata.
	Revision  uint64    `json:"revision"`
	CreatedAt time.Time `json:"created_at"`
}

func (Group) Bucket() Bucket { return BucketGroups }
func (g Group) Key() string  { return g.ID }

// Member returns the membership of a guest.
func (g Group) Member(guestID string) (Member, bool) {
	for _, m := range g.Members {
		if m.GuestID == guestID {
			return m, true
		}
	}
	return Member{}, false
}

// EIP is a public address.
type EIP struct {
	ID        string     `json:"id"`
	Address   netip.Addr `json:"address"`
	NetworkID string     `json:"network_id"`
	// Bandwidth in Mbit/s, BGPType and ChargeType are the platform's
	// attributes, kept and shown.
	Bandwidth  int    `json:"bandwidth,omitempty"`
	BGPType    string `json:"bgp_type,omitempty"`
	ChargeType string `json:"charge_type,omitempty"`
	// AutoDeallocate deletes the EIP when it is dissociated.
	AutoDeallocate bool      `json:"auto_deallocate,omitempty"`
	Group          string    `json:"group,omitempty"` // bound group id
	CreatedAt      time.Time `json:"created_at"`
}

func (EIP) Bucket() Bucket { return BucketEIPs }
func (e EIP) Key() string  { return e.ID }

// LeaseKind says what holds an address.
type LeaseKind string

// The lease kinds.
const (
	LeaseGuest LeaseKind = "guest"
	LeaseVIP   LeaseKind = "vip"
	LeaseEIP   LeaseKind = "eip"
)

// Lease records that an address of a network is in use. The key
// (network, address) is unique, so two allocations inside serialized
// Update transactions can never hand out the same address.
type Lease struct {
	NetworkID string     `json:"network_id"`
	Address   netip.Addr `json:"address"`
	Kind      LeaseKind  `json:"kind"`
	Holder    string     `json:"holder"` // guest, group or eip id
}

func (Lease) Bucket() Bucket { return BucketLeases }
func (l Lease) Key() string  { return LeaseKey(l.NetworkID, l.Address) }

// LeaseKey is the key of the lease of addr in network.
func LeaseKey(network string, addr netip.Addr) string { return network + "/" + addr.String() }

// Owner is the member that currently holds a group's VIP.
type Owner struct {
	Group   string `json:"group"`
	GuestID string `json:"guest_id,omitempty"` // empty: nobody
	// Revision increases by one on every move; changed only by SwapOwner.
	Revision uint64 `json:"revision"`
	// Since is when hostsync committed the move (hostsync's clock).
	Since time.Time `json:"since,omitzero"`
	// Source is how the move was learnt: a claim's source ("notify",
	// "netlink", "reconcile") or "garp" for a passive observation.
	Source string `json:"source,omitempty"`
	// ClaimedAt is the event time of the claim that made this owner: the
	// guest's own stamp (transition.at), bounded by hostsync's clock, or
	// when hostsync received the claim when it carried none.
	ClaimedAt time.Time `json:"claimed_at,omitzero"`
	// MasterAt is the event time of the owner's latest MASTER claim:
	// ClaimedAt, or a later re-claim of the owner (RestampOwner). Claims
	// replayed from a queue are ordered against it (LatestMaster).
	MasterAt time.Time `json:"master_at,omitzero"`
}

func (Owner) Bucket() Bucket { return BucketOwners }
func (o Owner) Key() string  { return o.Group }

// LatestMaster is the event time of the owner's latest MASTER claim; for
// a record written before event times were kept, when it was committed.
func (o Owner) LatestMaster() time.Time {
	switch {
	case !o.MasterAt.IsZero():
		return o.MasterAt
	case !o.ClaimedAt.IsZero():
		return o.ClaimedAt
	}
	return o.Since
}

// RoleState is the last role a member reported, and its last sequence
// number and the epoch of the agent database it came from (claims are
// idempotent by (member, epoch, seq); a new epoch restarts the sequence).
type RoleState struct {
	Group   string    `json:"group"`
	GuestID string    `json:"guest_id"`
	Role    vrrp.Role `json:"role"`
	Seq     uint64    `json:"seq"`
	// Epoch is the api.Claim epoch of Seq ("" from an agent before epochs,
	// or a record written before them).
	Epoch string `json:"epoch,omitempty"`
	// At is when hostsync recorded the role.
	At time.Time `json:"at"`
	// MasterAt is when the member last claimed MASTER.
	MasterAt time.Time `json:"master_at,omitzero"`
}

func (RoleState) Bucket() Bucket { return BucketRoles }
func (r RoleState) Key() string  { return RoleKey(r.Group, r.GuestID) }

// RoleKey is the key of a member's role state.
func RoleKey(group, guest string) string { return group + "/" + guest }

// AddrIndex maps a guest address to the guest id.
type AddrIndex struct {
	Address netip.Addr `json:"address"`
	GuestID string     `json:"guest_id"`
}

func (AddrIndex) Bucket() Bucket { return BucketByAddr }
func (a AddrIndex) Key() string  { return a.Address.String() }

// VIPIndex maps a VIP address (IPv4 or IPv6) to its group's id. It is
// written and removed with the VIP's lease; registries written before it
// existed have leases only, which readers fall back to.
type VIPIndex struct {
	Address netip.Addr `json:"address"`
	GroupID string     `json:"group_id"`
}

func (VIPIndex) Bucket() Bucket { return BucketByVIP }
func (v VIPIndex) Key() string  { return v.Address.String() }

// SwapOwner is the owner compare-and-swap: it stores next as the owner of
// next.Group only when the stored owner's revision is expect (0 for "no
// owner record yet"), sets next.Revision to expect+1 and returns it.
// Otherwise it returns ErrRevisionMismatch (wrapped) and writes nothing.
func SwapOwner(tx Tx, expect uint64, next Owner) (Owner, error) {
	cur, err := Get[Owner](tx, next.Group)
	switch {
	case errors.Is(err, ErrNotFound):
		cur = Owner{}
	case err != nil:
		return Owner{}, err
	}
	if cur.Revision != expect {
		return Owner{}, fmt.Errorf("%w: group %s is at revision %d, expected %d", ErrRevisionMismatch, next.Group, cur.Revision, expect)
	}
	next.Revision = expect + 1
	if err := Put(tx, next); err != nil {
		return Owner{}, err
	}
	return next, nil
}

// RestampOwner records a later MASTER claim of the current owner: when
// the stored owner is at revision expect and is guest, its MasterAt
// becomes at if that is later. The revision stays (the owner did not
// move). ErrRevisionMismatch (wrapped) when the owner changed; nothing
// is written when at is not later.
func RestampOwner(tx Tx, group string, expect uint64, guest string, at time.Time) (Owner, error) {
	cur, err := Get[Owner](tx, group)
	if err != nil {
		return Owner{}, err
	}
	if cur.Revision != expect || cur.GuestID != guest {
		return Owner{}, fmt.Errorf("%w: group %s is at revision %d owned by %q, expected %d owned by %q",
			ErrRevisionMismatch, group, cur.Revision, cur.GuestID, expect, guest)
	}
	if !at.After(cur.LatestMaster()) {
		return cur, nil
	}
	cur.MasterAt = at
	if err := Put(tx, cur); err != nil {
		return Owner{}, err
	}
	return cur, nil
}
