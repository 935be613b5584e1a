package ownership

import (
	"context"
	"log/slog"
	"time"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// followRetry is how soon a failed apply after a watched change is
// retried (as Run's reconcile loop retries one).
const followRetry = 5 * time.Second

// followBuckets are the records the data plane and the VIP list are made
// of: a change to any of them by another host re-applies the data plane.
var followBuckets = map[registry.Bucket]bool{
	registry.BucketGroups: true, registry.BucketOwners: true,
	registry.BucketGuests: true, registry.BucketEIPs: true,
}

// FollowWatch keeps this process in step with the other hosts and gateways of
// a shared registry: whenever another process changes a group, guest,
// EIP or owner, it re-reads the VIP list and re-applies the complete data
// plane; after the watch was (re-)established that apply also reconciles
// the backend (eip.Reconciler), which reads the data plane back and
// repairs drift. Watch callbacks only signal; one apply runs at a time
// and, since each reads the latest state, a burst of changes costs at
// most one apply more. A failed apply is retried after followRetry. It returns when ctx
// ends.
func FollowWatch(ctx context.Context, e *Engine, w registry.Watcher, log *slog.Logger) {
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
			select {
			case <-ctx.Done():
				return
			case <-kick:
			case <-retry.C:
			}
			err := e.refreshVIPs(ctx)
			if err == nil {
				err = e.Reapply(ctx)
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
			signal()
			return
		}
		for _, c := range changes {
			if metadataBuckets[c.Bucket] {
				e.noteChange() // waiting guests read their documents again
				break
			}
		}
		for _, c := range changes {
			if followBuckets[c.Bucket] {
				signal()
				return
			}
		}
	})
	if err != nil && ctx.Err() == nil {
		log.Error("registry watch stopped", "op", "follow", "err", err)
	}
	<-done
}
