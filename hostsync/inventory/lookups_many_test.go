package inventory_test

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// groupByVIPScan is how GroupByVIP found a group before the VIP index:
// every group decoded and compared. It stays here as the benchmark's
// "before".
func groupByVIPScan(tx registry.Tx, vip netip.Addr) (registry.Group, bool, error) {
	groups, err := registry.List[registry.Group](tx, "")
	if err != nil {
		return registry.Group{}, false, err
	}
	for _, g := range groups {
		if g.VIP != nil && (g.VIP.Address == vip || (vip.Is6() && g.VIP.Address6 == vip)) {
			return g, true, nil
		}
	}
	return registry.Group{}, false, nil
}

func manyStore(tb testing.TB, n int) registry.Store {
	tb.Helper()
	st, err := registry.OpenBolt(filepath.Join(tb.TempDir(), "hostsync.db"), time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	hstest.ManyBulk(tb, tb.Context(), st, n)
	return st
}

// stripVIPIndex removes every VIP index entry: the registry as an older
// hostsync wrote it (leases only).
func stripVIPIndex(tb testing.TB, st registry.Store) {
	tb.Helper()
	err := st.Update(tb.Context(), func(tx registry.Tx) error {
		var keys []string
		err := tx.ForEach(registry.BucketByVIP, "", func(k string, _ []byte) error { keys = append(keys, k); return nil })
		for _, k := range keys {
			if err := tx.Delete(registry.BucketByVIP, k); err != nil {
				return err
			}
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// TestGroupByVIPMany: over 1,000 groups in four networks, GroupByVIP
// finds every group by its VIP as the scan does — through the index, and
// through the leases once the index is gone (a registry written before
// it) or wrong (an entry naming another group) — and refuses
// (ErrForbidden) a member's address, an EIP, a free address of a guest
// network and an address in no network.
func TestGroupByVIPMany(t *testing.T) {
	const n = 1_000
	st := manyStore(t, n)
	check := func(t *testing.T) {
		err := st.View(t.Context(), func(tx registry.Tx) error {
			// The scan's answers, all in one pass.
			groups, err := registry.List[registry.Group](tx, "")
			if err != nil || len(groups) != n {
				t.Fatalf("%d groups, %v", len(groups), err)
			}
			want := map[netip.Addr]string{}
			for _, g := range groups {
				want[g.VIP.Address] = g.ID
			}
			for i := range n {
				vip := hstest.ManyVIP(i)
				got, err := inventory.GroupByVIP(tx, vip)
				if err != nil {
					t.Fatalf("GroupByVIP(%s): %v", vip, err)
				}
				if got.ID != want[vip] || got.ID != "ig-"+hstest.ManyGroup(i) {
					t.Fatalf("GroupByVIP(%s) = %s, the scan finds %s", vip, got.ID, want[vip])
				}
			}
			for _, a := range []netip.Addr{
				hstest.ManyMember(3, 0), hstest.ManyEIP(3),
				netip.MustParseAddr("198.18.15.250"), // in many-3, no lease
				netip.MustParseAddr("203.0.113.9"),   // in no network
			} {
				if g, err := inventory.GroupByVIP(tx, a); !errors.Is(err, inventory.ErrForbidden) {
					t.Errorf("GroupByVIP(%s) = %q, %v; want ErrForbidden", a, g.ID, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Run("index", check)
	t.Run("wrong index entries", func(t *testing.T) {
		err := st.Update(t.Context(), func(tx registry.Tx) error {
			for _, e := range []registry.VIPIndex{
				{Address: hstest.ManyVIP(5), GroupID: "ig-" + hstest.ManyGroup(6)},
				{Address: hstest.ManyVIP(7), GroupID: "ig-gone"},
				{Address: netip.MustParseAddr("198.18.15.250"), GroupID: "ig-" + hstest.ManyGroup(3)},
			} {
				if err := registry.Put(tx, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		check(t)
	})
	t.Run("no index", func(t *testing.T) {
		stripVIPIndex(t, st)
		check(t)
	})
}

// BenchmarkGroupByVIP is the lookup every observed GARP, ARP reply or NA
// makes (up to three times: member check, split check, claim), at 1,
// 1,000 and 10,000 groups (250 per network): lookup=index reads the VIP
// index; lookup=lease the same registry without its index (as an older
// hostsync wrote it: networks listed, the lease read); lookup=scan
// decodes every group, as GroupByVIP did before the index.
func BenchmarkGroupByVIP(b *testing.B) {
	for _, n := range []int{1, 1_000, 10_000} {
		st := manyStore(b, n)
		for _, lookup := range []string{"index", "scan", "lease"} {
			if lookup == "lease" {
				stripVIPIndex(b, st)
			}
			b.Run(fmt.Sprintf("groups=%d/lookup=%s", n, lookup), func(b *testing.B) {
				k := 0
				for b.Loop() {
					i := (k * 7919) % n
					k++
					err := st.View(b.Context(), func(tx registry.Tx) error {
						var g registry.Group
						var err error
						if lookup == "scan" {
							g, _, err = groupByVIPScan(tx, hstest.ManyVIP(i))
						} else {
							g, err = inventory.GroupByVIP(tx, hstest.ManyVIP(i))
						}
						if err == nil && g.ID != "ig-"+hstest.ManyGroup(i) {
							err = fmt.Errorf("group %d: found %q", i, g.ID)
						}
						return err
					})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkAttachNetwork attaches a VIP to a group of network many-0 and
// detaches it again, at 1, 1,000 and 10,000 groups in the registry: the
// cost of attach-network's rules (the address allocated from the
// network's leases, the VRID picked among the network's groups).
func BenchmarkAttachNetwork(b *testing.B) {
	for _, n := range []int{1, 1_000, 10_000} {
		b.Run(fmt.Sprintf("groups=%d", n), func(b *testing.B) {
			st := manyStore(b, n)
			inv := inventory.New(st, inventory.Options{})
			ctx := b.Context()
			ids := []string{"bench-a", "bench-b"}
			for m, id := range ids {
				_, err := inv.RegisterGuest(ctx, api.GuestRegister{ID: id, Name: id, NetworkID: "many-0",
					Address: netip.AddrFrom4([4]byte{198, 18, 3, byte(200 + m)}), MAC: fmt.Sprintf("52:54:02:00:00:%02x", m), NICs: 1, Host: "host-a"})
				if err != nil {
					b.Fatal(err)
				}
			}
			if _, err := inv.CreateGroup(ctx, api.GroupCreate{Name: "bench"}); err != nil {
				b.Fatal(err)
			}
			if _, err := inv.Join(ctx, "ig-bench", ids); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := inv.AttachNetwork(ctx, "ig-bench", api.AttachNetwork{}); err != nil {
					b.Fatal(err)
				}
				if _, err := inv.DetachNetwork(ctx, "ig-bench", api.DetachNetwork{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestFindGroup: by id, by name (a group created without an id, whose id
// is "ig-NAME", and one with its own id), never a group whose id only
// looks like "ig-NAME".
func TestFindGroup(t *testing.T) {
	st := manyStore(t, 1)
	inv := inventory.New(st, inventory.Options{})
	for _, req := range []api.GroupCreate{
		{Name: "web"},                  // ig-web
		{Name: "db", ID: "grp-7"},      // its own id
		{Name: "cache", ID: "ig-mail"}, // an id that looks like another name's
		{Name: "mail", ID: "grp-9"},
	} {
		if _, err := inv.CreateGroup(t.Context(), req); err != nil {
			t.Fatal(err)
		}
	}
	err := st.View(t.Context(), func(tx registry.Tx) error {
		for ref, want := range map[string]string{
			"web": "ig-web", "ig-web": "ig-web", "db": "grp-7", "grp-7": "grp-7",
			"cache": "ig-mail", "ig-mail": "ig-mail", "mail": "grp-9", hstest.ManyGroup(0): "ig-" + hstest.ManyGroup(0),
		} {
			g, err := inventory.FindGroup(tx, ref)
			if err != nil || g.ID != want {
				t.Errorf("FindGroup(%q) = %q, %v; want %s", ref, g.ID, err, want)
			}
		}
		for _, ref := range []string{"nope", "ig-db", "ig-cache"} {
			if g, err := inventory.FindGroup(tx, ref); !errors.Is(err, inventory.ErrNotFound) {
				t.Errorf("FindGroup(%q) = %q, %v; want ErrNotFound", ref, g.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
