package registry

import (
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// copyFixture copies testdata/upgrade/hostsync-612e5b9.db into a temp dir.
func copyFixture(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "upgrade", "hostsync-612e5b9.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hostsync.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenBoltDamaged is issue 11, defect 4 for hostsync.db: 256 random
// bytes over page 2 or 3, or a zero-length file, is an error naming the
// file and what to do (boltutil.ErrDamaged), not a panic or a silently
// new registry.
func TestOpenBoltDamaged(t *testing.T) {
	testutil.RequireDamagedRefused(t, copyFixture, func(path string) (io.Closer, error) {
		return OpenBolt(path, time.Second)
	})
}

// TestOpenBoltFrom612e5b9 opens a hostsync.db written by commit 612e5b9
// (see testdata/upgrade/README.md): groups, members, VIPs, EIPs, leases,
// owners and role records are intact, and a role record gains an epoch.
func TestOpenBoltFrom612e5b9(t *testing.T) {
	ctx := context.Background()
	s, err := OpenBolt(copyFixture(t), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.View(ctx, func(tx Tx) error {
		groups, err := List[Group](tx, "")
		if err != nil {
			return err
		}
		if len(groups) != 2 {
			t.Fatalf("groups = %+v, want nginx and web", groups)
		}
		for _, tc := range []struct {
			id, vip, eip, owner string
			members             []string
		}{
			{"ig-nginx", "192.0.2.10", "203.0.113.5", "g2", []string{"g1", "g2"}},
			{"ig-web", "", "203.0.113.9", "g3", []string{"g3", "g4"}},
		} {
			g, err := Get[Group](tx, tc.id)
			if err != nil {
				return err
			}
			if g.VIP == nil || g.EIP == nil || (tc.vip != "" && g.VIP.Address.String() != tc.vip) || g.EIP.Address.String() != tc.eip {
				t.Errorf("%s: VIP %+v EIP %+v, want VIP %s EIP %s", tc.id, g.VIP, g.EIP, tc.vip, tc.eip)
				continue
			}
			if len(g.Members) != len(tc.members) || g.Members[0].GuestID != tc.members[0] || g.Members[1].GuestID != tc.members[1] {
				t.Errorf("%s: members %+v, want %v", tc.id, g.Members, tc.members)
			}
			o, err := Get[Owner](tx, tc.id)
			if err != nil {
				return err
			}
			if o.GuestID != tc.owner || o.Revision == 0 {
				t.Errorf("%s: owner %+v, want %s", tc.id, o, tc.owner)
			}
			for _, l := range []struct {
				network string
				addr    netip.Addr
				kind    LeaseKind
			}{{g.VIP.NetworkID, g.VIP.Address, LeaseVIP}, {"pub", g.EIP.Address, LeaseEIP}} {
				lease, err := Get[Lease](tx, LeaseKey(l.network, l.addr))
				if err != nil {
					t.Errorf("%s: lease of %s: %v", tc.id, l.addr, err)
				} else if lease.Kind != l.kind {
					t.Errorf("%s: lease %+v, want kind %s", tc.id, lease, l.kind)
				}
			}
			e, err := Get[EIP](tx, g.EIP.EIPID)
			if err != nil || e.Group != tc.id {
				t.Errorf("%s: EIP %+v, %v; want bound to the group", tc.id, e, err)
			}
		}
		guests, err := List[Guest](tx, "")
		if err != nil {
			return err
		}
		if len(guests) != 4 {
			t.Errorf("%d guests, want 4", len(guests))
		}
		rs, err := Get[RoleState](tx, RoleKey("ig-nginx", "g1"))
		if err != nil {
			return err
		}
		if rs.Seq != 4 || rs.Role != vrrp.RoleBackup || rs.Epoch != "" {
			t.Errorf("role of g1 = %+v, want BACKUP at seq 4 without an epoch", rs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The new field is written and read back.
	err = s.Update(ctx, func(tx Tx) error {
		return Put(tx, RoleState{Group: "ig-nginx", GuestID: "g1", Role: vrrp.RoleMaster, Seq: 1, Epoch: "0123456789abcdef"})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(ctx, func(tx Tx) error {
		rs, err := Get[RoleState](tx, RoleKey("ig-nginx", "g1"))
		if err == nil && (rs.Epoch != "0123456789abcdef" || rs.Seq != 1) {
			t.Errorf("role of g1 = %+v after writing epoch and seq 1", rs)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
