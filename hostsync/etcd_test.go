package hostsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/etcdtest"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// The embedded etcd server of this test binary, started by the first test
// that needs it and stopped by TestMain.
var (
	etcdOnce   sync.Once
	etcdServer *etcdtest.Server
	etcdErr    error
	etcdSeq    atomic.Uint64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if etcdServer != nil {
		etcdServer.Close()
	}
	os.Exit(code)
}

// sharedEtcd returns the embedded server's endpoints and a key prefix of
// the test's own.
func sharedEtcd(tb testing.TB) (endpoints []string, prefix string) {
	tb.Helper()
	etcdOnce.Do(func() { etcdServer, etcdErr = etcdtest.Start("") })
	if etcdErr != nil {
		tb.Fatalf("embedded etcd: %v", etcdErr)
	}
	return etcdServer.Endpoints(), fmt.Sprintf("/t/%s-%d/", strings.ReplaceAll(tb.Name(), "/", "_"), etcdSeq.Add(1))
}

func openEtcdStore(tb testing.TB, endpoints []string, prefix string) *registry.Etcd {
	tb.Helper()
	s, err := registry.OpenEtcd(registry.EtcdConfig{Endpoints: endpoints, Prefix: prefix})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestParseConfigStore(t *testing.T) {
	c, err := ParseConfig("hostsync.toml", []byte(`
store = "etcd"
role = "gateway"
[etcd]
endpoints = ["https://192.0.2.1:2379", "https://192.0.2.2:2379"]
ca_file = "/etc/vipkeeper/etcd-ca.pem"
cert_file = "/etc/vipkeeper/etcd.pem"
key_file = "/etc/vipkeeper/etcd-key.pem"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store != StoreEtcd || c.Role != RoleGateway || len(c.Etcd.Endpoints) != 2 ||
		c.Etcd.DialTimeout != registry.DefaultEtcdDialTimeout || c.Etcd.Prefix != registry.DefaultEtcdPrefix {
		t.Fatalf("config = %+v", c)
	}
	u, err := ParseConfig("unix.toml", []byte("store = \"etcd\"\n[etcd]\nendpoints = [\"unix:///run/etcd/client.sock\"]\n"))
	if err != nil || u.Etcd.Endpoints[0] != "unix:///run/etcd/client.sock" {
		t.Fatalf("unix endpoint: %+v, %v", u.Etcd, err)
	}
	if hn, err := os.Hostname(); err == nil && inventory.ValidID(hn) && (u.Etcd.HostID != hn || u.Etcd.LeaseTTL != DefaultLeaseTTL) {
		t.Fatalf("host lease defaults: host_id %q lease_ttl %s, want %q %s", u.Etcd.HostID, u.Etcd.LeaseTTL, hn, DefaultLeaseTTL)
	}
	if c.Etcd.HostID != "" || c.Etcd.LeaseTTL != 0 {
		t.Fatalf("gateway got a host lease: %+v", c.Etcd)
	}
	d, err := ParseConfig("empty.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Store != StoreBolt || d.Role != RoleHost {
		t.Fatalf("defaults: store %q role %q, want bbolt host", d.Store, d.Role)
	}

	cases := []struct{ name, toml, key string }{
		{"unknown store", `store = "consul"`, "store"},
		{"unknown role", `role = "router"`, "role"},
		{"gateway on bbolt", `role = "gateway"`, "role"},
		{"etcd table on bbolt", "[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]", "etcd"},
		{"no endpoints", `store = "etcd"`, "etcd.endpoints"},
		{"endpoint without scheme", "store = \"etcd\"\n[etcd]\nendpoints = [\"192.0.2.1:2379\"]", "etcd.endpoints[0]"},
		{"endpoint without port", "store = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1\"]", "etcd.endpoints[0]"},
		{"relative CA", "store = \"etcd\"\n[etcd]\nendpoints = [\"https://192.0.2.1:2379\"]\nca_file = \"ca.pem\"", "etcd.ca_file"},
		{"cert without key", "store = \"etcd\"\n[etcd]\nendpoints = [\"https://192.0.2.1:2379\"]\ncert_file = \"/c.pem\"", "etcd.cert_file"},
		{"bad prefix", "store = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\nprefix = \"vipkeeper\"", "etcd.prefix"},
		{"negative dial timeout", "store = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\ndial_timeout = \"-1s\"", "etcd.dial_timeout"},
		{"gateway with garp", "store = \"etcd\"\nrole = \"gateway\"\ngarp_interface = \"br0\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]", "garp_interface"},
		{"unix endpoint with a relative path", "store = \"etcd\"\n[etcd]\nendpoints = [\"unix://etcd.sock\"]", "etcd.endpoints[0]"},
		{"bad host id", "store = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\nhost_id = \"a b\"", "etcd.host_id"},
		{"lease ttl too short", "store = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\nhost_id = \"h1\"\nlease_ttl = \"1s\"", "etcd.lease_ttl"},
		{"lease ttl not whole seconds", "store = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\nhost_id = \"h1\"\nlease_ttl = \"2500ms\"", "etcd.lease_ttl"},
		{"lease ttl too long", "store = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\nhost_id = \"h1\"\nlease_ttl = \"2h\"", "etcd.lease_ttl"},
		{"gateway with a host id", "store = \"etcd\"\nrole = \"gateway\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\nhost_id = \"gw\"", "etcd.host_id"},
		{"lease ttl on bbolt", "[etcd]\nlease_ttl = \"10s\"", "etcd"},
		{"unknown etcd key", "store = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\nusername = \"x\"", "etcd.username"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("hostsync.toml", []byte(tc.toml))
			checkConfigError(t, err, tc.key, tc.key == "etcd.username", 0)
		})
	}
}

// etcdConfig is a host or gateway configuration on the shared registry.
func etcdConfig(t *testing.T, role string, endpoints []string, prefix string) Config {
	t.Helper()
	dir := t.TempDir()
	hostID := ""
	if role == RoleHost {
		hostID = fmt.Sprintf("host_id = %q\n", "host-a")
	}
	cfg, err := ParseConfig("test.toml", []byte(fmt.Sprintf(`
store = "etcd"
role = %q
state_dir = %q
admin_socket = %q
guest_listen = "127.0.0.1:0"
reapply_interval = "1h"
[dataplane]
backend = "none"
[etcd]
endpoints = [%q]
prefix = %q
%s
[hosts]
host-a = "198.51.100.1"
host-b = "198.51.100.2"
`, role, dir, filepath.Join(dir, "hostsync.sock"), endpoints[0], prefix, hostID)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startRun runs the daemon until the test ends.
func startRun(t *testing.T, cfg Config, p *Platform) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, cfg, testLogger(t), p) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run (%s) returned %v, want context.Canceled", cfg.Role, err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("Run (%s) did not stop", cfg.Role)
		}
	})
}

// TestRunSharedRegistry: two hosts and a gateway on one etcd registry.
// The members of the seed's group sit on host-a and host-b; each claim is
// accepted by one host's Service, and the gateway (which serves no guest
// and sends no GARP) re-points the EIP to the new owner's host, as does
// the other host.
func TestRunSharedRegistry(t *testing.T) {
	endpoints, prefix := sharedEtcd(t)

	// Host B's engine, on its own client; its data plane is host B's.
	storeB := openEtcdStore(t, endpoints, prefix)
	backendB := &fakeBackend{}
	svcB, err := New(context.Background(), storeB, Options{
		Logger: testLogger(t), Backend: backendB,
		Hosts: map[string]netip.Addr{"host-a": ip("198.51.100.1"), "host-b": ip("198.51.100.2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svcB.Close() })
	f := &fixture{t: t, ctx: context.Background(), svc: svcB, rec: &recorder{}}
	f.mustNetwork(api.NetworkCreate{ID: "net1", CIDR: vpcNet, VPCID: "vpc1"})
	f.mustNetwork(api.NetworkCreate{ID: "pub", CIDR: eipNet, Kind: "eip"})
	f.mustGuest("g1", "nginx-master", "net1", "192.0.2.11", "52:54:00:00:00:11", 1, "host-a")
	f.mustGuest("g2", "nginx-slave", "net1", "192.0.2.12", "52:54:00:00:00:12", 1, "host-b")
	f.nginx()

	backendA, backendGW := &fakeBackend{}, &fakeBackend{}
	startRun(t, etcdConfig(t, RoleHost, endpoints, prefix), &Platform{Backend: backendA})
	startRun(t, etcdConfig(t, RoleGateway, endpoints, prefix), &Platform{Backend: backendGW})

	pointsTo := func(b *fakeBackend, owner string, hop string) func() bool {
		return func() bool {
			ms := b.LastSet()
			return len(ms) == 1 && ms[0].EIP == ip("203.0.113.5") && ms[0].VIP == ip("192.0.2.10") &&
				ms[0].Owner == owner && (hop == "" && !ms[0].NextHop.IsValid() || hop != "" && ms[0].NextHop == ip(hop))
		}
	}
	waitFor(t, "the gateway's first apply (no owner yet)", pointsTo(backendGW, "", ""))

	claim := func(c inventory.Caller, seq uint64, role string) api.ClaimResult {
		t.Helper()
		res, err := svcB.Claim(f.ctx, c, transition(seq, role))
		if err != nil || !res.Accepted {
			t.Fatalf("claim %s %d: %+v, %v", role, seq, res, err)
		}
		return res
	}
	for _, step := range []struct {
		name  string
		moves func() api.ClaimResult
		owner string
		hop   string
	}{
		{"master takes the VIP", func() api.ClaimResult { return claim(master, 1, "MASTER") }, "nginx-master", "198.51.100.1"},
		{"failover to host B", func() api.ClaimResult { claim(master, 2, "BACKUP"); return claim(slave, 1, "MASTER") }, "nginx-slave", "198.51.100.2"},
		{"back to host A", func() api.ClaimResult { claim(slave, 2, "BACKUP"); return claim(master, 3, "MASTER") }, "nginx-master", "198.51.100.1"},
	} {
		if res := step.moves(); res.Owner != step.owner {
			t.Fatalf("%s: owner %q, want %q", step.name, res.Owner, step.owner)
		}
		waitFor(t, step.name+": the gateway pointing at "+step.owner, pointsTo(backendGW, step.owner, step.hop))
		waitFor(t, step.name+": host A pointing at "+step.owner, pointsTo(backendA, step.owner, step.hop))
		if !pointsTo(backendB, step.owner, step.hop)() {
			t.Fatalf("%s: host B (the claim's host) applied %+v", step.name, backendB.LastSet())
		}
	}
	// The host holds a lease key; the gateway, which writes nothing, none.
	resp, err := storeB.Client().Get(f.ctx, prefix+"_hosts/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != prefix+"_hosts/host-a" || resp.Kvs[0].Lease == 0 {
		t.Fatalf("host keys %v, want only %s_hosts/host-a with a lease", resp.Kvs, prefix)
	}
}

// TestRunEtcdMetrics: on one etcd registry, the owner series of a host and
// of a gateway follow the moves another host commits (through their
// watch), and the host shows its lease held; the gateway, which holds no
// lease, has no lease gauge.
func TestRunEtcdMetrics(t *testing.T) {
	endpoints, prefix := sharedEtcd(t)
	storeB := openEtcdStore(t, endpoints, prefix)
	svcB, err := New(context.Background(), storeB, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svcB.Close() })
	f := &fixture{t: t, ctx: context.Background(), svc: svcB, rec: &recorder{}}
	f.mustNetwork(api.NetworkCreate{ID: "net1", CIDR: vpcNet, VPCID: "vpc1"})
	f.mustNetwork(api.NetworkCreate{ID: "pub", CIDR: eipNet, Kind: "eip"})
	f.mustGuest("g1", "nginx-master", "net1", "192.0.2.11", "52:54:00:00:00:11", 1, "host-a")
	f.mustGuest("g2", "nginx-slave", "net1", "192.0.2.12", "52:54:00:00:00:12", 1, "host-b")
	f.nginx()

	scrapeURL := map[string]string{}
	for _, role := range []string{RoleHost, RoleGateway} {
		cfg := etcdConfig(t, role, endpoints, prefix)
		cfg.MetricsListen = "127.0.0.1:0"
		logs := testutil.NewLogRecorder(testLogger(t).Handler())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- runWith(ctx, cfg, slog.New(logs), &Platform{Backend: &fakeBackend{}}) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run (%s) returned %v, want context.Canceled", role, err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("Run (%s) did not stop", role)
			}
		})
		waitFor(t, role+": the start log", func() bool { _, ok := logs.Attr("hostsync started", "metrics"); return ok })
		addr, _ := logs.Attr("hostsync started", "metrics")
		scrapeURL[role] = "http://" + addr + "/metrics"
	}
	lease := func(role string) (float64, bool) {
		v, ok := testutil.Scrape(t, scrapeURL[role])["vipkeeper_hostsync_etcd_lease_held"]
		return v, ok
	}
	waitFor(t, "the host's lease in /metrics", func() bool { v, ok := lease(RoleHost); return ok && v == 1 })
	if v, ok := lease(RoleGateway); ok {
		t.Errorf("the gateway serves vipkeeper_hostsync_etcd_lease_held = %v, want no such metric", v)
	}

	claim := func(c inventory.Caller, seq uint64, role string) {
		t.Helper()
		if res, err := svcB.Claim(f.ctx, c, transition(seq, role)); err != nil || !res.Accepted {
			t.Fatalf("claim %s %d: %+v, %v", role, seq, res, err)
		}
	}
	for _, step := range []struct {
		name  string
		moves func()
		owner string
	}{
		{"master takes the VIP", func() { claim(master, 1, "MASTER") }, "nginx-master"},
		{"failover", func() { claim(master, 2, "BACKUP"); claim(slave, 1, "MASTER") }, "nginx-slave"},
	} {
		step.moves()
		want := []string{`vipkeeper_hostsync_group_owner{group="nginx",member="` + step.owner + `"} 1`}
		for _, role := range []string{RoleHost, RoleGateway} {
			waitFor(t, step.name+": the "+role+"'s owner series", func() bool {
				return slices.Equal(ownerSeries(testutil.Scrape(t, scrapeURL[role])), want)
			})
		}
	}
}

// TestRunHostLease: a host's hostsync holds its lease key; when the lease
// is gone (revoked here, as etcd does when it expires) it takes a new one,
// and it revokes it when it stops.
func TestRunHostLease(t *testing.T) {
	endpoints, prefix := sharedEtcd(t)
	cli := openEtcdStore(t, endpoints, prefix).Client()
	key := prefix + "_hosts/host-a"
	leaseOf := func() clientv3.LeaseID {
		t.Helper()
		resp, err := cli.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return 0
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	cfg := etcdConfig(t, RoleHost, endpoints, prefix)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, cfg, testLogger(t), &Platform{Backend: &fakeBackend{}}) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	waitFor(t, "the host's lease key", func() bool { return leaseOf() != 0 })
	first := leaseOf()
	if _, err := cli.Revoke(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new lease after the revoke", func() bool { l := leaseOf(); return l != 0 && l != first })

	cancel()
	select {
	case err := <-done:
		stopped = true
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop")
	}
	if l := leaseOf(); l != 0 {
		t.Fatalf("lease key still held by %x after Run stopped", int64(l))
	}
}

// followRecorder is a data plane that reports each apply's owner.
type followRecorder struct {
	applied chan string
}

func (r *followRecorder) Apply(_ context.Context, ms []eip.Mapping) error {
	owner := ""
	if len(ms) > 0 {
		owner = ms[0].Owner
	}
	select {
	case r.applied <- owner:
	default:
	}
	return nil
}

// swapOwnerTo moves the owner of group ig-nginx to guest, as a claim does.
func swapOwnerTo(ctx context.Context, s registry.Store, guest string) error {
	return s.Update(ctx, func(tx registry.Tx) error {
		cur, err := inventory.Owner(tx, "ig-nginx")
		if err != nil {
			return err
		}
		_, err = registry.SwapOwner(tx, cur.Revision, registry.Owner{Group: "ig-nginx", GuestID: guest, Source: "bench"})
		return err
	})
}

// benchStores returns, per store, the seed's group on a fresh registry.
func benchStores(b *testing.B) map[string]registry.Store {
	out := map[string]registry.Store{"bbolt": openStore(b)}
	endpoints, prefix := sharedEtcd(b)
	out["etcd"] = openEtcdStore(b, endpoints, prefix)
	for _, s := range out {
		svc, err := New(context.Background(), s, Options{Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		f := &fixture{t: b, ctx: context.Background(), svc: svc, rec: &recorder{}}
		f.mustNetwork(api.NetworkCreate{ID: "net1", CIDR: vpcNet, VPCID: "vpc1"})
		f.mustNetwork(api.NetworkCreate{ID: "pub", CIDR: eipNet, Kind: "eip"})
		f.mustGuest("g1", "nginx-master", "net1", "192.0.2.11", "52:54:00:00:00:11", 1, "host-a")
		f.mustGuest("g2", "nginx-slave", "net1", "192.0.2.12", "52:54:00:00:00:12", 1, "host-b")
		f.nginx()
		svc.Close()
	}
	return out
}

// BenchmarkOwnerCAS measures the owner compare-and-swap (read the owner,
// swap it expecting that revision, commit) on bbolt (a local fsync'd
// file) and on etcd (an embedded single-member server on loopback: one
// range read and one Txn, raft and its WAL fsync). Reported as swaps/s.
func BenchmarkOwnerCAS(b *testing.B) {
	stores := benchStores(b)
	for _, name := range []string{"bbolt", "etcd"} {
		s := stores[name]
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := swapOwnerTo(ctx, s, []string{"g1", "g2"}[i%2]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "swaps/s")
		})
	}
}

// BenchmarkWatchToApply measures, per owner move committed by another
// host, the time from the commit returning to this process's data plane
// applying the new owner: on etcd through the watch (follow), on bbolt —
// which has no other host — through the local re-apply after the commit,
// as the baseline. Reported as p50/p99 in ms.
func BenchmarkWatchToApply(b *testing.B) {
	stores := benchStores(b)
	for _, name := range []string{"bbolt", "etcd"} {
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rec := &followRecorder{applied: make(chan string, 64)}
			svc, err := New(ctx, stores[name], Options{Logger: slog.New(slog.DiscardHandler), Backend: rec})
			if err != nil {
				b.Fatal(err)
			}
			defer svc.Close()
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel()
			w, shared := stores[name].(registry.Watcher)
			writer := stores[name]
			if shared {
				// The moves come from another host: a second client.
				endpoints := etcdServer.Endpoints()
				writer = openEtcdStore(b, endpoints, stores[name].(*registry.Etcd).Prefix())
				wg.Go(func() { ownership.FollowWatch(ctx, svc.Engine, w, slog.New(slog.DiscardHandler)) })
				waitOwner(b, rec.applied, "*") // the watch is established
			}
			names := map[string]string{"g1": "nginx-master", "g2": "nginx-slave"}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				guest := []string{"g1", "g2"}[i%2]
				if err := swapOwnerTo(ctx, writer, guest); err != nil {
					b.Fatal(err)
				}
				at := time.Now()
				if !shared {
					if err := svc.Reapply(ctx); err != nil {
						b.Fatal(err)
					}
				}
				waitOwner(b, rec.applied, names[guest])
				lat = append(lat, time.Since(at))
			}
			b.StopTimer()
			reportPercentiles(b, lat)
		})
	}
}

// waitOwner waits for an apply with the owner ("*": any), draining
// older ones.
func waitOwner(b *testing.B, applied <-chan string, owner string) {
	b.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-applied:
			if got == owner || owner == "*" {
				return
			}
		case <-deadline:
			b.Fatalf("no apply with owner %q within 10s", owner)
		}
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}
