package ownership

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// followRetry is how soon a failed apply after a watched change is
// retried (as Run's reconcile loop retries one).
const followRetry = 5 * time.Second

// followBuckets are the records the data plane and the VIP list are made
// of: a change to any of them by another host re-applies the data plane
// (an owner change alone only moves that group's mapping).
var followBuckets = map[registry.Bucket]bool{
	registry.BucketGroups: true, registry.BucketOwners: true,
	registry.BucketGuests: true, registry.BucketEIPs: true,
}

// followWork is what the watch asked the data plane to do: the complete
// apply, or moves of the groups whose owner another host changed.
type followWork struct {
	mu    sync.Mutex
	full  bool
	moves map[string]bool // group ids
}

func (w *followWork) take() (full bool, moves []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	full, w.full = w.full, false
	if !full {
		moves = slices.Sorted(maps.Keys(w.moves))
	}
	clear(w.moves)
	return full, moves
}

// FollowWatch keeps this process in step with the other hosts and
// gateways of a shared registry. When another process moves a VIP (its
// owner record changed) the data plane follows that group alone, as a
// local move does (Engine.moveDataPlane: at most one route written), and
// so does the owner gauge (one group read again); when it changes a
// group, guest or EIP, this process re-reads the VIP list, re-applies
// the complete data plane and re-reads every owner; after the watch was
// (re-)established that apply also reconciles the backend
// (eip.Reconciler), which reads the data plane back and repairs drift.
// Watch callbacks only record and signal; one worker applies, reading the
// latest state each time, so a burst of changes costs at most one round
// more. A failed round is retried (as a complete apply) after
// followRetry. It returns when ctx ends.
func FollowWatch(ctx context.Context, e *Engine, w registry.Watcher, log *slog.Logger) {
	work := &followWork{moves: map[string]bool{}}
	kick := make(chan struct{}, 1)
	signal := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		retry := time.NewTimer(0)
		retry.Stop()
		defer retry.Stop()
		for {
			failed := false
			select {
			case <-ctx.Done():
				return
			case <-kick:
			case <-retry.C:
				failed = true
			}
			full, moves := work.take()
			var err error
			switch {
			case full || failed:
				err = e.refreshVIPs(ctx)
				if err == nil {
					err = errors.Join(e.Reapply(ctx), e.refreshOwners(ctx))
				}
			default:
				for _, g := range moves {
					err = errors.Join(err, e.moveDataPlane(ctx, g), e.refreshOwner(ctx, g))
				}
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("data plane will be retried", "op", "follow", "in", followRetry, "err", err)
				retry.Reset(followRetry)
			}
		}
	}()
	err := w.Watch(ctx, func(changes []registry.Change) {
		if changes == nil {
			// (Re-)established: changes may have been missed, and the
			// data plane may have drifted meanwhile, so the apply this
			// signals also reads the data plane back and repairs it.
			e.noteChange()
			e.needReconcile()
			work.mu.Lock()
			work.full = true
			work.mu.Unlock()
			signal()
			return
		}
		for _, c := range changes {
			if metadataBuckets[c.Bucket] {
				e.noteChange() // waiting guests read their documents again
				break
			}
		}
		wanted := false
		work.mu.Lock()
		for _, c := range changes {
			switch {
			case c.Bucket == registry.BucketOwners:
				work.moves[c.Key] = true
				wanted = true
			case followBuckets[c.Bucket]:
				work.full = true
				wanted = true
			}
		}
		work.mu.Unlock()
		if wanted {
			signal()
		}
	})
	if err != nil && ctx.Err() == nil {
		log.Error("registry watch stopped", "op", "follow", "err", err)
	}
	<-done
}
