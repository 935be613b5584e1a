package ownership

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
)

// Metrics are hostsync's Prometheus metrics, registered on the registerer
// passed to NewMetrics (never the global one). A nil *Metrics records
// nothing.
type Metrics struct {
	claims       *prometheus.CounterVec
	moves        prometheus.Counter
	splitBrains  prometheus.Counter
	observations *prometheus.CounterVec
	applies      *prometheus.CounterVec
	applyLatency prometheus.Histogram
	moveLatency  prometheus.Histogram
	garpFrames   prometheus.Counter
}

// NewMetrics creates and registers the metrics.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "claims_total",
			Help: "Claims received from guests, by result (accepted, rejected, duplicate, forbidden, invalid, error).",
		}, []string{"result"}),
		moves: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "vip_moves_total",
			Help: "Changes of a VIP's owner.",
		}),
		splitBrains: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "split_brains_total",
			Help: "Times two members of a group claimed MASTER at once.",
		}),
		observations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "garp_observations_total",
			Help: "Gratuitous ARP and probe answers seen for known VIPs, by result (accepted, ignored, forged: from another bridge port than the MAC's, unverified: from a MAC the bridge had not learnt).",
		}, []string{"result"}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "dataplane_applies_total",
			Help: "Data-plane applies of the EIP mappings, by result (ok, error, held: an empty set from a registry with no group kept from a data plane holding mappings).",
		}, []string{"result"}),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "dataplane_apply_seconds",
			Help: "Duration of one data-plane apply of the EIP mappings (the backend's work: one nft -f transaction, or the hook), ok or not.",
			// nft -f takes milliseconds; a command hook may call a remote
			// gateway, bounded by dataplane.timeout (default 30 s).
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		garpFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "garp_frames_sent_total",
			Help: "Gratuitous ARP frames (requests and replies) written for new VIP owners.",
		}),
		moveLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "claim_to_applied_seconds",
			Help:    "Time from a MASTER claim that moves the owner to the GARP started and the EIP mapping applied.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	for _, c := range []prometheus.Collector{m.claims, m.moves, m.splitBrains, m.observations, m.applies, m.applyLatency, m.moveLatency, m.garpFrames} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("hostsync: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) claim(err error, res api.ClaimResult) {
	if m == nil {
		return
	}
	result := "accepted"
	switch {
	case errors.Is(err, inventory.ErrForbidden):
		result = "forbidden"
	case errors.Is(err, inventory.ErrInvalid):
		result = "invalid"
	case err != nil:
		result = "error"
	case res.Duplicate:
		result = "duplicate"
	case !res.Accepted:
		result = "rejected"
	}
	m.claims.WithLabelValues(result).Inc()
}

func (m *Metrics) observation(accepted bool) {
	if m == nil {
		return
	}
	if accepted {
		m.observations.WithLabelValues("accepted").Inc()
		return
	}
	m.observations.WithLabelValues("ignored").Inc()
}

// observationRefused counts an observation the port check refused
// (result "forged" or "unverified").
func (m *Metrics) observationRefused(result string) {
	if m == nil {
		return
	}
	m.observations.WithLabelValues(result).Inc()
}

func (m *Metrics) moved(d time.Duration) {
	if m == nil {
		return
	}
	m.moves.Inc()
	m.moveLatency.Observe(d.Seconds())
}

func (m *Metrics) splitBrain() {
	if m == nil {
		return
	}
	m.splitBrains.Inc()
}

func (m *Metrics) applied(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.applies.WithLabelValues("error").Inc()
		return
	}
	m.applies.WithLabelValues("ok").Inc()
}

func (m *Metrics) held() {
	if m == nil {
		return
	}
	m.applies.WithLabelValues("held").Inc()
}

func (m *Metrics) applyTook(d time.Duration) {
	if m == nil {
		return
	}
	m.applyLatency.Observe(d.Seconds())
}

func (m *Metrics) garpSent(frames int) {
	if m == nil || frames <= 0 {
		return
	}
	m.garpFrames.Add(float64(frames))
}
