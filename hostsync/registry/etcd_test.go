package registry

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipkeeper/vipkeeper/harness/etcdtest"
)

// testEtcd is the embedded etcd server shared by the tests of this binary;
// every test works under its own key prefix.
var testEtcd *etcdtest.Server

func TestMain(m *testing.M) {
	srv, err := etcdtest.Start("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "embedded etcd:", err)
		os.Exit(1)
	}
	testEtcd = srv
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

// etcdClient returns a new client of the shared server, closed at cleanup:
// each client stands for one host.
func etcdClient(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := testEtcd.Client()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

var prefixSeq atomic.Uint64

// testPrefix is a fresh key prefix for one test.
func testPrefix(tb testing.TB) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(tb.Name())
	return fmt.Sprintf("/t/%s-%d/", name, prefixSeq.Add(1))
}

func openEtcdTest(tb testing.TB, cli *clientv3.Client, prefix string) *Etcd {
	tb.Helper()
	s, err := NewEtcd(cli, EtcdOptions{Prefix: prefix})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// forEachStore runs a contract test against every Store implementation.
func forEachStore(t *testing.T, test func(t *testing.T, s Store)) {
	t.Run("bbolt", func(t *testing.T) { test(t, openTest(t)) })
	t.Run("etcd", func(t *testing.T) { test(t, openEtcdTest(t, etcdClient(t), testPrefix(t))) })
}

// forEachShared runs test, per implementation, with two Stores on one registry: for
// etcd two clients (two hosts), for bbolt one database twice.
func forEachShared(t *testing.T, test func(t *testing.T, a, b Store)) {
	t.Run("bbolt", func(t *testing.T) { s := openTest(t); test(t, s, s) })
	t.Run("etcd", func(t *testing.T) {
		p := testPrefix(t)
		test(t, openEtcdTest(t, etcdClient(t), p), openEtcdTest(t, etcdClient(t), p))
	})
}

func TestUpdateSeesItsOwnWrites(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		lease := func(a string) Lease {
			return Lease{NetworkID: "n1", Address: netip.MustParseAddr(a), Kind: LeaseGuest, Holder: a}
		}
		if err := s.Update(ctx, func(tx Tx) error {
			for _, a := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
				if err := Put(tx, lease(a)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		err := s.Update(ctx, func(tx Tx) error {
			if err := tx.Delete(BucketLeases, LeaseKey("n1", netip.MustParseAddr("192.0.2.2"))); err != nil {
				return err
			}
			l := lease("192.0.2.3")
			l.Holder = "changed"
			if err := Put(tx, l); err != nil {
				return err
			}
			if err := Put(tx, lease("192.0.2.0")); err != nil {
				return err
			}
			ls, err := List[Lease](tx, "n1/")
			if err != nil {
				return err
			}
			var got []string
			for _, l := range ls {
				got = append(got, l.Holder)
			}
			if want := "192.0.2.0 192.0.2.1 changed"; strings.Join(got, " ") != want {
				t.Errorf("List inside the Update = %q, want %q", strings.Join(got, " "), want)
			}
			if _, err := Get[Lease](tx, LeaseKey("n1", netip.MustParseAddr("192.0.2.2"))); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get of a key deleted in this Update: %v, want ErrNotFound", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestConcurrentHosts runs owner compare-and-swaps and address
// allocations from many goroutines through two stores on one registry
// (two hosts): no update may be lost and no address handed out twice.
func TestConcurrentHosts(t *testing.T) {
	const workers, rounds = 8, 10
	forEachShared(t, func(t *testing.T, a, b Store) {
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			s := a
			if w%2 == 1 {
				s = b
			}
			wg.Go(func() {
				for r := range rounds {
					// Owner: read, then swap expecting what was read,
					// again on a mismatch (as the claims engine does).
					for {
						err := s.Update(ctx, func(tx Tx) error {
							cur, err := Get[Owner](tx, "ig")
							if err != nil && !errors.Is(err, ErrNotFound) {
								return err
							}
							_, err = SwapOwner(tx, cur.Revision, Owner{Group: "ig", GuestID: fmt.Sprintf("w%d", w)})
							return err
						})
						if errors.Is(err, ErrRevisionMismatch) {
							continue
						}
						if err != nil {
							errs <- err
							return
						}
						break
					}
					// Allocation: the lowest free address of the network.
					err := s.Update(ctx, func(tx Tx) error {
						ls, err := List[Lease](tx, "n1/")
						if err != nil {
							return err
						}
						used := map[netip.Addr]bool{}
						for _, l := range ls {
							used[l.Address] = true
						}
						a := netip.MustParseAddr("192.0.2.1")
						for used[a] {
							a = a.Next()
						}
						return Put(tx, Lease{NetworkID: "n1", Address: a, Kind: LeaseGuest, Holder: fmt.Sprintf("w%d-%d", w, r)})
					})
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		err := a.View(ctx, func(tx Tx) error {
			o, err := Get[Owner](tx, "ig")
			if err != nil {
				return err
			}
			if o.Revision != workers*rounds {
				t.Errorf("owner revision %d after %d swaps: updates were lost", o.Revision, workers*rounds)
			}
			ls, err := List[Lease](tx, "n1/")
			if err != nil {
				return err
			}
			holders := map[string]bool{}
			for _, l := range ls {
				holders[l.Holder] = true
			}
			if len(ls) != workers*rounds || len(holders) != workers*rounds {
				t.Errorf("%d leases by %d holders after %d allocations: an address was handed out twice", len(ls), len(holders), workers*rounds)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestEtcdStaleWriterRetries: host A's Update reads the owner, host B
// moves it before A commits; A's commit must fail its compare, and fn run
// again on the new owner, so A never overwrites B's newer record.
func TestEtcdStaleWriterRetries(t *testing.T) {
	ctx := context.Background()
	p := testPrefix(t)
	a, b := openEtcdTest(t, etcdClient(t), p), openEtcdTest(t, etcdClient(t), p)
	swap := func(s Store, guest string) (Owner, error) {
		var o Owner
		err := s.Update(ctx, func(tx Tx) error {
			cur, err := Get[Owner](tx, "ig")
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			o, err = SwapOwner(tx, cur.Revision, Owner{Group: "ig", GuestID: guest})
			return err
		})
		return o, err
	}
	if _, err := swap(a, "g1"); err != nil {
		t.Fatal(err)
	}
	runs := 0
	var seen []uint64
	err := a.Update(ctx, func(tx Tx) error {
		runs++
		cur, err := Get[Owner](tx, "ig")
		if err != nil {
			return err
		}
		seen = append(seen, cur.Revision)
		if runs == 1 {
			// Host B moves the owner between A's read and A's commit.
			if _, err := swap(b, "g2"); err != nil {
				return err
			}
		}
		// A decides only when the owner is still the one it first saw.
		if cur.GuestID != "g1" {
			return nil
		}
		_, err = SwapOwner(tx, cur.Revision, Owner{Group: "ig", GuestID: "g3"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 2 || seen[0] != 1 || seen[1] != 2 {
		t.Fatalf("fn ran %d times seeing revisions %v, want 2 runs seeing [1 2]", runs, seen)
	}
	err = b.View(ctx, func(tx Tx) error {
		o, err := Get[Owner](tx, "ig")
		if err == nil && (o.GuestID != "g2" || o.Revision != 2) {
			t.Errorf("owner %+v: the stale writer overwrote the newer owner", o)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestEtcdViewIsASnapshot: a View keeps reading at the revision of its
// first read while another host writes.
func TestEtcdViewIsASnapshot(t *testing.T) {
	ctx := context.Background()
	p := testPrefix(t)
	a, b := openEtcdTest(t, etcdClient(t), p), openEtcdTest(t, etcdClient(t), p)
	put := func(id, name string) {
		t.Helper()
		if err := b.Update(ctx, func(tx Tx) error { return Put(tx, Group{ID: id, Name: name}) }); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "old")
	put("b", "old")
	err := a.View(ctx, func(tx Tx) error {
		ga, err := Get[Group](tx, "a")
		if err != nil {
			return err
		}
		put("a", "new")
		put("b", "new")
		gb, err := Get[Group](tx, "b")
		if err != nil {
			return err
		}
		gs, err := List[Group](tx, "")
		if err != nil {
			return err
		}
		if ga.Name != "old" || gb.Name != "old" || len(gs) != 2 || gs[0].Name != "old" || gs[1].Name != "old" {
			t.Errorf("View saw a=%s b=%s list=%+v, want all old", ga.Name, gb.Name, gs)
		}
		if err := tx.Put(BucketGroups, "c", Group{ID: "c"}); err == nil {
			t.Error("Put in a View succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEtcdWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := testPrefix(t)
	a, b := openEtcdTest(t, etcdClient(t), p), openEtcdTest(t, etcdClient(t), p)
	batches := make(chan []Change, 16)
	done := make(chan error, 1)
	go func() { done <- a.Watch(ctx, func(c []Change) { batches <- c }) }()
	next := func() []Change {
		t.Helper()
		select {
		case c := <-batches:
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("no watch callback within 10s")
			return nil
		}
	}
	if c := next(); c != nil {
		t.Fatalf("first callback %+v, want the empty one of an established watch", c)
	}
	if err := b.Update(ctx, func(tx Tx) error { return Put(tx, RoleState{Group: "ig", GuestID: "g1"}) }); err != nil {
		t.Fatal(err)
	}
	if c := next(); len(c) != 1 || c[0].Bucket != BucketRoles || c[0].Key != "ig/g1" || c[0].Deleted {
		t.Fatalf("changes %+v, want the put of roles ig/g1 only (no _rev key)", c)
	}
	err := b.Update(ctx, func(tx Tx) error {
		if err := Put(tx, Owner{Group: "ig", GuestID: "g1", Revision: 1}); err != nil {
			return err
		}
		return tx.Delete(BucketRoles, "ig/g1")
	})
	if err != nil {
		t.Fatal(err)
	}
	got := next()
	want := []Change{{Bucket: BucketRoles, Key: "ig/g1", Deleted: true}, {Bucket: BucketOwners, Key: "ig"}}
	if len(got) != 2 {
		t.Fatalf("changes %+v, want %+v", got, want)
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			if g.Bucket == w.Bucket && g.Key == w.Key && g.Deleted == w.Deleted && g.Revision > 0 {
				found = true
			}
		}
		if !found {
			t.Errorf("changes %+v lack %+v", got, w)
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

func TestEtcdClosed(t *testing.T) {
	s := openEtcdTest(t, etcdClient(t), testPrefix(t))
	s.Close()
	if err := s.View(context.Background(), func(Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("View after Close: %v, want ErrClosed", err)
	}
	if err := s.Update(context.Background(), func(Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Update after Close: %v, want ErrClosed", err)
	}
}

func TestNewEtcdPrefix(t *testing.T) {
	for _, p := range []string{"vipkeeper/", "/vipkeeper", "x"} {
		if _, err := NewEtcd(nil, EtcdOptions{Prefix: p}); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
}

func TestOpenEtcdTLSFiles(t *testing.T) {
	tests := []struct {
		name string
		cfg  EtcdConfig
	}{
		{"no endpoints", EtcdConfig{}},
		{"missing CA", EtcdConfig{Endpoints: []string{"https://192.0.2.1:2379"}, CAFile: "/nonexistent/ca.pem"}},
		{"cert without key", EtcdConfig{Endpoints: []string{"https://192.0.2.1:2379"}, CertFile: "/nonexistent/c.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := OpenEtcd(tt.cfg); err == nil {
				s.Close()
				t.Fatal("OpenEtcd succeeded")
			}
		})
	}
}

// TestEtcdUnreachable stops the shared server for a while: an Update
// fails within the request timeout instead of hanging, writes nothing,
// and a watch set up before the outage delivers the changes made after
// the server is back.
func TestEtcdUnreachable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := testPrefix(t)
	a, err := NewEtcd(etcdClient(t), EtcdOptions{Prefix: p, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b := openEtcdTest(t, etcdClient(t), p)
	batches := make(chan []Change, 16)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		a.Watch(ctx, func(c []Change) {
			select {
			case batches <- c:
			case <-ctx.Done():
			}
		})
	}()
	defer func() { cancel(); <-watched }()
	select {
	case <-batches:
	case <-time.After(10 * time.Second):
		t.Fatal("watch not established")
	}

	testEtcd.Pause()
	resumed := false
	defer func() {
		if !resumed {
			testEtcd.Resume()
		}
	}()
	start := time.Now()
	err = a.Update(ctx, func(tx Tx) error { return Put(tx, Owner{Group: "ig", GuestID: "lost", Revision: 1}) })
	if err == nil {
		t.Fatal("Update with etcd down succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Update with etcd down took %s, want about the 300ms request timeout", d)
	}
	if err := testEtcd.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true

	if err := b.Update(ctx, func(tx Tx) error { return Put(tx, Owner{Group: "ig", GuestID: "g2", Revision: 1}) }); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case c := <-batches:
			if len(c) == 1 && c[0].Bucket == BucketOwners && c[0].Key == "ig" {
				err := b.View(ctx, func(tx Tx) error {
					o, err := Get[Owner](tx, "ig")
					if err == nil && o.GuestID != "g2" {
						t.Errorf("owner %+v: the failed Update wrote", o)
					}
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				return
			}
		case <-deadline:
			t.Fatal("the watch did not deliver the change made after the outage")
		}
	}
}

// TestEtcdFence: a host's writes are fenced with its lease. While the
// lease lives they commit (and a conflict still only runs fn again); once
// it is gone — revoked, expired, or the host key taken by another lease —
// an owner compare-and-swap whose reads are all still current commits
// nothing and fails with ErrLeaseLost (also ErrUnavailable); a new lease
// lets the host write again.
func TestEtcdFence(t *testing.T) {
	ctx := context.Background()
	swap := func(s Store, guest string) error {
		return s.Update(ctx, func(tx Tx) error {
			cur, err := Get[Owner](tx, "ig")
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			_, err = SwapOwner(tx, cur.Revision, Owner{Group: "ig", GuestID: guest})
			return err
		})
	}
	owner := func(t *testing.T, s Store) Owner {
		t.Helper()
		var o Owner
		if err := s.View(ctx, func(tx Tx) error { var err error; o, err = Get[Owner](tx, "ig"); return err }); err != nil {
			t.Fatal(err)
		}
		return o
	}
	cases := []struct {
		name string
		// lose ends host A's lease through another client (another host
		// or etcd itself).
		lose func(t *testing.T, a *Etcd, other *clientv3.Client, lease clientv3.LeaseID)
		ttl  time.Duration
	}{
		{"revoked", func(t *testing.T, _ *Etcd, other *clientv3.Client, lease clientv3.LeaseID) {
			if _, err := other.Revoke(ctx, lease); err != nil {
				t.Fatal(err)
			}
		}, time.Minute},
		{"expired", func(t *testing.T, a *Etcd, other *clientv3.Client, lease clientv3.LeaseID) {
			// No keepalive: the lease ends after its TTL, deleting the key.
			deadline := time.Now().Add(20 * time.Second)
			for {
				resp, err := other.Get(ctx, a.HostKey("host-a"))
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Kvs) == 0 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatal("the lease did not expire")
				}
				time.Sleep(50 * time.Millisecond)
			}
		}, 2 * time.Second},
		{"taken by another lease", func(t *testing.T, a *Etcd, other *clientv3.Client, lease clientv3.LeaseID) {
			g, err := other.Grant(ctx, 60)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := other.Put(ctx, a.HostKey("host-a"), "host-a", clientv3.WithLease(g.ID)); err != nil {
				t.Fatal(err)
			}
		}, time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := testPrefix(t)
			other := etcdClient(t)
			a, b := openEtcdTest(t, etcdClient(t), p), openEtcdTest(t, other, p)
			a.SetFence(a.HostKey("host-a"), 0)
			if err := swap(a, "g0"); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("write before the first lease: %v, want ErrLeaseLost", err)
			}
			lease, prev, err := a.AcquireHostLease(ctx, "host-a", tc.ttl)
			if err != nil || prev != 0 {
				t.Fatalf("AcquireHostLease: %x (previous %x), %v", lease, prev, err)
			}
			if key, l := a.Fence(); key != p+"_hosts/host-a" || l != lease {
				t.Fatalf("Fence = %s %x, want %s_hosts/host-a %x", key, l, p, lease)
			}
			if err := swap(a, "g1"); err != nil {
				t.Fatalf("write with a live lease: %v", err)
			}
			// A conflict under the fence runs fn again, as without it.
			runs := 0
			err = a.Update(ctx, func(tx Tx) error {
				runs++
				cur, err := Get[Owner](tx, "ig")
				if err != nil {
					return err
				}
				if runs == 1 {
					if err := swap(b, "g2"); err != nil {
						return err
					}
				}
				_, err = SwapOwner(tx, cur.Revision, Owner{Group: "ig", GuestID: "g3"})
				return err
			})
			if err != nil || runs != 2 {
				t.Fatalf("conflicting write under the fence: %v after %d runs, want success after 2", err, runs)
			}
			select {
			case <-a.FenceLost():
				t.Fatal("FenceLost signalled while the lease lives")
			default:
			}

			tc.lose(t, a, other, lease)
			before := owner(t, b)
			err = swap(a, "stale")
			if !errors.Is(err, ErrLeaseLost) || !errors.Is(err, ErrUnavailable) {
				t.Fatalf("owner swap without the lease: %v, want ErrLeaseLost and ErrUnavailable", err)
			}
			if o := owner(t, b); o != before {
				t.Fatalf("owner %+v after the fenced swap, want %+v unchanged", o, before)
			}
			select {
			case <-a.FenceLost():
			default:
				t.Fatal("FenceLost not signalled")
			}

			again, _, err := a.AcquireHostLease(ctx, "host-a", time.Minute)
			if err != nil || again == lease {
				t.Fatalf("new lease %x (old %x), %v", again, lease, err)
			}
			if held, err := a.HostLeaseHeld(ctx, "host-a", again); err != nil || !held {
				t.Fatalf("HostLeaseHeld(new lease) = %v, %v", held, err)
			}
			if err := swap(a, "g4"); err != nil {
				t.Fatalf("write with the new lease: %v", err)
			}
			if o := owner(t, b); o.GuestID != "g4" || o.Revision != before.Revision+1 {
				t.Fatalf("owner %+v, want g4 at revision %d", o, before.Revision+1)
			}
			if err := a.ReleaseHostLease(again); err != nil {
				t.Fatal(err)
			}
			if held, err := a.HostLeaseHeld(ctx, "host-a", again); err != nil || held {
				t.Fatalf("HostLeaseHeld after release = %v, %v", held, err)
			}
		})
	}
}

// TestEtcdWatchIgnoresHostKeys: lease keys of hosts are no records.
func TestEtcdWatchIgnoresHostKeys(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := testPrefix(t)
	a := openEtcdTest(t, etcdClient(t), p)
	batches := make(chan []Change, 16)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		a.Watch(ctx, func(c []Change) {
			select {
			case batches <- c:
			case <-ctx.Done():
			}
		})
	}()
	defer func() { cancel(); <-watched }()
	next := func() []Change {
		t.Helper()
		select {
		case c := <-batches:
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("no watch batch")
			return nil
		}
	}
	if c := next(); c != nil {
		t.Fatalf("first batch %+v, want the established signal", c)
	}
	lease, _, err := a.AcquireHostLease(ctx, "host-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer a.ReleaseHostLease(lease)
	if err := a.Update(ctx, func(tx Tx) error { return Put(tx, Group{ID: "g", Name: "g"}) }); err != nil {
		t.Fatal(err)
	}
	if c := next(); len(c) != 1 || c[0].Bucket != BucketGroups {
		t.Fatalf("batch %+v, want only the group (no host key)", c)
	}
}
