package ownership

import (
	"context"
	"errors"
	"fmt"

	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// The data-plane guard. A registry that holds no group has never held a
// mapping: a group cannot be deleted while it has an EIP. Such a registry
// is what a mistyped db_path (a new, empty file) or an empty etcd prefix
// looks like, and applying its empty set would remove every EIP mapping
// the data plane still carries (the whole nftables table and the VIP
// routes). So while the registry holds no group, an empty set is not
// applied to a data plane that holds something, or that cannot tell
// (a backend that is not an eip.Inspector); the apply is held, logged,
// shown in the status and counted as dataplane_applies_total{result="held"}.
// Options.AllowEmptyDataPlane (flag -allow-empty-dataplane, key
// [dataplane] allow_empty) lets it through. A registry with groups but no
// EIP is applied as it is: its EIPs were dissociated on purpose.

// holdEmpty reports why the apply of ms must be held, or "" when it may
// go ahead. It reads the registry and asks the backend.
func (s *Engine) holdEmpty(ctx context.Context, ms []eip.Mapping) string {
	if s.allowEmpty || len(ms) > 0 {
		return ""
	}
	hasGroup := false
	err := s.store.View(ctx, func(tx registry.Tx) error {
		return tx.ForEach(registry.BucketGroups, "", func(string, []byte) error {
			hasGroup = true
			return errStopIteration
		})
	})
	if err != nil && !errors.Is(err, errStopIteration) {
		return fmt.Sprintf("the registry could not be read (%v), so an empty set is not applied", err)
	}
	if hasGroup {
		return ""
	}
	const confirm = "; if the registry is meant to be empty, restart with -allow-empty-dataplane (or [dataplane] allow_empty = true) once"
	in, ok := s.backend.(eip.Inspector)
	if !ok {
		return "the registry holds no group and the data-plane backend cannot tell what it programmed: the empty set is not sent" + confirm
	}
	st, err := in.Programmed(ctx)
	if err != nil {
		return fmt.Sprintf("the registry holds no group and the data plane could not be read back (%v): nothing is removed", err) + confirm
	}
	if st.Empty() {
		return ""
	}
	return fmt.Sprintf("the registry holds no group but the data plane holds mappings (%s): they are kept, check db_path or etcd.prefix", st) + confirm
}

// errStopIteration ends a ForEach early.
var errStopIteration = errors.New("hostsync: stop iteration")

// recordHold keeps the reason for the status, counts the held apply and
// logs when the reason changes (the reconcile loop asks every interval).
func (s *Engine) recordHold(reason string) {
	s.mu.Lock()
	changed := s.stats.dataPlaneHeld != reason
	s.stats.dataPlaneHeld = reason
	s.mu.Unlock()
	if reason == "" {
		if changed {
			s.log.Info("data plane no longer held", "op", "apply")
		}
		return
	}
	s.metrics.held()
	if changed {
		s.log.Error("data plane held: not applying an empty set", "op", "apply", "reason", reason)
		return
	}
	s.log.Debug("data plane still held", "op", "apply", "reason", reason)
}
