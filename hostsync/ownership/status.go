package ownership

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// Status counts the registry and reports the engine's counters, with the
// sentence systemd shows (STATUS=) and `vipctl hostsync-status` prints.
func (s *Engine) Status(ctx context.Context) (api.HostsyncStatus, error) {
	var st api.HostsyncStatus
	err := s.store.View(ctx, func(tx registry.Tx) error {
		count := func(b registry.Bucket) (int, error) {
			n := 0
			err := tx.ForEach(b, "", func(string, []byte) error { n++; return nil })
			return n, err
		}
		var err error
		if st.Networks, err = count(registry.BucketNetworks); err != nil {
			return err
		}
		if st.Guests, err = count(registry.BucketGuests); err != nil {
			return err
		}
		if st.EIPs, err = count(registry.BucketEIPs); err != nil {
			return err
		}
		groups, err := registry.List[registry.Group](tx, "")
		if err != nil {
			return err
		}
		st.Groups = len(groups)
		for _, g := range groups {
			if g.VIP == nil {
				continue
			}
			st.VIPs++
			o, err := inventory.Owner(tx, g.ID)
			if err != nil {
				return err
			}
			if o.GuestID != "" {
				st.Owned++
			}
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	s.mu.Lock()
	st.LastMove = s.stats.lastMove
	st.Moves = s.stats.moves
	st.Claims = s.stats.claims
	st.Rejected = s.stats.rejected
	st.SplitBrains = s.stats.splitBrains
	if s.stats.lastSplit != nil {
		sb := *s.stats.lastSplit
		st.LastSplitBrain = &sb
	}
	st.LastApply = s.stats.lastApply
	st.LastApplyError = s.stats.lastApplyErr
	st.DataPlaneHeld = s.stats.dataPlaneHeld
	st.RecentMoves = append([]api.Move(nil), s.stats.moveLog...)
	s.mu.Unlock()
	st.Sentence = Sentence(st, s.now())
	return st, nil
}

// RecentMoves returns the last moves (at most 64, oldest first), as
// Status does, without reading the registry.
func (s *Engine) RecentMoves() []api.Move {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]api.Move(nil), s.stats.moveLog...)
}

// Sentence is the one-line status: "3 groups, 2 VIPs, last move 12 s ago",
// plus split brains and a data-plane failure when there are any.
func Sentence(st api.HostsyncStatus, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %s", plural(st.Groups, "group", "groups"), plural(st.VIPs, "VIP", "VIPs"))
	if st.LastMove.IsZero() {
		b.WriteString(", no move yet")
	} else {
		ago := max(now.Sub(st.LastMove), 0)
		fmt.Fprintf(&b, ", last move %s ago", humanDuration(ago))
	}
	if st.SplitBrains > 0 {
		fmt.Fprintf(&b, ", %s", plural(int(st.SplitBrains), "split brain", "split brains"))
	}
	if st.LastApplyError != "" {
		b.WriteString(", data plane failing")
	}
	if st.DataPlaneHeld != "" {
		b.WriteString(", data plane held (registry empty)")
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// humanDuration: "12 s", "5 min", "3 h", "2 d".
func humanDuration(d time.Duration) string {
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%d s", int(d/time.Second))
	case d < 2*time.Hour:
		return fmt.Sprintf("%d min", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", int(d/time.Hour))
	}
	return fmt.Sprintf("%d d", int(d/(24*time.Hour)))
}
