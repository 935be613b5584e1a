package vrrp

import (
	"fmt"
	"strconv"
	"time"
)

// Role is a member's VRRP state as keepalived reports it.
type Role string

// The roles. Unknown is the agent's role before it learnt anything.
const (
	RoleUnknown Role = "UNKNOWN"
	RoleMaster  Role = "MASTER"
	RoleBackup  Role = "BACKUP"
	RoleFault   Role = "FAULT"
	RoleStop    Role = "STOP"
)

// ParseRole accepts the four keepalived states.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleMaster, RoleBackup, RoleFault, RoleStop:
		return r, nil
	}
	return "", fmt.Errorf("vrrp: state %q is not one of MASTER, BACKUP, FAULT, STOP", s)
}

// Notify is one call of keepalived's notify hook:
// TYPE NAME STATE PRIORITY, e.g. "INSTANCE VI_nginx MASTER 100".
type Notify struct {
	Type     string // INSTANCE or GROUP
	Name     string // vrrp_instance name
	State    Role
	Priority int
}

// ParseNotify validates the notify hook's arguments. Every error names the
// argument position and what is allowed.
func ParseNotify(args []string) (Notify, error) {
	if len(args) != 4 {
		return Notify{}, fmt.Errorf("vrrp: notify wants 4 arguments TYPE NAME STATE PRIORITY, got %d", len(args))
	}
	var n Notify
	switch args[0] {
	case "INSTANCE", "GROUP":
		n.Type = args[0]
	default:
		return Notify{}, fmt.Errorf("vrrp: notify argument 1 (TYPE) %q is not INSTANCE or GROUP", args[0])
	}
	if !reInstance.MatchString(args[1]) {
		return Notify{}, fmt.Errorf("vrrp: notify argument 2 (NAME) %q is not an instance name (1–40 of A-Z a-z 0-9 . _ -)", args[1])
	}
	n.Name = args[1]
	r, err := ParseRole(args[2])
	if err != nil {
		return Notify{}, fmt.Errorf("vrrp: notify argument 3 (STATE): %w", err)
	}
	n.State = r
	p, err := strconv.Atoi(args[3])
	if err != nil || p < 0 || p > 255 {
		return Notify{}, fmt.Errorf("vrrp: notify argument 4 (PRIORITY) %q is not an integer 0–255", args[3])
	}
	n.Priority = p
	return n, nil
}

// Transition is one change of a member's role, as recorded by the agent and
// reported to hostsync.
type Transition struct {
	// Seq is the agent's sequence number, strictly increasing per member;
	// hostsync uses (member, seq) to make reports idempotent.
	Seq      uint64    `json:"seq"`
	Group    string    `json:"group"`
	Instance string    `json:"instance,omitempty"`
	Member   string    `json:"member"`
	From     Role      `json:"from"`
	To       Role      `json:"to"`
	Priority int       `json:"priority,omitempty"`
	At       time.Time `json:"at"`
	// Source says who saw it: "notify" (keepalived's hook), "netlink" (the
	// VIP appeared or vanished on the NIC), "reconcile" (the agent's check).
	Source string `json:"source"`
	// Recorded is when the agent stored it durably (At is when it
	// happened, e.g. when keepalived ran the notify hook).
	Recorded time.Time `json:"recorded,omitzero"`
	// VIPPresent is whether the VIP was on the interface when recorded.
	VIPPresent bool `json:"vip_present"`
	// VIP6Present is whether the IPv6 VIP of a dual-stack group was on
	// the interface when recorded; nil for a group without one.
	VIP6Present *bool  `json:"vip6_present,omitempty"`
	Note        string `json:"note,omitempty"`
}
