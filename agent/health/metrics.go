package health

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vipkeeper/vipkeeper/api"
)

// states are the values of the state gauge's "state" label.
var states = []string{api.CheckUnknown, api.CheckHealthy, api.CheckFailing}

// Metrics are the runner's per-check metrics, named with the agent's
// prefix (vipkeeper_agent_check_*) and registered on the registerer passed
// to NewMetrics. A nil *Metrics records nothing. Safe for concurrent use.
type Metrics struct {
	// Immutable after NewMetrics.
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	duration    *prometheus.HistogramVec
}

// NewMetrics creates the check metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "check_state",
			Help: "State of each health check the agent runs: 1 for the current state (unknown, healthy, failing), 0 for the others.",
		}, []string{"check", "state"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "check_transitions_total",
			Help: "Changes of a health check's state, by the state entered.",
		}, []string{"check", "to"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "vipkeeper", Subsystem: "agent", Name: "check_duration_seconds",
			Help:    "Time one judgement of a health check took, a restart of its unit included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"check"}),
	}
	for _, c := range []prometheus.Collector{m.state, m.transitions, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("health: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) setState(check, state string) {
	if m == nil {
		return
	}
	for _, s := range states {
		v := 0.0
		if s == state {
			v = 1
		}
		m.state.WithLabelValues(check, s).Set(v)
	}
}

func (m *Metrics) transition(check, to string) {
	if m == nil {
		return
	}
	m.setState(check, to)
	m.transitions.WithLabelValues(check, to).Inc()
}

func (m *Metrics) observe(check string, d time.Duration) {
	if m == nil {
		return
	}
	m.duration.WithLabelValues(check).Observe(d.Seconds())
}

// forget removes a check's series once it no longer runs.
func (m *Metrics) forget(check string) {
	if m == nil {
		return
	}
	labels := prometheus.Labels{"check": check}
	m.state.DeletePartialMatch(labels)
	m.transitions.DeletePartialMatch(labels)
	m.duration.DeletePartialMatch(labels)
}
