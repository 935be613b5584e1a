// Package api holds the wire types shared by vipkeeper's binaries: the guest
// API that hostsync serves to agents (metadata, claims), the agent's local
// control socket (notify, status, history), and hostsync's admin socket
// that vipctl talks to. It has no behaviour beyond encoding.
package api

import (
	"time"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Guest API, served by hostsync over HTTP on an address the guests reach.
// The caller is identified by its source address, never by the body.
const (
	// PathMetadata answers GET with the caller's group metadata
	// (vrrp.Metadata), an ETag of the revision, and 304 on If-None-Match.
	// 403 when the caller is no member of a group with a VIP. With
	// ?wait=DURATION (QueryWait) and If-None-Match naming the current
	// document, the answer waits until the document changes (200) or the
	// wait passes (304).
	PathMetadata = "/v1/metadata"
	// QueryWait is PathMetadata's parameter asking to wait for a change:
	// a Go duration ("30s") or whole seconds ("30"), at most the host's
	// HeaderWait; 400 naming "wait" when it is not one.
	QueryWait = "wait"
	// HeaderWait is set on PathMetadata's answers by a host that honours
	// QueryWait: the longest wait it grants, in whole seconds. A host
	// without it answers at once whatever the wait asked (poll instead).
	HeaderWait = "Vipkeeper-Wait"
	// PathClaims takes POST of a Claim and answers a ClaimResult.
	PathClaims = "/v1/claims"
)

// MaxBodySize bounds every request body on every API.
const MaxBodySize = 64 << 10

// Claim reports one transition of the calling member. Seq makes it
// idempotent: hostsync ignores a (member, epoch, seq) it has already seen.
type Claim struct {
	Transition vrrp.Transition `json:"transition"`
	// Epoch identifies the agent database the sequence numbers come from
	// (up to 64 letters, digits, '-' or '_'; the agent sends 16 hex
	// digits drawn when its agent.db was created). A claim with another
	// epoch than the member's last one starts a new stream: its seq is
	// not compared with the old stream's, so a re-created agent.db is not
	// taken for duplicates. Optional: a claim without it (an agent before
	// epochs) is compared with the last seq whatever that stream's epoch.
	Epoch string `json:"epoch,omitempty"`
}

// MaxEpochLen bounds Claim.Epoch.
const MaxEpochLen = 64

// ClaimResult is hostsync's answer to a Claim.
type ClaimResult struct {
	Accepted  bool   `json:"accepted"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Owner     string `json:"owner,omitempty"`
	Revision  uint64 `json:"revision,omitempty"`
	Message   string `json:"message,omitempty"`
	// Queued: the registry was unreachable; hostsync stored the claim
	// durably and replays it, in arrival order, when the registry is
	// back (the guest API answers 202 Accepted).
	Queued bool `json:"queued,omitempty"`
}

// Error is the body of every non-2xx answer on every API.
type Error struct {
	Error string `json:"error"`
	// Field names the offending field for validation errors, if any.
	Field string `json:"field,omitempty"`
}

// Agent control socket (HTTP over a unix socket, /run/vipkeeper/agent.sock).
const (
	// PathAgentNotify takes POST of a NotifyRequest (keepalived's hook arguments).
	PathAgentNotify = "/v1/notify"
	// PathAgentStatus answers GET with AgentStatus.
	PathAgentStatus = "/v1/status"
	// PathAgentHistory answers GET (?limit=N) with []vrrp.Transition, oldest first.
	PathAgentHistory = "/v1/history"
	// PathAgentRefresh takes POST and fetches and applies metadata now.
	PathAgentRefresh = "/v1/refresh"
)

// NotifyRequest carries keepalived's notify arguments
// (TYPE NAME STATE PRIORITY) and when the hook ran.
type NotifyRequest struct {
	Args []string  `json:"args"`
	At   time.Time `json:"at"`
}

// NotifyResult is the agent's answer to a NotifyRequest, sent once the
// outcome is durable.
type NotifyResult struct {
	// Outcome is "recorded", "same role" (nothing changed), "stale" (older
	// than the last recorded transition), "ignored" (a GROUP event) or
	// "other instance" (not the vrrp_instance the agent rendered).
	Outcome string `json:"outcome"`
	// Transition is the recorded transition when Outcome is "recorded".
	Transition *vrrp.Transition `json:"transition,omitempty"`
}

// AgentStatus is what `vipctl status` shows.
type AgentStatus struct {
	Group      string    `json:"group"`
	Member     string    `json:"member"`
	Role       vrrp.Role `json:"role"`
	Since      time.Time `json:"since"`
	VIP        string    `json:"vip"`
	Interface  string    `json:"interface"`
	VIPPresent bool      `json:"vip_present"`
	// VIP6 is the IPv6 VIP of a dual-stack group and VIP6Present whether
	// it is on the interface (each family is checked on its own).
	VIP6        string    `json:"vip6,omitempty"`
	VIP6Present bool      `json:"vip6_present,omitempty"`
	Revision    uint64    `json:"revision"`
	ConfigHash  string    `json:"config_hash"`
	LastApply   time.Time `json:"last_apply,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Unreported  int       `json:"unreported"`
	Sentence    string    `json:"sentence"`
	// ReportError is the last failure to deliver a transition to hostsync
	// ("" once a delivery succeeds), ReportErrAt when it happened.
	ReportError string    `json:"report_error,omitempty"`
	ReportErrAt time.Time `json:"report_error_at,omitzero"`
	// ReportURL is where transitions are reported ("" when reporting is off).
	ReportURL string `json:"report_url,omitempty"`
	// Source is where the metadata comes from (a URL or file:PATH).
	Source string `json:"source,omitempty"`
	// Keepalived is whether keepalived was running at the last check.
	Keepalived bool `json:"keepalived_running"`
	// Ready is whether a metadata apply has succeeded since the agent started.
	Ready bool `json:"ready"`
	// Epoch identifies the agent's database (Claim.Epoch).
	Epoch string `json:"epoch,omitempty"`
	// Reports are hostsync's answers to the last reported transitions,
	// oldest first: what was not accepted shows here.
	Reports []ReportOutcome `json:"reports,omitempty"`
	// Checks are the health checks the agent runs itself (on_failure
	// resign), sorted by name.
	Checks []CheckStatus `json:"checks,omitempty"`
}

// States of a check the agent runs (CheckStatus.State).
const (
	// CheckUnknown: not judged yet (or not enough times for rise/fall);
	// its track file says failing until the first healthy verdict.
	CheckUnknown = "unknown"
	// CheckHealthy: the last verdict was healthy.
	CheckHealthy = "healthy"
	// CheckFailing: the last verdict was failing; keepalived sees FAULT.
	CheckFailing = "failing"
)

// CheckStatus is one health check the agent runs and what it last found.
type CheckStatus struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// OnFailure is the check's policy (vrrp.OnFailureResign, ...).
	OnFailure string `json:"on_failure"`
	// State is CheckUnknown, CheckHealthy or CheckFailing, Since when.
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// Reason is why the last judgement failed, e.g. "GET
	// http://127.0.0.1/: connection refused" ("" when it passed).
	Reason string `json:"reason,omitempty"`
	// LastRun is when the check was last judged.
	LastRun time.Time `json:"last_run,omitzero"`
}

// Results of a report (ReportOutcome.Result).
const (
	// ReportAccepted: hostsync recorded the transition.
	ReportAccepted = "accepted"
	// ReportQueued: hostsync stored it to replay when its registry is
	// back (202).
	ReportQueued = "queued"
	// ReportDuplicate: hostsync had this (epoch, seq) already and ignored it.
	ReportDuplicate = "duplicate"
	// ReportNotAccepted: recorded, but the VIP was not moved (Message says
	// why: a split brain lost, a stale claim, ...).
	ReportNotAccepted = "not accepted"
)

// ReportOutcome is hostsync's answer to one delivered transition.
type ReportOutcome struct {
	Seq   uint64    `json:"seq"`
	Epoch string    `json:"epoch,omitempty"`
	To    vrrp.Role `json:"to"`
	// At is when the transition happened, Answered when hostsync answered.
	At       time.Time `json:"at,omitzero"`
	Answered time.Time `json:"answered"`
	// Result is one of ReportAccepted, ReportQueued, ReportDuplicate,
	// ReportNotAccepted.
	Result  string `json:"result"`
	Owner   string `json:"owner,omitempty"`
	Message string `json:"message,omitempty"`
}

// OutcomeOf classifies hostsync's 2xx answer res to a claim.
func OutcomeOf(res ClaimResult) string {
	switch {
	case res.Duplicate:
		return ReportDuplicate
	case res.Queued:
		return ReportQueued
	case res.Accepted:
		return ReportAccepted
	}
	return ReportNotAccepted
}
