package ownership

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
)

// BenchmarkOwnerGauge measures what keeping vipkeeper_hostsync_group_owner
// costs per move in a registry (bbolt, hstest.ManyBulk) of 1 and of 10,000
// groups. path=claim: one move of group 0 through claims (its member
// leaves MASTER, the other takes it), with metrics off and on; the gauge
// is set from what the claim committed, without a read. path=follow:
// another host's move as FollowWatch follows it, the group read again
// (refreshOwner). path=complete: the complete read at start and after a
// watch gap (refreshOwners), which a move never costs.
func BenchmarkOwnerGauge(b *testing.B) {
	for _, n := range []int{1, 10_000} {
		for _, path := range []string{"claim/metrics=off", "claim/metrics=on", "follow", "complete"} {
			b.Run(fmt.Sprintf("groups=%d/path=%s", n, path), func(b *testing.B) {
				benchOwnerGauge(b, n, path)
			})
		}
	}
}

func benchOwnerGauge(b *testing.B, n int, path string) {
	ctx := context.Background()
	store := openStore(b)
	hstest.ManyBulk(b, ctx, store, n)
	var m *Metrics
	if path != "claim/metrics=off" {
		var err error
		if m, err = NewMetrics(prometheus.NewRegistry()); err != nil {
			b.Fatal(err)
		}
	}
	e, err := New(ctx, store, Options{Logger: slog.New(slog.DiscardHandler), Metrics: m})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	members := []inventory.Caller{{Addr: hstest.ManyMember(0, 0)}, {Addr: hstest.ManyMember(0, 1)}}
	seq := []uint64{0, 0}
	claim := func(i int, role string) {
		seq[i]++
		if _, err := e.Claim(ctx, members[i], hstest.Transition(seq[i], role)); err != nil {
			b.Fatal(err)
		}
	}
	claim(0, "MASTER") // group 0 has an owner
	k := 0
	for b.Loop() {
		switch path {
		case "follow":
			err = e.refreshOwner(ctx, "ig-"+hstest.ManyGroup(0))
		case "complete":
			err = e.refreshOwners(ctx)
		default:
			from := k % 2
			claim(from, "BACKUP")
			claim(1-from, "MASTER")
		}
		if err != nil {
			b.Fatal(err)
		}
		k++
	}
	if m != nil {
		// The series shows where the moves left the owner.
		want := hstest.ManyGroup(0) + "-a"
		if path == "claim/metrics=on" && k%2 == 1 {
			want = hstest.ManyGroup(0) + "-b"
		}
		m.mu.Lock()
		got := m.owners["ig-"+hstest.ManyGroup(0)].member
		m.mu.Unlock()
		if got != want {
			b.Fatalf("owner series of group 0: %q, want %q", got, want)
		}
	}
}
