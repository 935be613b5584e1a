package registry

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// waitGauge polls g (the real etcd decides when) until it is want.
func waitGauge(t *testing.T, what string, g prometheus.Gauge, want float64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for promtest.ToFloat64(g) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: etcd_lease_held = %v after %s, want %v", what, promtest.ToFloat64(g), within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHostLeaseMetric: vipkeeper_hostsync_etcd_lease_held is 0 until the
// first lease, 1 while it is held, 0 once it is lost — etcd out of reach
// for longer than the TTL — and 1 again with the lease taken when etcd is
// back; 0 after Hold stops and revokes it.
func TestHostLeaseMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewLeaseMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewLeaseMetrics(reg); err == nil {
		t.Fatal("registering the lease gauge twice on one registry succeeded")
	}
	cli := etcdClient(t)
	s, err := NewEtcd(cli, EtcdOptions{Prefix: testPrefix(t), RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	const ttl = 2 * time.Second // etcd's shortest in practice
	h := NewHostLease(s, "host-a", ttl, log, m)
	if got := promtest.ToFloat64(m.leaseHeld); got != 0 {
		t.Fatalf("etcd_lease_held = %v before the first lease, want 0", got)
	}
	if n, err := promtest.GatherAndCount(reg, "vipkeeper_hostsync_etcd_lease_held"); err != nil || n != 1 {
		t.Fatalf("gathered %d series of vipkeeper_hostsync_etcd_lease_held (%v), want 1 before the first lease", n, err)
	}
	if err := h.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := promtest.ToFloat64(m.leaseHeld); got != 1 {
		t.Fatalf("etcd_lease_held = %v after Acquire, want 1", got)
	}
	first := h.ID()

	ctx, cancel := context.WithCancel(context.Background())
	held := make(chan struct{})
	go func() { defer close(held); h.Hold(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-held
		}
	}()

	testEtcd.Pause()
	resumed := false
	defer func() {
		if !resumed {
			testEtcd.Resume()
		}
	}()
	// The keepalive gives the lease up a TTL after etcd's last answer.
	waitGauge(t, "etcd paused", m.leaseHeld, 0, ttl+30*time.Second)
	if err := testEtcd.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	waitGauge(t, "etcd back", m.leaseHeld, 1, 30*time.Second)

	cancel()
	<-held
	stopped = true
	if got := promtest.ToFloat64(m.leaseHeld); got != 0 {
		t.Fatalf("etcd_lease_held = %v after Hold stopped, want 0", got)
	}
	if h.last == first {
		t.Errorf("the lease held after etcd came back is the first one (%x), want a new one", int64(first))
	}
	resp, err := cli.Get(context.Background(), s.HostKey("host-a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Errorf("host key still attached to lease %x after Hold stopped", int64(clientv3.LeaseID(resp.Kvs[0].Lease)))
	}
}
