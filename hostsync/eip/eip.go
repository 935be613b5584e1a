// Package eip is the data plane of the EIP mapping: it makes the public
// address (EIP) of an instance group reach the group's VIP, and the VIP
// reach the host of its current owner. Backends apply the whole desired
// state at once and are idempotent.
//
// The Maps backend also enforces each EIP's bandwidth (Mapping.Bandwidth)
// in both directions with nftables: verdict maps keyed by the EIP, looked
// up before the DNAT and after the SNAT, lead each limited EIP to the
// chain of its rate, whose dynamic set holds a token bucket per EIP. That
// shape, rather than a named limit object per EIP behind an object map
// or a tc policer, is what google/nftables v0.3.0 can express with few
// rules and element-level writes; maps_limit.go says why in full.
package eip

import (
	"context"
	"net/netip"
)

// Mapping is the desired data-plane state of one group.
type Mapping struct {
	Group string     `json:"group"`
	EIP   netip.Addr `json:"eip"`
	VIP   netip.Addr `json:"vip"`
	// Owner is the member currently holding the VIP ("" when unknown).
	Owner string `json:"owner,omitempty"`
	// OwnerMAC is the owner's MAC address, lower-case colon form.
	OwnerMAC string `json:"owner_mac,omitempty"`
	// OwnerHost is the id of the hypervisor host of the owner.
	OwnerHost string `json:"owner_host,omitempty"`
	// NextHop is the address through which the VIP is reached (the owner's
	// host); invalid means the VIP is on a directly connected segment.
	NextHop netip.Addr `json:"next_hop,omitzero"`
	// Bandwidth is the EIP's limit in Mbit/s in each direction; 0 means
	// unlimited. The Maps backend enforces it (maps_limit.go); the command
	// backend passes it to the hook.
	Bandwidth int `json:"bandwidth,omitempty"`
}

// Backend programs mappings. Apply receives the complete desired set (every
// group with an EIP) and replaces whatever it programmed before, atomically
// where the backend allows; applying the same set twice changes nothing.
type Backend interface {
	Apply(ctx context.Context, mappings []Mapping) error
}
