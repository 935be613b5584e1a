package hostsync

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/etcdtest"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// clusterHost is one hostsync host's Service on a real etcd cluster, with
// its claim queue file and replay loop, as Run builds it.
type clusterHost struct {
	t       *testing.T
	name    string
	queue   string // the queue file
	svc     *Service
	q       *ownership.ClaimQueue
	store   *registry.Etcd
	api     http.Handler
	backend *fakeBackend
	stop    func()
}

var clusterHops = map[string]netip.Addr{"host-a": ip("198.51.100.1"), "host-b": ip("198.51.100.2")}

// startClusterHost starts (or, with the same queue file, restarts) a
// host. New must succeed even when etcd has no quorum (issue 11, defect 9).
func startClusterHost(t *testing.T, c *etcdtest.Cluster, prefix, name, queueFile string) *clusterHost {
	t.Helper()
	h := &clusterHost{t: t, name: name, queue: queueFile, backend: &fakeBackend{}}
	var err error
	h.store, err = registry.OpenEtcd(registry.EtcdConfig{Endpoints: c.Endpoints(), Prefix: prefix, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if h.q, err = ownership.OpenClaimQueue(queueFile, time.Second); err != nil {
		t.Fatal(err)
	}
	log := testLogger(t).With("host", name)
	h.svc, err = New(context.Background(), h.store, Options{
		Logger: log, Backend: h.backend, Queue: h.q,
		UnreachableAfter: 500 * time.Millisecond, Hosts: clusterHops,
	})
	if err != nil {
		h.q.Close()
		h.store.Close()
		t.Fatalf("host %s did not start: %v", name, err)
	}
	h.api = httpapi.NewGuestAPI(h.svc.Engine, nil, log)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ownership.ReplayLoop(ctx, h.svc.Engine, 100*time.Millisecond, log) })
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			h.svc.Close()
			h.q.Close()
			h.store.Close()
		})
	}
	t.Cleanup(h.stop)
	return h
}

// codes records every guest API answer of the test.
type codes struct {
	mu  sync.Mutex
	all map[int]int
	bad []string
}

func (c *codes) add(what string, code int, body string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.all == nil {
		c.all = map[int]int{}
	}
	c.all[code]++
	if code >= 500 {
		c.bad = append(c.bad, fmt.Sprintf("%s: %d %s", what, code, body))
	}
}

// claim posts a transition to the host's guest API as the guest at from.
func (h *clusterHost) claim(cs *codes, from string, seq uint64, role string, at time.Time) int {
	body, _ := json.Marshal(map[string]any{"transition": vrrp.Transition{Seq: seq, To: vrrp.Role(role), At: at, Source: "notify"}})
	w := guestDo(h.api, http.MethodPost, api.PathClaims, from, string(body), nil)
	cs.add(fmt.Sprintf("%s %s seq %d %s", h.name, from, seq, role), w.Code, w.Body.String())
	return w.Code
}

func (h *clusterHost) metadata(from string) int {
	return guestDo(h.api, http.MethodGet, api.PathMetadata, from, "", nil).Code
}

// TestEtcdClusterLeaderKillAndQuorumLoss is the must-show of issue 11 for
// defects 7–9 on a real 3-member etcd cluster, two hosts and a gateway,
// with groups whose member a sits on host A and member b on host B:
//
//   - the leader is killed during a burst of claims: no claim gets a 5xx
//     (defect 8), and each group ends with its last MASTER;
//   - quorum is lost (2 of 3 members stopped) while both hosts queue, per
//     group, b BACKUP (B), a MASTER (A), a BACKUP (A), b MASTER (B) last,
//     all 202; host A is restarted during the outage and still serves
//     metadata and queues claims (defect 9); quorum back, every group's
//     owner is b, the last MASTER by event time (defect 7), and the
//     gateway points every EIP at host B.
func TestEtcdClusterLeaderKillAndQuorumLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: starts a 3-member etcd cluster")
	}
	c, err := etcdtest.StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	const prefix = "/quorum/"
	const groups = 6
	dir := t.TempDir()
	hostA := startClusterHost(t, c, prefix, "host-a", filepath.Join(dir, "a", ownership.ClaimQueueFile))
	hostB := startClusterHost(t, c, prefix, "host-b", filepath.Join(dir, "b", ownership.ClaimQueueFile))

	// The gateway: its own client, following the registry.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gwStore, err := registry.OpenEtcd(registry.EtcdConfig{Endpoints: c.Endpoints(), Prefix: prefix, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gwStore.Close() })
	gwBackend := &fakeBackend{}
	gw, err := New(ctx, gwStore, Options{Logger: testLogger(t).With("host", "gateway"), Backend: gwBackend, Hosts: clusterHops})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(cancel)
	wg.Go(func() { ownership.FollowWatch(ctx, gw.Engine, gwStore, testLogger(t).With("host", "gateway")) })

	f := &fixture{t: t, ctx: ctx, svc: hostA.svc, rec: &recorder{}}
	f.mustNetwork(api.NetworkCreate{ID: "net1", CIDR: vpcNet, VPCID: "vpc1"})
	f.mustNetwork(api.NetworkCreate{ID: "pub", CIDR: eipNet, Kind: "eip"})
	addrA := func(i int) string { return fmt.Sprintf("192.0.2.%d", 20+i) }
	addrB := func(i int) string { return fmt.Sprintf("192.0.2.%d", 40+i) }
	for i := range groups {
		f.mustGuest(fmt.Sprintf("a%d", i), fmt.Sprintf("a%d", i), "net1", addrA(i), fmt.Sprintf("52:54:00:00:01:%02x", i), 1, "host-a")
		f.mustGuest(fmt.Sprintf("b%d", i), fmt.Sprintf("b%d", i), "net1", addrB(i), fmt.Sprintf("52:54:00:00:02:%02x", i), 1, "host-b")
		name := fmt.Sprintf("g%d", i)
		f.mustGroup(name)
		f.mustJoin(name, fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
		f.mustAttach(name, api.AttachNetwork{IPAddr: ip(fmt.Sprintf("192.0.2.%d", 100+i))})
		f.mustCreateEIP(name, api.CreateGroupEIP{IPAddr: ip(fmt.Sprintf("203.0.113.%d", 10+i))})
	}
	// Every agent reads its metadata from its own host first.
	for i := range groups {
		if code := hostA.metadata(addrA(i)); code != http.StatusOK {
			t.Fatalf("metadata of a%d: %d", i, code)
		}
		if code := hostB.metadata(addrB(i)); code != http.StatusOK {
			t.Fatalf("metadata of b%d: %d", i, code)
		}
	}
	ownerOf := func(i int) string {
		t.Helper()
		var o registry.Owner
		err := gwStore.View(ctx, func(tx registry.Tx) error {
			g, err := inventory.FindGroup(tx, fmt.Sprintf("g%d", i))
			if err != nil {
				return err
			}
			o, err = inventory.Owner(tx, g.ID)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return o.GuestID
	}
	// gatewayAgrees reports whether the gateway's last apply points every
	// group's EIP at want(i) and its host.
	gatewayAgrees := func(want func(i int) string) func() bool {
		return func() bool {
			ms := gwBackend.LastSet()
			if len(ms) != groups {
				return false
			}
			byVIP := map[netip.Addr]string{}
			hop := map[netip.Addr]netip.Addr{}
			for _, m := range ms {
				byVIP[m.VIP], hop[m.VIP] = m.Owner, m.NextHop
			}
			for i := range groups {
				vip := ip(fmt.Sprintf("192.0.2.%d", 100+i))
				w := want(i)
				wantHop := clusterHops["host-a"]
				if w[0] == 'b' {
					wantHop = clusterHops["host-b"]
				}
				if byVIP[vip] != w || hop[vip] != wantHop {
					return false
				}
			}
			return true
		}
	}
	drained := func() bool { return hostA.q.Len() == 0 && hostB.q.Len() == 0 }
	var cs codes
	seqA, seqB := make([]uint64, groups), make([]uint64, groups)
	claimA := func(i int, role string) int {
		seqA[i]++
		return hostA.claim(&cs, addrA(i), seqA[i], role, time.Now().UTC())
	}
	claimB := func(i int, role string) int {
		seqB[i]++
		return hostB.claim(&cs, addrB(i), seqB[i], role, time.Now().UTC())
	}

	// (a) A burst of failovers, the leader killed in the middle of it.
	const rounds = 8
	last := make([]string, groups)
	var burst sync.WaitGroup
	for i := range groups {
		burst.Go(func() {
			for r := range rounds {
				if r%2 == 0 {
					claimB(i, "BACKUP")
					claimA(i, "MASTER")
					last[i] = fmt.Sprintf("a%d", i)
				} else {
					claimA(i, "BACKUP")
					claimB(i, "MASTER")
					last[i] = fmt.Sprintf("b%d", i)
				}
				time.Sleep(20 * time.Millisecond) // pacing, not an assertion
			}
		})
	}
	time.Sleep(150 * time.Millisecond) // the burst is under way
	lead := c.Leader()
	if lead < 0 {
		t.Fatal("no leader during the burst")
	}
	c.Stop(lead)
	burst.Wait()
	if len(cs.bad) > 0 {
		t.Fatalf("claims answered 5xx while the leader was killed: %v", cs.bad)
	}
	if err := c.Start(lead); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both hosts' queues replayed after the leader change", drained)
	for i := range groups {
		if got := ownerOf(i); got != last[i] {
			t.Fatalf("group g%d: owner %q after the burst, want %q (its last MASTER)", i, got, last[i])
		}
	}
	waitFor(t, "the gateway pointing at each group's last MASTER", gatewayAgrees(func(i int) string { return last[i] }))
	t.Logf("burst with the leader (member %d) killed: answers %v", lead, cs.all)

	// Every group's owner is b before the outage: the outage's claims
	// move it to a and back, and only event times tell the order.
	for i := range groups {
		if last[i] != fmt.Sprintf("b%d", i) {
			claimA(i, "BACKUP")
			claimB(i, "MASTER")
		}
	}
	waitFor(t, "queues drained before the outage", drained)
	waitFor(t, "the gateway pointing at every b", gatewayAgrees(func(i int) string { return fmt.Sprintf("b%d", i) }))

	// (b) Quorum lost: two of three members stop.
	lead = c.Leader()
	stopped := []int{lead, (lead + 1) % 3}
	for _, m := range stopped {
		c.Stop(m)
	}
	accepted := func(code int, what string) {
		t.Helper()
		if code != http.StatusAccepted {
			t.Fatalf("%s during the outage: %d, want 202", what, code)
		}
	}
	for i := range groups {
		accepted(claimB(i, "BACKUP"), "b BACKUP")
		accepted(claimA(i, "MASTER"), "a MASTER")
		accepted(claimA(i, "BACKUP"), "a BACKUP")
	}
	for i := range groups {
		accepted(claimB(i, "MASTER"), "b MASTER")
	}
	// Host A restarts during the outage: it starts from its last view,
	// serves its guests' metadata and queues their claims.
	queuedA := hostA.q.Len()
	hostA.stop()
	hostA = startClusterHost(t, c, prefix, "host-a", hostA.queue)
	if hostA.q.Len() != queuedA {
		t.Fatalf("restarted host A holds %d queued claims, want %d", hostA.q.Len(), queuedA)
	}
	for i := range groups {
		if code := hostA.metadata(addrA(i)); code != http.StatusOK {
			t.Fatalf("metadata of a%d from the restarted host A during the outage: %d, want 200 (last view)", i, code)
		}
		if !hostA.svc.WatchVIP(ip(fmt.Sprintf("192.0.2.%d", 100+i))) {
			t.Fatalf("restarted host A does not watch the VIP of g%d", i)
		}
		accepted(claimA(i, "FAULT"), "a FAULT on the restarted host")
	}

	// Quorum back.
	for _, m := range stopped {
		if err := c.Start(m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both hosts' queues replayed after the outage", drained)
	for i := range groups {
		if got, want := ownerOf(i), fmt.Sprintf("b%d", i); got != want {
			t.Errorf("group g%d: owner %q after the outage, want %q (the last MASTER by event time)", i, got, want)
		}
	}
	waitFor(t, "the gateway pointing every EIP at b on host B", gatewayAgrees(func(i int) string { return fmt.Sprintf("b%d", i) }))
	if len(cs.bad) > 0 {
		t.Fatalf("claims answered 5xx: %v", cs.bad)
	}
	t.Logf("answers over the whole test: %v", cs.all)
}
