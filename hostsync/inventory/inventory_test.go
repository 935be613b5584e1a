package inventory

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// TestCommittedChangeIsNotFailedByItsFollower checks that an admin
// operation that committed returns success even when what follows the
// registry (the engine) fails to follow: the change stands and the
// failure is the follower's, logged, not the operation's.
func TestCommittedChangeIsNotFailedByItsFollower(t *testing.T) {
	store, err := registry.OpenBolt(filepath.Join(t.TempDir(), "hostsync.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	var got []Change
	inv := New(store, Options{Changed: func(_ context.Context, c Change) error {
		got = append(got, c)
		return errors.New("engine: registry read failed")
	}})
	ctx := t.Context()
	if _, err := inv.CreateGroup(ctx, api.GroupCreate{Name: "nginx"}); err != nil {
		t.Fatal(err)
	}
	if err := inv.DeleteGroup(ctx, "nginx"); err != nil {
		t.Fatalf("DeleteGroup = %v after the delete committed, want nil", err)
	}
	if _, err := inv.ShowGroup(ctx, "nginx"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ShowGroup after delete = %v, want ErrNotFound", err)
	}
	if len(got) != 1 {
		t.Fatalf("Changed called %d times, want once: %+v", len(got), got)
	}
	want := Change{Op: "instancegroup-delete", Group: got[0].Group, OwnerGone: true, VIPs: true}
	if diff := cmp.Diff(want, got[0]); diff != "" || got[0].Group == "" {
		t.Errorf("Changed (-want +got):\n%s", diff)
	}
}
