package packaging

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/state"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// upgradeFixture is the state database of package short ("agent" or
// "hostsync") written by commit 612e5b9 (see testdata/upgrade/README.md).
func upgradeFixture(t *testing.T, short string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "upgrade", short+"-612e5b9.db"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkUpgradedState checks the state database at path after a package
// upgrade: the package left it byte for byte as it was, and the new
// version opens it with its history, outbox, owners and allocations
// intact (on a copy, so the root's file stays as the package left it).
func checkUpgradedState(t *testing.T, short, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("after upgrade: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("after upgrade: %s was changed by the package", path)
	}
	cp := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(cp, got, 0o600); err != nil {
		t.Fatal(err)
	}
	switch short {
	case "agent":
		s, err := state.OpenStore(cp, state.StoreOptions{Outbox: true})
		if err != nil {
			t.Fatalf("after upgrade: the new agent cannot open the old %s: %v", path, err)
		}
		defer s.Close()
		hist, err := s.History(0)
		if err != nil || len(hist) != 7 {
			t.Errorf("after upgrade: history %d entries (%v), want 7", len(hist), err)
		}
		if n, err := s.PendingCount(); err != nil || n != 3 {
			t.Errorf("after upgrade: outbox %d entries (%v), want 3", n, err)
		}
		if s.Epoch() == "" {
			t.Error("after upgrade: the agent database has no epoch")
		}
	case "hostsync":
		s, err := registry.OpenBolt(cp, time.Second)
		if err != nil {
			t.Fatalf("after upgrade: the new hostsync cannot open the old %s: %v", path, err)
		}
		defer s.Close()
		err = s.View(context.Background(), func(tx registry.Tx) error {
			for group, owner := range map[string]string{"ig-nginx": "g2", "ig-web": "g3"} {
				g, err := registry.Get[registry.Group](tx, group)
				if err != nil {
					return err
				}
				if g.VIP == nil || g.EIP == nil || len(g.Members) != 2 {
					t.Errorf("after upgrade: group %s = %+v, want 2 members, a VIP and an EIP", group, g)
				}
				o, err := registry.Get[registry.Owner](tx, group)
				if err != nil {
					return err
				}
				if o.GuestID != owner {
					t.Errorf("after upgrade: owner of %s = %q, want %s", group, o.GuestID, owner)
				}
			}
			leases, err := registry.List[registry.Lease](tx, "")
			if err != nil {
				return err
			}
			kinds := map[registry.LeaseKind]int{}
			for _, l := range leases {
				kinds[l.Kind]++
			}
			if kinds[registry.LeaseVIP] != 2 || kinds[registry.LeaseEIP] != 2 {
				t.Errorf("after upgrade: leases %v, want 2 VIP and 2 EIP", kinds)
			}
			return nil
		})
		if err != nil {
			t.Errorf("after upgrade: read the registry: %v", err)
		}
	default:
		t.Fatalf("no state check for package %q", short)
	}
}
