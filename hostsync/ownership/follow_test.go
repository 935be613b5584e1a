package ownership

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// reconcilingBackend is an inspectingBackend that also counts Reconcile
// calls (eip.Reconciler), failing them with err when set.
type reconcilingBackend struct {
	inspectingBackend
	rmu        sync.Mutex
	reconciles int
	rerr       error
}

func (b *reconcilingBackend) Reconcile(context.Context) error {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	b.reconciles++
	return b.rerr
}

func (b *reconcilingBackend) count() int {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	return b.reconciles
}

func (b *reconcilingBackend) setErr(err error) {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	b.rerr = err
}

var _ eip.Reconciler = (*reconcilingBackend)(nil)

// TestReconcileAtStartAndAfterWatchGap: the first apply that goes ahead
// and the first after the registry watch was re-established are followed
// by the backend's Reconcile; ordinary changes and a plain reapply are
// not; an apply held by the data-plane guard reconciles nothing; a
// failed Reconcile fails the apply and is retried with the next.
func TestReconcileAtStartAndAfterWatchGap(t *testing.T) {
	b := &reconcilingBackend{}
	b.state = eip.State{Table: true, Rules: 3, Mappings: 1, Routes: 1} // holds mappings
	f := newFixture(t, func(o *Options) { o.Backend = b })

	// No group yet: the empty set is held, and nothing is reconciled.
	if err := f.svc.Reapply(f.ctx); err != nil {
		t.Fatal(err)
	}
	if n := b.applies(); n != 0 {
		t.Fatalf("%d applies on a registry without group, want the empty set held", n)
	}
	if n := b.count(); n != 0 {
		t.Fatalf("%d reconciles while the apply is held, want 0", n)
	}

	f.nginx() // the first apply that goes ahead
	if n := b.count(); n != 1 {
		t.Fatalf("%d reconciles after the first apply, want 1", n)
	}
	if err := f.svc.Reapply(f.ctx); err != nil {
		t.Fatal(err)
	}
	if n := b.count(); n != 1 {
		t.Fatalf("%d reconciles after a plain reapply, want still 1", n)
	}

	ctx, cancel := context.WithCancel(f.ctx)
	w := &fakeWatcher{fn: make(chan func([]registry.Change))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		FollowWatch(ctx, f.svc.Engine, w, testLogger(t))
	}()
	defer func() { cancel(); <-done }()
	fn := <-w.fn

	applies := b.applies()
	fn([]registry.Change{{Bucket: registry.BucketGroups, Key: "ig-nginx"}})
	waitFor(t, "the change applied", func() bool { return b.applies() > applies })
	if n := b.count(); n != 1 {
		t.Fatalf("%d reconciles after another host's change, want still 1", n)
	}

	fn(nil) // re-established after a gap
	waitFor(t, "the reconcile after the gap", func() bool { return b.count() == 2 })

	b.setErr(errors.New("netlink: no buffer space"))
	fn(nil)
	waitFor(t, "the failing reconcile", func() bool { return b.count() == 3 })
	b.setErr(nil)
	if err := f.svc.Reapply(f.ctx); err != nil {
		t.Fatal(err)
	}
	if n := b.count(); n < 4 {
		t.Fatalf("%d reconciles, want the failed one retried by the next apply", n)
	}
}
