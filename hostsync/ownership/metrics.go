package ownership

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
)

// Metrics are hostsync's Prometheus metrics, registered on the registerer
// passed to NewMetrics (never the global one). A nil *Metrics records
// nothing. Safe for concurrent use.
type Metrics struct {
	// Immutable after NewMetrics.
	claims       *prometheus.CounterVec
	moves        prometheus.Counter
	splitBrains  prometheus.Counter
	observations *prometheus.CounterVec
	applies      *prometheus.CounterVec
	applyLatency prometheus.Histogram
	moveLatency  prometheus.Histogram
	garpFrames   prometheus.Counter
	groupOwner   *prometheus.GaugeVec

	mu sync.Mutex // guards the fields below
	// owners are the groups' owners last published, by group id.
	owners map[string]ownerSeries
	// ownerSeq numbers the updates of owners (ownerSeries.seq).
	ownerSeq uint64
}

// ownerSeries is what vipkeeper_hostsync_group_owner shows of one group.
type ownerSeries struct {
	group, member string // the series' labels; member "": no owner, no series
	rev           uint64 // the revision of the owner record it shows
	seq           uint64 // the update that set it (Metrics.ownerSeq)
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
		groupOwner: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "group_owner",
			Help: "1 for each group's current owner as the registry records it (group and guest names); a group without owner has no series.",
		}, []string{"group", "member"}),
		owners: map[string]ownerSeries{},
	}
	for _, c := range []prometheus.Collector{m.claims, m.moves, m.splitBrains, m.observations, m.applies, m.applyLatency, m.moveLatency, m.garpFrames, m.groupOwner} {
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

// owner publishes the owner of the group with id (named group) read or
// written at revision rev of its owner record: the series of member
// (none when member is ""), the group's previous series removed. An
// update older than the one published (a lower revision: a read that
// raced with a move) changes nothing. O(1).
func (m *Metrics) owner(id, group, member string, rev uint64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.owners[id]
	if ok && rev < cur.rev {
		return
	}
	if ok && cur.member != "" && (cur.member != member || cur.group != group) {
		m.groupOwner.DeleteLabelValues(cur.group, cur.member)
	}
	if member != "" {
		m.groupOwner.WithLabelValues(group, member).Set(1)
	}
	m.ownerSeq++
	m.owners[id] = ownerSeries{group: group, member: member, rev: rev, seq: m.ownerSeq}
}

// ownerGone removes the series of the group with id (it was deleted).
func (m *Metrics) ownerGone(id string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropOwnerLocked(id)
}

func (m *Metrics) dropOwnerLocked(id string) {
	if cur, ok := m.owners[id]; ok {
		if cur.member != "" {
			m.groupOwner.DeleteLabelValues(cur.group, cur.member)
		}
		delete(m.owners, id)
	}
}

// ownersMark is taken before a complete read of the owners (see
// ownersRead).
func (m *Metrics) ownersMark() uint64 {
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ownerSeq
}

// ownersRead ends a complete read of the owners begun at mark, once each
// group read was published (owner): the groups the read did not find
// (seen) are dropped, unless published after mark (created since the
// read's snapshot).
func (m *Metrics) ownersRead(mark uint64, seen map[string]bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, cur := range m.owners {
		if !seen[id] && cur.seq <= mark {
			m.dropOwnerLocked(id)
		}
	}
}
