package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vipkeeper/vipkeeper/agent/health"
	"github.com/vipkeeper/vipkeeper/internal/daemon"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Results of an apply (label "result" of vipkeeper_agent_apply_total).
// The *_error results name the step that failed; every failure keeps the
// last good files.
const (
	ApplyNotModified   = "not_modified"   // the source had nothing new
	ApplyUnchanged     = "unchanged"      // fetched and rendered; the files were already right
	ApplyApplied       = "applied"        // files installed and/or keepalived reloaded
	ApplyDeferred      = "deferred"       // a change held back until keepalived.min_reload_interval has passed
	ApplyFetchError    = "fetch_error"    // the source could not be read
	ApplyMetadataError = "metadata_error" // invalid document, or this VM is not a member
	ApplyRenderError   = "render_error"   // render refused the metadata
	ApplyValidateError = "validate_error" // keepalived --config-test refused the staged files
	ApplyInstallError  = "install_error"  // writing the files failed
	ApplyReloadError   = "reload_error"   // files installed, keepalived's reload failed
	ApplyStateError    = "state_error"    // the state database could not record the apply
)

// metricsRoles are the values of the role gauge's "role" label.
var metricsRoles = []vrrp.Role{vrrp.RoleUnknown, vrrp.RoleMaster, vrrp.RoleBackup, vrrp.RoleFault, vrrp.RoleStop}

// Metrics are the agent's Prometheus metrics, registered on the registerer
// passed to NewMetrics (never the global one). A nil *Metrics records
// nothing. Safe for concurrent use.
type Metrics struct {
	// Immutable after NewMetrics.
	role        *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	apply       *prometheus.CounterVec
	outbox      prometheus.Gauge
	reports     *prometheus.CounterVec
	vipPresent  prometheus.Gauge
	memberInfo  *prometheus.GaugeVec
	// checks are the per-check metrics of the health runner.
	checks *health.Metrics

	mu sync.Mutex // guards group and member
	// group is the group label of the role series last published.
	group *string
	// member is the labels (group, member) of the member_info series
	// published (nil: none).
	member []string
}

// NewMetrics creates the agent's metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		role: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "role",
			Help: "This VM's VRRP role in its group: 1 for the current role, 0 for the others.",
		}, []string{"group", "role"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "transitions_total",
			Help: "Role transitions recorded, by the role entered.",
		}, []string{"to"}),
		apply: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "apply_total",
			Help: "Apply passes (fetch, render, validate, install, reload), by result: not_modified, unchanged, applied, " +
				"or the failed step: fetch_error, metadata_error, render_error, validate_error, install_error, reload_error, state_error.",
		}, []string{"result"}),
		outbox: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "outbox_depth",
			Help: "Recorded transitions not yet delivered to hostsync.",
		}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "reports_total",
			Help: "Deliveries of a transition to hostsync, by result (ok, error).",
		}, []string{"result"}),
		vipPresent: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "vip_present",
			Help: "1 when the group's VIP is on the VRRP interface, else 0.",
		}),
		memberInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "member_info",
			Help: "1, with this VM's group and its member name in the group's metadata (hostsync's guest name), once both are known.",
		}, []string{"group", "member"}),
	}
	for _, c := range []prometheus.Collector{m.role, m.transitions, m.apply, m.outbox, m.reports, m.vipPresent, m.memberInfo} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("agent: register metrics: %w", err)
		}
	}
	checks, err := health.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	m.checks = checks
	return m, nil
}

// checkMetrics are the health runner's metrics (nil: none).
func (m *Metrics) checkMetrics() *health.Metrics {
	if m == nil {
		return nil
	}
	return m.checks
}

// state publishes the current role of group, this VM's member name in it
// (none while either is unknown) and whether the VIP is on the interface.
// The series of a previous group or name are removed.
func (m *Metrics) state(group, member string, role vrrp.Role, vipPresent bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.group != nil && *m.group != group {
		m.role.DeletePartialMatch(prometheus.Labels{"group": *m.group})
	}
	m.group = &group
	var info []string
	if group != "" && member != "" {
		info = []string{group, member}
	}
	if m.member != nil && !slices.Equal(m.member, info) {
		m.memberInfo.DeleteLabelValues(m.member...)
	}
	if info != nil {
		m.memberInfo.WithLabelValues(info...).Set(1)
	}
	m.member = info
	for _, r := range metricsRoles {
		v := 0.0
		if r == role {
			v = 1
		}
		m.role.WithLabelValues(group, string(r)).Set(v)
	}
	if vipPresent {
		m.vipPresent.Set(1)
	} else {
		m.vipPresent.Set(0)
	}
}

func (m *Metrics) transition(to vrrp.Role) {
	if m == nil {
		return
	}
	m.transitions.WithLabelValues(string(to)).Inc()
}

func (m *Metrics) applied(result string) {
	if m == nil {
		return
	}
	m.apply.WithLabelValues(result).Inc()
}

func (m *Metrics) outboxDepth(n int) {
	if m == nil {
		return
	}
	m.outbox.Set(float64(n))
}

func (m *Metrics) report(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reports.WithLabelValues("error").Inc()
		return
	}
	m.reports.WithLabelValues("ok").Inc()
}

// noteOutbox publishes the outbox depth.
func (a *Agent) noteOutbox() {
	if a.d.metrics == nil {
		return
	}
	n, err := a.store.PendingCount()
	if err != nil {
		a.log.Warn("read outbox depth", "op", "metrics", "err", err)
		return
	}
	a.d.metrics.outboxDepth(n)
}

// publishLocked publishes the role and VIP presence; a.mu is held.
func (a *Agent) publishLocked() {
	a.d.metrics.state(a.group, a.self, a.role, a.vipPresent)
}

// listenMetrics opens the metrics listener when metrics_listen is set
// (nil, nil when it is not).
func (a *Agent) listenMetrics() (net.Listener, error) {
	if a.cfg.MetricsListen == "" {
		return nil, nil
	}
	if a.d.gatherer == nil {
		return nil, errors.New("agent: metrics_listen is set but no metrics registry was given")
	}
	ln, err := net.Listen("tcp", a.cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("agent: metrics: %w", err)
	}
	return ln, nil
}

// serveMetrics serves GET /metrics on ln until ctx ends, then shuts the
// server down and returns.
func (a *Agent) serveMetrics(ctx context.Context, ln net.Listener) error {
	if err := daemon.Serve(ctx, daemon.MetricsServer(a.d.gatherer, a.log), ln); err != nil {
		return fmt.Errorf("agent: metrics: %w", err)
	}
	return nil
}
