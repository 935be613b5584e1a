package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseRetry is the pause between attempts to get a new host lease while
// etcd is unreachable.
const leaseRetry = time.Second

// HostLease keeps a host's etcd lease (Etcd.AcquireHostLease):
// the store's writes are fenced with it, so that a host cut off from etcd
// for longer than the TTL writes nothing (ErrLeaseLost, which
// queues claims like an unreachable registry) until it has a new lease.
type HostLease struct {
	// Immutable after NewHostLease.
	store   *Etcd
	host    string
	ttl     time.Duration
	retry   time.Duration
	log     *slog.Logger
	metrics *LeaseMetrics
	// lease is the current lease (0: none), last the latest one this
	// process had; only one goroutine at a time runs the methods.
	lease, last clientv3.LeaseID
}

// NewHostLease arms the fence of store for host: until the first lease
// is granted, every write fails with ErrLeaseLost. metrics (nil: none)
// shows whether the lease is held.
func NewHostLease(store *Etcd, host string, ttl time.Duration, log *slog.Logger, metrics *LeaseMetrics) *HostLease {
	store.SetFence(store.HostKey(host), 0)
	metrics.held(false)
	return &HostLease{store: store, host: host, ttl: ttl, retry: leaseRetry, log: log, metrics: metrics}
}

// LeaseMetrics is the host lease's gauge, registered on the registerer
// passed to NewLeaseMetrics (never the global one) by a host whose
// registry is etcd. A nil *LeaseMetrics records nothing.
type LeaseMetrics struct {
	leaseHeld prometheus.Gauge
}

// NewLeaseMetrics creates and registers the gauge
// vipkeeper_hostsync_etcd_lease_held, 0 until a lease is acquired.
func NewLeaseMetrics(reg prometheus.Registerer) (*LeaseMetrics, error) {
	m := &LeaseMetrics{
		leaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vipkeeper", Subsystem: "hostsync", Name: "etcd_lease_held",
			Help: "1 while this host holds its etcd host lease (its registry writes commit), 0 before the first one and from its loss until a new one.",
		}),
	}
	if err := reg.Register(m.leaseHeld); err != nil {
		return nil, fmt.Errorf("registry: register metrics: %w", err)
	}
	return m, nil
}

func (m *LeaseMetrics) held(held bool) {
	if m == nil {
		return
	}
	if held {
		m.leaseHeld.Set(1)
		return
	}
	m.leaseHeld.Set(0)
}

// InitialLeaseWait bounds Run's first attempt at a lease: a host started
// while etcd has no quorum serves its guests from the last view instead
// of waiting (its writes are queued until hold gets a lease).
const InitialLeaseWait = time.Second

// ID is the current lease (0: none). Not safe to call while Hold runs.
func (h *HostLease) ID() clientv3.LeaseID { return h.lease }

// Acquire gets a new lease and fences the store with it.
func (h *HostLease) Acquire(ctx context.Context) error {
	lease, prev, err := h.store.AcquireHostLease(ctx, h.host, h.ttl)
	if err != nil {
		return fmt.Errorf("registry: host lease: %w", err)
	}
	if prev != 0 && h.last != 0 && prev != h.last {
		h.log.Warn("the host key was held by another lease: is another hostsync running with this host_id?",
			"op", "lease", "host_id", h.host, "previous", fmt.Sprintf("%x", int64(prev)))
	}
	h.lease, h.last = lease, lease
	h.metrics.held(true)
	h.log.Info("host lease acquired", "op", "lease", "host_id", h.host, "lease", fmt.Sprintf("%x", int64(lease)), "ttl", h.ttl)
	return nil
}

// Hold keeps the lease alive until ctx ends, then revokes it (the host
// key goes at once). When the lease is lost — it expired while etcd was
// out of reach, or was revoked, or a commit found the host key gone — it
// gets a new one as soon as etcd answers, every retry until then.
func (h *HostLease) Hold(ctx context.Context) {
	defer h.Release()
	for {
		if h.lease == 0 {
			if err := h.Acquire(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				h.log.Debug("host lease: etcd not reached, retrying", "op", "lease", "in", h.retry, "err", err)
				t := time.NewTimer(h.retry)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				continue
			}
		}
		h.keep(ctx)
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("host lease lost: this host's registry writes wait (claims are queued) until it has a new one",
			"op", "lease", "host_id", h.host, "lease", fmt.Sprintf("%x", int64(h.lease)))
		h.lease = 0
		h.metrics.held(false)
	}
}

// Release revokes the current lease, if any.
func (h *HostLease) Release() {
	if h.lease == 0 {
		return
	}
	if err := h.store.ReleaseHostLease(h.lease); err != nil {
		h.log.Debug("host lease not revoked (it expires by itself)", "op", "lease", "err", err)
	}
	h.lease = 0
	h.metrics.held(false)
}

// keep keeps h.lease alive until ctx ends or the lease is lost.
func (h *HostLease) keep(ctx context.Context) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := h.store.Client().KeepAlive(kctx, h.lease)
	if err != nil {
		h.log.Debug("host lease keepalive", "op", "lease", "err", err)
		return
	}
	for {
		select {
		case _, ok := <-ch:
			// The channel closes when ctx ends, when etcd answers that
			// the lease is gone, or after a TTL without an answer.
			if !ok {
				return
			}
		case <-h.store.FenceLost():
			held, err := h.store.HostLeaseHeld(ctx, h.host, h.lease)
			if err == nil && !held {
				return
			}
			if err != nil && !errors.Is(err, ErrUnavailable) {
				h.log.Debug("host lease check", "op", "lease", "err", err)
			}
		}
	}
}
