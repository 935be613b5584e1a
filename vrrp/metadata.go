// Package vrrp owns vipkeeper's domain: the versioned VIP metadata document
// of an instance group, its validation, and the VRRP roles and transitions
// that keepalived reports.
//
// The document is what hostsync serves to guests at GET /v1/metadata and what
// cloud-init may write to a file. It is JSON with "version": 1; unknown fields
// are rejected so that a typo never silently changes a failover setup.
package vrrp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// CurrentVersion is the metadata document version this build understands.
const CurrentVersion = 1

// MaxDocumentSize bounds a metadata document read from outside.
const MaxDocumentSize = 1 << 20

// Metadata is the VIP metadata of one instance group.
type Metadata struct {
	Version  int    `json:"version"`
	Group    Group  `json:"group"`
	Revision uint64 `json:"revision,omitempty"`
	// VIP is the virtual address with its prefix, e.g. "192.0.2.10/24".
	VIP netip.Prefix `json:"vip"`
	// VIP6 is the IPv6 VIP of a dual-stack group with its prefix, e.g.
	// "2001:db8::10/64", beside an IPv4 VIP. keepalived runs one address
	// family per VRRP instance, so VIP6 rides on VIP's instance as an
	// excluded address (not in the adverts): one state machine adds and
	// removes both, and they always move together.
	VIP6      netip.Prefix `json:"vip6,omitzero"`
	NetworkID string       `json:"network_id,omitempty"`
	// VirtualRouterID is 1–255; zero means derived from Group.ID (see DeriveVRID).
	VirtualRouterID int `json:"virtual_router_id,omitempty"`
	// VRRPVersion is 2 or 3; zero means 2.
	VRRPVersion int `json:"vrrp_version,omitempty"`
	// AdvertInt is the advertisement interval in seconds; zero means 1 s.
	AdvertInt Seconds `json:"advert_int,omitempty"`
	// Preempt defaults to true; false renders nopreempt.
	Preempt      *bool    `json:"preempt,omitempty"`
	PreemptDelay Seconds  `json:"preempt_delay,omitempty"`
	Auth         *Auth    `json:"auth,omitempty"`
	Unicast      bool     `json:"unicast,omitempty"`
	Garp         *Garp    `json:"garp,omitempty"`
	Members      []Member `json:"members"`
	Checks       []Check  `json:"checks,omitempty"`
	// EIP is the public address mapped to the VIP, informational for guests.
	EIP netip.Addr `json:"eip,omitzero"`
}

// Group names the instance group.
type Group struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Auth is VRRPv2 simple password authentication.
type Auth struct {
	Type string `json:"type"` // only "PASS"
	Pass string `json:"pass"`
}

// Garp tunes the gratuitous ARP keepalived sends on becoming MASTER.
type Garp struct {
	MasterDelay   int `json:"master_delay,omitempty"`   // seconds, 0–255
	MasterRepeat  int `json:"master_repeat,omitempty"`  // 1–255
	MasterRefresh int `json:"master_refresh,omitempty"` // seconds, 0 = off
}

// Member is one VM of the group.
type Member struct {
	Name     string     `json:"name"`
	GuestID  string     `json:"guest_id,omitempty"`
	Address  netip.Addr `json:"address"`
	MAC      string     `json:"mac,omitempty"`
	Priority int        `json:"priority"`
}

// CheckKind says how a health check probes the service.
type CheckKind string

// The health check kinds.
const (
	CheckProcess CheckKind = "process" // a process with this name runs
	CheckHTTP    CheckKind = "http"    // an HTTP GET answers with the expected status
	CheckTCP     CheckKind = "tcp"     // a TCP connect succeeds
	CheckExec    CheckKind = "exec"    // a command exits 0
)

// The policies of a failing check (Check.OnFailure).
const (
	// OnFailureResign: the agent runs the check and writes its verdict to a
	// keepalived track_file tracked with weight 0. A failing check puts the
	// member in FAULT at once; a master leaving for FAULT sends an advert
	// with priority 0 and the best backup takes over after its skew time
	// only, (256 − priority)/256 × advert_int (about 0.6 s at advert 1 s,
	// 0.06 s at VRRPv3 0.1 s). A slow backstop vrrp_script inside
	// keepalived runs the same check when the agent does not answer.
	OnFailureResign = "resign"
	// OnFailureLowerPriority: the check is a keepalived vrrp_script with a
	// weight, as keepalived setups are usually written: a failing check
	// changes the member's priority by the weight and nothing else. A
	// master whose priority drops sends no advert for it, and a backup
	// discards adverts of a lower priority than its own (RFC 5798), so the
	// backup takes over only when its master-down timer runs out,
	// 3 × advert_int + skew (about 3.5 s at advert 1 s).
	OnFailureLowerPriority = "lower_priority"
)

// Check is one health check.
//
// How a failing check moves the VIP is its OnFailure policy (see
// OnFailureResign and OnFailureLowerPriority). The two differ in groups
// of three or more too: with resign every member whose check fails is in
// FAULT, so when the check fails on every member no member holds the VIP;
// with lower_priority the member with the highest remaining priority keeps
// it, failing or not.
type Check struct {
	Name string    `json:"name"`
	Kind CheckKind `json:"kind"`
	// OnFailure is OnFailureResign or OnFailureLowerPriority; empty means
	// lower_priority when Weight is set (documents written before the
	// field existed keep their meaning) and resign otherwise.
	OnFailure string `json:"on_failure,omitempty"`
	// Interval between runs; zero means 1 s for a resign check, 2 s for a
	// lower_priority one. resign allows 0.05–3600 s in steps of 0.01 s,
	// lower_priority (a keepalived vrrp_script) whole seconds 1–3600.
	Interval Seconds `json:"interval,omitempty"`
	// Timeout of one run, same rules as Interval; zero means the interval.
	Timeout Seconds `json:"timeout,omitempty"`
	// Weight is keepalived's vrrp_script weight, -253–253: only, and
	// required, with on_failure lower_priority.
	Weight int `json:"weight,omitempty"`
	Fall   int `json:"fall,omitempty"`
	Rise   int `json:"rise,omitempty"`
	// Process is the process name (kind process), as in `ps -C`.
	Process string `json:"process,omitempty"`
	// URL is probed with GET (kind http).
	URL          string `json:"url,omitempty"`
	ExpectStatus int    `json:"expect_status,omitempty"` // zero means 200
	// Address is host:port (kind tcp).
	Address string `json:"address,omitempty"`
	// Command is an absolute path and its arguments (kind exec).
	Command []string `json:"command,omitempty"`
	// RestartUnit is a systemd unit restarted once before the check is judged
	// failed, as the seed's check_httpd.sh does with nginx.
	RestartUnit string `json:"restart_unit,omitempty"`
}

// Errors returned by Decode.
var (
	// ErrUnsupportedVersion is returned (wrapped) when the document's version
	// is not CurrentVersion.
	ErrUnsupportedVersion = errors.New("vrrp: unsupported metadata version")
	// ErrSyntax is returned (wrapped) when the document is not valid JSON or
	// has unknown fields or values of the wrong type.
	ErrSyntax = errors.New("vrrp: malformed metadata")
)

// Decode reads one metadata document strictly: size-limited, unknown fields
// rejected, version checked before anything else, then validated.
func Decode(r io.Reader) (*Metadata, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("vrrp: read metadata: %w", err)
	}
	if len(data) > MaxDocumentSize {
		return nil, fmt.Errorf("%w: document larger than %d bytes", ErrSyntax, MaxDocumentSize)
	}
	return Parse(data)
}

// Parse is Decode on a byte slice.
func Parse(data []byte) (*Metadata, error) {
	var probe struct {
		Version *json.RawMessage `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrSyntax, jsonErr(err))
	}
	if probe.Version == nil {
		return nil, &FieldError{Path: "version", Msg: fmt.Sprintf("is required (this build reads version %d)", CurrentVersion)}
	}
	var v int
	if err := json.Unmarshal(*probe.Version, &v); err != nil {
		return nil, &FieldError{Path: "version", Msg: "must be an integer"}
	}
	if v != CurrentVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads version %d", ErrUnsupportedVersion, v, CurrentVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Metadata
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrSyntax, jsonErr(err))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the document", ErrSyntax)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// jsonErr turns encoding/json errors into a message naming the field.
func jsonErr(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "(document)"
		}
		return fmt.Sprintf("field %s: expected %s, got JSON %s", field, te.Type, te.Value)
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	return msg
}

// Marshal encodes the document with stable field order and indentation.
func (m *Metadata) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("vrrp: marshal metadata: %w", err)
	}
	return append(b, '\n'), nil
}

// Member returns the member with the given name.
func (m *Metadata) Member(name string) (Member, bool) {
	for _, mem := range m.Members {
		if mem.Name == name {
			return mem, true
		}
	}
	return Member{}, false
}

// MemberByAddress returns the member whose address is addr.
func (m *Metadata) MemberByAddress(addr netip.Addr) (Member, bool) {
	for _, mem := range m.Members {
		if mem.Address == addr.Unmap() {
			return mem, true
		}
	}
	return Member{}, false
}

// EffectiveVRID is VirtualRouterID, or the one derived from the group id.
func (m *Metadata) EffectiveVRID() int {
	if m.VirtualRouterID != 0 {
		return m.VirtualRouterID
	}
	return DeriveVRID(m.Group.ID)
}

// EffectiveVRRPVersion is VRRPVersion, or 2.
func (m *Metadata) EffectiveVRRPVersion() int {
	if m.VRRPVersion == 0 {
		return 2
	}
	return m.VRRPVersion
}

// EffectiveAdvertInt is AdvertInt, or one second.
func (m *Metadata) EffectiveAdvertInt() Seconds {
	if m.AdvertInt == 0 {
		return Seconds(1000)
	}
	return m.AdvertInt
}

// PreemptEnabled reports whether a higher-priority member takes the VIP back.
func (m *Metadata) PreemptEnabled() bool { return m.Preempt == nil || *m.Preempt }

// InstanceName is the keepalived vrrp_instance name for the group.
func (m *Metadata) InstanceName() string { return "VI_" + m.Group.Name }

// EffectiveOnFailure is OnFailure, or the policy an unset OnFailure
// means: lower_priority with a weight, else resign.
func (c Check) EffectiveOnFailure() string {
	switch {
	case c.OnFailure != "":
		return c.OnFailure
	case c.Weight != 0:
		return OnFailureLowerPriority
	default:
		return OnFailureResign
	}
}

// Default check intervals.
const (
	DefaultResignInterval        = Seconds(1000)
	DefaultLowerPriorityInterval = Seconds(2000)
)

// EffectiveInterval is Interval, or the default of the check's policy:
// 1 s for resign, 2 s for lower_priority.
func (c Check) EffectiveInterval() Seconds {
	switch {
	case c.Interval != 0:
		return c.Interval
	case c.EffectiveOnFailure() == OnFailureResign:
		return DefaultResignInterval
	default:
		return DefaultLowerPriorityInterval
	}
}

// EffectiveTimeout is Timeout, or the interval.
func (c Check) EffectiveTimeout() Seconds {
	if c.Timeout == 0 {
		return c.EffectiveInterval()
	}
	return c.Timeout
}

// EffectiveExpectStatus is ExpectStatus, or 200.
func (c Check) EffectiveExpectStatus() int {
	if c.ExpectStatus == 0 {
		return 200
	}
	return c.ExpectStatus
}

// DeriveVRID derives a stable virtual_router_id in 1–255 from a group id
// (FNV-1a, so every member and every host computes the same value).
func DeriveVRID(groupID string) int {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(groupID); i++ {
		h ^= uint32(groupID[i])
		h *= prime
	}
	return int(h%255) + 1
}
