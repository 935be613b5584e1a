package hostsync

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
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

func openQueue(t *testing.T) *ownership.ClaimQueue {
	t.Helper()
	q, err := ownership.OpenClaimQueue(filepath.Join(t.TempDir(), ownership.ClaimQueueFile), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func partitionHost(t *testing.T, srv *etcdtest.Server, prefix string, backend *fakeBackend) (*Service, *ownership.ClaimQueue, registry.Store) {
	t.Helper()
	store, err := registry.OpenEtcd(registry.EtcdConfig{Endpoints: srv.Endpoints(), Prefix: prefix, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	q := openQueue(t)
	svc, err := New(context.Background(), store, Options{
		Logger: testLogger(t), Backend: backend, Queue: q,
		UnreachableAfter: 300 * time.Millisecond,
		Hosts:            map[string]netip.Addr{"host-a": ip("198.51.100.1"), "host-b": ip("198.51.100.2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc, q, store
}

// TestPartitionClaimQueued: etcd stops during a move. The new master's
// claim reaches its host, which stores it (202, queued), keeps serving
// metadata from its last view, and replays the claim once etcd is back:
// the owner moves exactly once. Then a claim queued on the other host
// during a second outage, older than an owner change another host writes
// once etcd is back, does not overwrite that newer owner.
func TestPartitionClaimQueued(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: starts an etcd server")
	}
	srv, err := etcdtest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	const prefix = "/partition/"
	svcA, queueA, storeA := partitionHost(t, srv, prefix, &fakeBackend{})
	backendB := &fakeBackend{}
	svcB, queueB, _ := partitionHost(t, srv, prefix, backendB)
	ctx := context.Background()

	f := &fixture{t: t, ctx: ctx, svc: svcA, rec: &recorder{}}
	owner := func() registry.Owner {
		t.Helper()
		var o registry.Owner
		err := storeA.View(ctx, func(tx registry.Tx) error {
			var err error
			o, err = inventory.Owner(tx, "ig-nginx")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	role := func(guest string) registry.RoleState {
		t.Helper()
		var rs registry.RoleState
		err := storeA.View(ctx, func(tx registry.Tx) error {
			var err error
			rs, err = registry.Get[registry.RoleState](tx, registry.RoleKey("ig-nginx", guest))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	f.mustNetwork(api.NetworkCreate{ID: "net1", CIDR: vpcNet, VPCID: "vpc1"})
	f.mustNetwork(api.NetworkCreate{ID: "pub", CIDR: eipNet, Kind: "eip"})
	f.mustGuest("g1", "nginx-master", "net1", "192.0.2.11", "52:54:00:00:00:11", 1, "host-a")
	f.mustGuest("g2", "nginx-slave", "net1", "192.0.2.12", "52:54:00:00:00:12", 1, "host-b")
	f.mustGuest("g5", "third", "net1", "192.0.2.15", "52:54:00:00:00:15", 1, "host-b")
	f.nginx()
	f.mustJoin("nginx", "g5")
	third := inventory.Caller{Addr: ip("192.0.2.15")}
	if res, err := svcA.Claim(ctx, master, transition(1, "MASTER")); err != nil || res.Owner != "nginx-master" {
		t.Fatalf("first claim: %+v, %v", res, err)
	}
	before, err := svcB.Metadata(ctx, slave)
	if err != nil {
		t.Fatal(err)
	}
	// Agents fetch their metadata before they report: each host knows its
	// callers as members when the registry goes away.
	if _, err := svcA.Metadata(ctx, master); err != nil {
		t.Fatal(err)
	}
	guestAPI := httptest.NewServer(httpapi.NewGuestAPI(svcB.Engine, nil, testLogger(t)))
	defer guestAPI.Close()

	// Outage during the move: the master left (its BACKUP claim reaches
	// host A), the slave took the VIP (its MASTER claim reaches host B).
	srv.Pause()
	if res, err := svcA.Claim(ctx, master, transition(2, "BACKUP")); err != nil || !res.Queued {
		t.Fatalf("master's BACKUP during the outage: %+v, %v; want queued", res, err)
	}
	md, err := svcB.Metadata(ctx, slave)
	if err != nil || md.Revision != before.Revision || md.Group.ID != before.Group.ID {
		t.Fatalf("metadata during the outage: %+v, %v; want the last view (revision %d)", md, err, before.Revision)
	}
	if _, err := svcB.Metadata(ctx, third); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("metadata of a guest never served during the outage: %v, want ErrUnavailable", err)
	}
	moveAt := time.Now().UTC()
	tr := transition(1, "MASTER")
	tr.At = moveAt
	res, err := svcB.Claim(ctx, slave, tr)
	if err != nil || !res.Queued || !res.Accepted {
		t.Fatalf("claim during the outage: %+v, %v; want accepted and queued", res, err)
	}
	// The agent's retry of the same event (its answer was lost) is
	// queued behind it; the replay sees it as the duplicate it is.
	res, err = svcB.Claim(ctx, slave, tr)
	if err != nil || !res.Queued {
		t.Fatalf("retried claim: %+v, %v", res, err)
	}
	// Through the guest API a member's claim is answered 202 Accepted.
	w := guestDo(httpapi.NewGuestAPI(svcB.Engine, nil, testLogger(t)), "POST", api.PathClaims, "192.0.2.12",
		`{"transition":{"seq":2,"to":"MASTER"}}`, nil)
	if w.Code != http.StatusAccepted {
		t.Fatalf("guest API answered %d (%s) during the outage, want 202", w.Code, w.Body)
	}
	// A caller that was no member at the last view cannot queue anything
	// (it could fill the queue, or push real claims behind its own): 503.
	if code := postClaim(t, guestAPI.URL, transition(2, "MASTER")); code != http.StatusServiceUnavailable {
		t.Fatalf("guest API answered %d to a stranger during the outage, want 503", code)
	}
	if queueB.Len() != 3 {
		t.Fatalf("queue holds %d claims, want 3", queueB.Len())
	}
	if n, err := svcB.ReplayQueue(ctx); !errors.Is(err, registry.ErrUnavailable) || n != 0 || queueB.Len() != 3 {
		t.Fatalf("replay during the outage: %d, %v, Len %d; want nothing replayed, ErrUnavailable", n, err, queueB.Len())
	}

	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "host A's queue replayed", func() bool {
		_, err := svcA.ReplayQueue(ctx)
		return err == nil && queueA.Len() == 0
	})
	waitFor(t, "host B's queue replayed", func() bool {
		_, err := svcB.ReplayQueue(ctx)
		return err == nil && queueB.Len() == 0
	})
	o := owner()
	if o.GuestID != "g2" || o.Revision != 2 {
		t.Fatalf("owner after the replay = %+v, want g2 at revision 2 (moved exactly once)", o)
	}
	if ms := backendB.LastSet(); len(ms) != 1 || ms[0].Owner != "nginx-slave" {
		t.Fatalf("host B's data plane after the replay: %+v", ms)
	}
	// Its seq 1 claim, the duplicate retry of it and its seq 2 claim (over
	// the guest API) were replayed in order: the role ends at seq 2.
	if rs := role("g2"); rs.Seq != 2 || rs.Role != vrrp.RoleMaster {
		t.Fatalf("slave's role after the replay = %+v, want seq 2 MASTER", rs)
	}

	// Second outage: host A queues the master's MASTER claim; its view is
	// stale by the time etcd is back, because host B records a newer
	// owner first. The queued claim is recorded, the newer owner stands.
	srv.Pause()
	old := transition(3, "MASTER")
	old.At = time.Now().UTC()
	if res, err := svcA.Claim(ctx, master, old); err != nil || !res.Queued {
		t.Fatalf("master's claim during the second outage: %+v, %v", res, err)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "host B reading after the outage", func() bool {
		_, err := svcB.Status(ctx)
		return err == nil
	})
	if res, err := svcB.Claim(ctx, slave, transition(3, "BACKUP")); err != nil || res.Queued {
		t.Fatalf("slave's BACKUP after the outage: %+v, %v", res, err)
	}
	newer := transition(1, "MASTER")
	newer.At = time.Now().UTC()
	if res, err := svcB.Claim(ctx, third, newer); err != nil || res.Owner != "third" {
		t.Fatalf("newer claim on host B: %+v, %v", res, err)
	}
	n, err := svcA.ReplayQueue(ctx)
	if err != nil || n != 1 || queueA.Len() != 0 {
		t.Fatalf("host A's replay: %d, %v, Len %d", n, err, queueA.Len())
	}
	if o := owner(); o.GuestID != "g5" || o.Revision != 3 {
		t.Fatalf("owner after the stale replay = %+v, want g5 (third) at revision 3", o)
	}
	if rs := role("g1"); rs.Seq != 3 || rs.Role != vrrp.RoleMaster {
		t.Fatalf("master's queued claim not recorded: %+v", rs)
	}
}

// postClaim sends a claim to the guest API. The test server sees the
// request from 127.0.0.1, no registered guest: answered only because it
// is queued (and dropped as forbidden when replayed).
func postClaim(t *testing.T, base string, tr vrrp.Transition) int {
	t.Helper()
	body := `{"transition":{"seq":` + strconv.FormatUint(tr.Seq, 10) + `,"to":"` + string(tr.To) + `"}}`
	resp, err := http.Post(base+api.PathClaims, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

// TestStaleHostLeaseClaimQueued: host A's lease is gone (it was cut off
// from etcd longer than the TTL; revoked here through another client).
// Its registry view is still current, yet a MASTER claim reaching it
// writes nothing: the fenced commit fails with registry.ErrLeaseLost and
// the claim is queued. Host B moves the owner meanwhile. Once A has a new
// lease the queued claim is replayed through the normal path: recorded,
// and older than the owner B wrote, it does not overwrite it.
func TestStaleHostLeaseClaimQueued(t *testing.T) {
	endpoints, prefix := sharedEtcd(t)
	ctx := context.Background()
	storeA, err := registry.OpenEtcd(registry.EtcdConfig{Endpoints: endpoints, Prefix: prefix, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { storeA.Close() })
	leaseA := registry.NewHostLease(storeA, "host-a", time.Minute, testLogger(t), nil)
	if err := leaseA.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	queueA := openQueue(t)
	svcA, err := New(ctx, storeA, Options{
		Logger: testLogger(t), Backend: &fakeBackend{}, Queue: queueA,
		UnreachableAfter: time.Second,
		Hosts:            map[string]netip.Addr{"host-a": ip("198.51.100.1"), "host-b": ip("198.51.100.2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svcA.Close() })
	storeB := openEtcdStore(t, endpoints, prefix)
	svcB, err := New(ctx, storeB, Options{Logger: testLogger(t), Backend: &fakeBackend{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svcB.Close() })

	f := &fixture{t: t, ctx: ctx, svc: svcA, rec: &recorder{}}
	f.mustNetwork(api.NetworkCreate{ID: "net1", CIDR: vpcNet, VPCID: "vpc1"})
	f.mustNetwork(api.NetworkCreate{ID: "pub", CIDR: eipNet, Kind: "eip"})
	f.mustGuest("g1", "nginx-master", "net1", "192.0.2.11", "52:54:00:00:00:11", 1, "host-a")
	f.mustGuest("g2", "nginx-slave", "net1", "192.0.2.12", "52:54:00:00:00:12", 1, "host-a")
	f.mustGuest("g5", "third", "net1", "192.0.2.15", "52:54:00:00:00:15", 1, "host-b")
	f.nginx()
	f.mustJoin("nginx", "g5")
	third := inventory.Caller{Addr: ip("192.0.2.15")}
	owner := func() registry.Owner {
		t.Helper()
		var o registry.Owner
		if err := storeB.View(ctx, func(tx registry.Tx) error { var err error; o, err = inventory.Owner(tx, "ig-nginx"); return err }); err != nil {
			t.Fatal(err)
		}
		return o
	}
	if res, err := svcA.Claim(ctx, master, transition(1, "MASTER")); err != nil || res.Owner != "nginx-master" || res.Queued {
		t.Fatalf("first claim with the lease: %+v, %v", res, err)
	}
	// The slave's agent has its metadata from host A (so A knows it as a
	// member when it has to queue its claim).
	if _, err := svcA.Metadata(ctx, slave); err != nil {
		t.Fatal(err)
	}
	before := owner()

	// A's lease ends; nobody else has written since A's last read.
	other := openEtcdStore(t, endpoints, prefix).Client()
	if _, err := other.Revoke(ctx, leaseA.ID()); err != nil {
		t.Fatal(err)
	}
	if err := swapOwnerTo(ctx, storeA, "g2"); !errors.Is(err, registry.ErrLeaseLost) {
		t.Fatalf("owner swap by the host without a lease: %v, want registry.ErrLeaseLost", err)
	}
	stale := transition(1, "MASTER")
	stale.At = time.Now().UTC()
	res, err := svcA.Claim(ctx, slave, stale)
	if err != nil || !res.Queued || !res.Accepted {
		t.Fatalf("claim on the host without a lease: %+v, %v; want accepted and queued", res, err)
	}
	if queueA.Len() != 1 {
		t.Fatalf("queue holds %d claims, want 1", queueA.Len())
	}
	if o := owner(); o != before {
		t.Fatalf("owner %+v after the fenced claim, want %+v unchanged", o, before)
	}
	if n, err := svcA.ReplayQueue(ctx); !errors.Is(err, registry.ErrLeaseLost) || n != 0 || queueA.Len() != 1 {
		t.Fatalf("replay without a lease: %d, %v, Len %d; want nothing replayed, ErrLeaseLost", n, err, queueA.Len())
	}

	// Host B, with etcd, moves the owner to the third member.
	if res, err := svcB.Claim(ctx, master, transition(2, "BACKUP")); err != nil || res.Queued {
		t.Fatalf("master's BACKUP on host B: %+v, %v", res, err)
	}
	newer := transition(1, "MASTER")
	newer.At = time.Now().UTC()
	if res, err := svcB.Claim(ctx, third, newer); err != nil || res.Owner != "third" {
		t.Fatalf("newer claim on host B: %+v, %v", res, err)
	}
	moved := owner()

	// A is back with a new lease: the queued claim is replayed and
	// recorded, and the newer owner stands.
	old := leaseA.ID()
	if err := leaseA.Acquire(ctx); err != nil || leaseA.ID() == old {
		t.Fatalf("new lease %x (old %x): %v", int64(leaseA.ID()), int64(old), err)
	}
	n, err := svcA.ReplayQueue(ctx)
	if err != nil || n != 1 || queueA.Len() != 0 {
		t.Fatalf("replay with the new lease: %d, %v, Len %d", n, err, queueA.Len())
	}
	if o := owner(); o.GuestID != "g5" || o.Revision != moved.Revision {
		t.Fatalf("owner after the stale replay = %+v, want g5 (third) at revision %d", o, moved.Revision)
	}
	var rs registry.RoleState
	err = storeB.View(ctx, func(tx registry.Tx) error {
		var err error
		rs, err = registry.Get[registry.RoleState](tx, registry.RoleKey("ig-nginx", "g2"))
		return err
	})
	if err != nil || rs.Seq != 1 || rs.Role != vrrp.RoleMaster {
		t.Fatalf("the slave's replayed claim not recorded: %+v, %v", rs, err)
	}
}
