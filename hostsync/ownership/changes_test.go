package ownership

import (
	"context"
	"sync"
	"testing"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestChangeBroadcast: one change wakes every waiter holding the channel
// and counts one generation; the next channel stays open until the next
// change.
func TestChangeBroadcast(t *testing.T) {
	b := newChangeBroadcast()
	gen, ch := b.current()
	var wg sync.WaitGroup
	woken := make(chan struct{}, 100)
	for range 100 {
		wg.Go(func() {
			<-ch
			woken <- struct{}{}
		})
	}
	b.fire()
	wg.Wait()
	if len(woken) != 100 {
		t.Fatalf("%d of 100 waiters woken", len(woken))
	}
	gen2, ch2 := b.current()
	if gen2 != gen+1 || closed(ch2) {
		t.Fatalf("after one change: generation %d (was %d), next channel closed %v", gen2, gen, closed(ch2))
	}
}

// TestChangesFromAdmin: an admin operation committed through the
// inventory (Changed) is broadcast; a claim moving the owner, which no
// metadata document holds, is not.
func TestChangesFromAdmin(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	gen, ch := f.svc.Changes()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	if f.owner("ig-nginx").GuestID != "g1" {
		t.Fatal("the claim did not move the owner")
	}
	if g, _ := f.svc.Changes(); g != gen || closed(ch) {
		t.Fatalf("a claim was broadcast as a change (generation %d, was %d)", g, gen)
	}
	if _, err := f.svc.Join(f.ctx, "nginx", []string{"g5"}); err != nil {
		t.Fatal(err)
	}
	if g, _ := f.svc.Changes(); g == gen || !closed(ch) {
		t.Fatalf("a join was not broadcast (generation %d, was %d)", g, gen)
	}
}

// fakeWatcher hands FollowWatch's callback to the test.
type fakeWatcher struct {
	fn chan func([]registry.Change)
}

func (w *fakeWatcher) Watch(ctx context.Context, fn func([]registry.Change)) error {
	w.fn <- fn
	<-ctx.Done()
	return ctx.Err()
}

// TestChangesFromWatch: another host's change to the records metadata is
// built from (groups, guests, networks), and a re-established watch, are
// broadcast; a change of owners or roles alone is not.
func TestChangesFromWatch(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	ctx, cancel := context.WithCancel(f.ctx)
	w := &fakeWatcher{fn: make(chan func([]registry.Change))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		FollowWatch(ctx, f.svc.Engine, w, testLogger(t))
	}()
	defer func() { cancel(); <-done }()
	fn := <-w.fn

	for _, tc := range []struct {
		name    string
		changes []registry.Change
		want    bool
	}{
		{"established", nil, true},
		{"owner", []registry.Change{{Bucket: registry.BucketOwners, Key: "ig-nginx"}}, false},
		{"roles", []registry.Change{{Bucket: registry.BucketRoles, Key: "ig-nginx/g1"}}, false},
		{"group", []registry.Change{{Bucket: registry.BucketOwners, Key: "ig-nginx"}, {Bucket: registry.BucketGroups, Key: "ig-nginx"}}, true},
		{"guest", []registry.Change{{Bucket: registry.BucketGuests, Key: "g5"}}, true},
		{"network", []registry.Change{{Bucket: registry.BucketNetworks, Key: "net1"}}, true},
	} {
		gen, ch := f.svc.Changes()
		fn(tc.changes)
		g, _ := f.svc.Changes()
		if got := g != gen && closed(ch); got != tc.want {
			t.Errorf("%s: broadcast %v, want %v", tc.name, got, tc.want)
		}
	}
}
