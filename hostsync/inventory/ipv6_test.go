package inventory

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// newInv6 is an inventory with a dual-stack guest network net6
// (192.0.2.0/24 and 2001:db8::/64, IPv6 range ::10–::12), an IPv4-only
// network net4, an EIP network and group nginx with two members on net6.
func newInv6(t *testing.T) (*Inventory, registry.Store) {
	t.Helper()
	store, err := registry.OpenBolt(filepath.Join(t.TempDir(), "hostsync.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	inv := New(store, Options{Intn: func(n int) int { return n - 1 }})
	ctx := t.Context()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(inv.CreateNetwork(ctx, api.NetworkCreate{ID: "net6", CIDR: netip.MustParsePrefix("192.0.2.0/24"), VPCID: "vpc1",
		CIDR6: netip.MustParsePrefix("2001:db8::/64"), Range6Start: netip.MustParseAddr("2001:db8::10"), Range6End: netip.MustParseAddr("2001:db8::12")}))
	must(inv.CreateNetwork(ctx, api.NetworkCreate{ID: "net4", CIDR: netip.MustParsePrefix("198.51.100.0/24")}))
	must(inv.CreateNetwork(ctx, api.NetworkCreate{ID: "pub", CIDR: netip.MustParsePrefix("203.0.113.0/24"), Kind: "eip"}))
	must(inv.RegisterGuest(ctx, api.GuestRegister{ID: "g-m", Name: "m", NICs: 1, NetworkID: "net6", Address: netip.MustParseAddr("192.0.2.11"), MAC: "52:54:00:00:02:0b"}))
	must(inv.RegisterGuest(ctx, api.GuestRegister{ID: "g-s", Name: "s", NICs: 1, NetworkID: "net6", Address: netip.MustParseAddr("192.0.2.12"), MAC: "52:54:00:00:02:0c"}))
	must(inv.CreateGroup(ctx, api.GroupCreate{Name: "nginx"}))
	must(inv.Join(ctx, "nginx", []string{"m", "s"}))
	return inv, store
}

func TestNetworkCreateIPv6(t *testing.T) {
	inv, _ := newInv6(t)
	ctx := t.Context()
	n, err := inv.CreateNetwork(ctx, api.NetworkCreate{ID: "d", CIDR: netip.MustParsePrefix("198.51.100.128/25"), CIDR6: netip.MustParsePrefix("2001:db8:1::/64")})
	if err == nil || !errors.Is(err, ErrNetworkOverlap) {
		t.Fatalf("overlapping IPv4 subnet: %v %+v", err, n)
	}
	_, err = inv.CreateNetwork(ctx, api.NetworkCreate{ID: "d", CIDR: netip.MustParsePrefix("192.0.2.0/25"), CIDR6: netip.MustParsePrefix("2001:db8:1::5/64")})
	if !errors.Is(err, ErrNetworkOverlap) {
		t.Fatalf("overlapping with net6's IPv4: %v", err)
	}
	// Defaults: the prefix masked, the range from ::2 to the last address.
	store, err := registry.OpenBolt(filepath.Join(t.TempDir(), "d.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	inv2 := New(store, Options{})
	n, err = inv2.CreateNetwork(ctx, api.NetworkCreate{ID: "d", CIDR: netip.MustParsePrefix("192.0.2.0/24"), CIDR6: netip.MustParsePrefix("2001:db8:1::5/64")})
	if err != nil {
		t.Fatal(err)
	}
	if n.CIDR6 != netip.MustParsePrefix("2001:db8:1::/64") || n.Range6Start != netip.MustParseAddr("2001:db8:1::2") ||
		n.Range6End != netip.MustParseAddr("2001:db8:1:0:ffff:ffff:ffff:ffff") {
		t.Errorf("defaults: %s %s-%s", n.CIDR6, n.Range6Start, n.Range6End)
	}
	if _, err := inv2.CreateNetwork(ctx, api.NetworkCreate{ID: "e", CIDR: netip.MustParsePrefix("198.51.100.0/24"), CIDR6: netip.MustParsePrefix("2001:db8:1:0:8000::/65")}); !errors.Is(err, ErrNetworkOverlap) {
		t.Errorf("overlapping IPv6 prefix: %v, want ErrNetworkOverlap", err)
	}

	for _, tc := range []struct {
		name  string
		req   api.NetworkCreate
		field string
	}{
		{"IPv4 in cidr6", api.NetworkCreate{CIDR6: netip.MustParsePrefix("198.51.100.0/24")}, "cidr6"},
		{"prefix /32", api.NetworkCreate{CIDR6: netip.MustParsePrefix("2001:db8::/32")}, "cidr6"},
		{"prefix /124", api.NetworkCreate{CIDR6: netip.MustParsePrefix("2001:db8::/124")}, "cidr6"},
		{"link-local", api.NetworkCreate{CIDR6: netip.MustParsePrefix("fe80::/64")}, "cidr6"},
		{"eip network", api.NetworkCreate{Kind: "eip", CIDR6: netip.MustParsePrefix("2001:db8:2::/64")}, "cidr6"},
		{"range start outside", api.NetworkCreate{CIDR6: netip.MustParsePrefix("2001:db8:2::/64"), Range6Start: netip.MustParseAddr("2001:db8:3::1")}, "range6_start"},
		{"range start anycast", api.NetworkCreate{CIDR6: netip.MustParsePrefix("2001:db8:2::/64"), Range6Start: netip.MustParseAddr("2001:db8:2::")}, "range6_start"},
		{"range end before start", api.NetworkCreate{CIDR6: netip.MustParsePrefix("2001:db8:2::/64"), Range6Start: netip.MustParseAddr("2001:db8:2::9"), Range6End: netip.MustParseAddr("2001:db8:2::8")}, "range6_start"},
		{"range without prefix", api.NetworkCreate{Range6Start: netip.MustParseAddr("2001:db8:2::9")}, "range6_start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.ID, tc.req.CIDR = "x", netip.MustParsePrefix("203.0.113.0/24")
			_, err := inv2.CreateNetwork(ctx, tc.req)
			var ie *InvalidError
			if !errors.As(err, &ie) || ie.Field != tc.field {
				t.Fatalf("err = %v, want an InvalidError naming %s", err, tc.field)
			}
		})
	}
}

func TestAttachNetworkIPv6(t *testing.T) {
	ctx := context.Background()
	v6 := netip.MustParseAddr

	t.Run("both families at once, designated", func(t *testing.T) {
		inv, store := newInv6(t)
		v, err := inv.AttachNetwork(ctx, "nginx", api.AttachNetwork{IPAddr: v6("192.0.2.10"), IP6Addr: v6("2001:db8::11"), RequireDesignatedIP: true})
		if err != nil {
			t.Fatal(err)
		}
		if v.VIP.Address != netip.MustParsePrefix("192.0.2.10/24") || v.VIP.Address6 != netip.MustParsePrefix("2001:db8::11/64") {
			t.Errorf("instancegroup-show VIP = %+v", v.VIP)
		}
		md, err := inv.GroupMetadata(ctx, "nginx")
		if err != nil {
			t.Fatal(err)
		}
		if md.VIP6 != netip.MustParsePrefix("2001:db8::11/64") || md.VIP != netip.MustParsePrefix("192.0.2.10/24") {
			t.Errorf("metadata vip %s vip6 %s", md.VIP, md.VIP6)
		}
		err = store.View(ctx, func(tx registry.Tx) error {
			for _, a := range []netip.Addr{v6("192.0.2.10"), v6("2001:db8::11")} {
				g, err := GroupByVIP(tx, a)
				if err != nil || g.Name != "nginx" {
					t.Errorf("GroupByVIP(%s) = %s, %v", a, g.Name, err)
				}
				if _, err := registry.Get[registry.Lease](tx, registry.LeaseKey("net6", a)); err != nil {
					t.Errorf("lease of %s: %v", a, err)
				}
				if idx, err := registry.Get[registry.VIPIndex](tx, a.String()); err != nil || idx.GroupID != "ig-nginx" {
					t.Errorf("VIP index entry of %s: %+v, %v", a, idx, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// One VIP per family: neither family again.
		if _, err := inv.AttachNetwork(ctx, "nginx", api.AttachNetwork{IP6Addr: v6("2001:db8::12")}); !errors.Is(err, ErrOneVIPPerGroup) {
			t.Errorf("second IPv6 VIP: %v, want ErrOneVIPPerGroup", err)
		}
		if _, err := inv.AttachNetwork(ctx, "nginx", api.AttachNetwork{IPAddr: v6("192.0.2.20")}); !errors.Is(err, ErrOneVIPPerGroup) {
			t.Errorf("second IPv4 VIP: %v, want ErrOneVIPPerGroup", err)
		}
		// EIPs stay IPv4: the EIP maps to the IPv4 VIP.
		v, err = inv.CreateGroupEIP(ctx, "nginx", api.CreateGroupEIP{})
		if err != nil || !v.EIP.Address.Is4() {
			t.Fatalf("create-eip: %+v, %v", v.EIP, err)
		}
		if _, err := inv.DissociateEIP(ctx, "nginx"); err != nil {
			t.Fatal(err)
		}
		// Detaching (named by either address) releases both addresses.
		if _, err := inv.DetachNetwork(ctx, "nginx", api.DetachNetwork{IPAddr: v6("2001:db8::11")}); err != nil {
			t.Fatal(err)
		}
		err = store.View(ctx, func(tx registry.Tx) error {
			for _, a := range []netip.Addr{v6("192.0.2.10"), v6("2001:db8::11")} {
				if _, err := registry.Get[registry.Lease](tx, registry.LeaseKey("net6", a)); !errors.Is(err, registry.ErrNotFound) {
					t.Errorf("lease of %s after detach: %v", a, err)
				}
				if _, err := registry.Get[registry.VIPIndex](tx, a.String()); !errors.Is(err, registry.ErrNotFound) {
					t.Errorf("VIP index entry of %s after detach: %v", a, err)
				}
				if g, err := GroupByVIP(tx, a); !errors.Is(err, ErrForbidden) {
					t.Errorf("GroupByVIP(%s) after detach = %s, %v", a, g.Name, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("IPv6 added later, allocated", func(t *testing.T) {
		inv, _ := newInv6(t)
		if _, err := inv.AttachNetwork(ctx, "nginx", api.AttachNetwork{IPAddr: v6("192.0.2.10")}); err != nil {
			t.Fatal(err)
		}
		md, err := inv.GroupMetadata(ctx, "nginx")
		if err != nil || md.VIP6.IsValid() {
			t.Fatalf("IPv4-only metadata has vip6 %s (%v)", md.VIP6, err)
		}
		v, err := inv.AttachNetwork(ctx, "nginx", api.AttachNetwork{RequireIPv6: true, AllocDir: api.AllocStepDown})
		if err != nil {
			t.Fatal(err)
		}
		if v.VIP.Address6 != netip.MustParsePrefix("2001:db8::12/64") || v.VIP.Address != netip.MustParsePrefix("192.0.2.10/24") {
			t.Errorf("VIP after adding IPv6 stepdown: %+v", v.VIP)
		}
	})

	t.Run("allocation directions and a full range", func(t *testing.T) {
		inv, _ := newInv6(t)
		v, err := inv.AttachNetwork(ctx, "nginx", api.AttachNetwork{RequireIPv6: true})
		if err != nil {
			t.Fatal(err)
		}
		if v.VIP.Address6.Addr() != v6("2001:db8::10") {
			t.Errorf("stepup gave %s, want the range's first", v.VIP.Address6)
		}
		if _, err := inv.CreateGroup(ctx, api.GroupCreate{Name: "web"}); err != nil {
			t.Fatal(err)
		}
		// Intn returns n-1: the random pick is the range's last.
		v, err = inv.AttachNetwork(ctx, "web", api.AttachNetwork{NetworkID: "net6", RequireIPv6: true, AllocDir: api.AllocRandom})
		if err != nil {
			t.Fatal(err)
		}
		if v.VIP.Address6.Addr() != v6("2001:db8::12") {
			t.Errorf("random gave %s", v.VIP.Address6)
		}
		if _, err := inv.CreateGroup(ctx, api.GroupCreate{Name: "db"}); err != nil {
			t.Fatal(err)
		}
		// The designated ::10 is taken: another one without
		// require_designated_ip, a refusal with it.
		if _, err := inv.AttachNetwork(ctx, "db", api.AttachNetwork{NetworkID: "net6", IP6Addr: v6("2001:db8::10"), RequireDesignatedIP: true}); !errors.Is(err, ErrAddressUnavailable) {
			t.Errorf("designated taken: %v, want ErrAddressUnavailable", err)
		}
		v, err = inv.AttachNetwork(ctx, "db", api.AttachNetwork{NetworkID: "net6", IP6Addr: v6("2001:db8::10")})
		if err != nil || v.VIP.Address6.Addr() != v6("2001:db8::11") {
			t.Fatalf("taken, not required: %+v %v", v.VIP, err)
		}
		if _, err := inv.CreateGroup(ctx, api.GroupCreate{Name: "mq"}); err != nil {
			t.Fatal(err)
		}
		if _, err := inv.AttachNetwork(ctx, "mq", api.AttachNetwork{NetworkID: "net6", RequireIPv6: true}); !errors.Is(err, ErrNetworkFull) {
			t.Errorf("full IPv6 range: %v, want ErrNetworkFull", err)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		inv, _ := newInv6(t)
		for _, tc := range []struct {
			name  string
			req   api.AttachNetwork
			field string
			rule  error
		}{
			{"IPv6 in ip_addr", api.AttachNetwork{IPAddr: v6("2001:db8::10")}, "ip_addr", nil},
			{"IPv4 in ip6_addr", api.AttachNetwork{IP6Addr: v6("192.0.2.10")}, "ip6_addr", nil},
			{"link-local ip6_addr", api.AttachNetwork{IP6Addr: v6("fe80::10")}, "ip6_addr", nil},
			{"require designated without an address", api.AttachNetwork{RequireDesignatedIP: true}, "require_designated_ip", nil},
			{"outside the prefix", api.AttachNetwork{IP6Addr: v6("2001:db8:9::10")}, "", ErrAddressNotInNetwork},
			{"outside the range, required", api.AttachNetwork{IP6Addr: v6("2001:db8::99"), RequireDesignatedIP: true}, "", ErrAddressUnavailable},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := inv.AttachNetwork(ctx, "nginx", tc.req)
				if tc.rule != nil {
					if !errors.Is(err, tc.rule) {
						t.Fatalf("err = %v, want %v", err, tc.rule)
					}
					return
				}
				var ie *InvalidError
				if !errors.As(err, &ie) || ie.Field != tc.field {
					t.Fatalf("err = %v, want an InvalidError naming %s", err, tc.field)
				}
			})
		}
		// A network without an IPv6 prefix has no IPv6 VIP to give.
		if _, err := inv.CreateGroup(ctx, api.GroupCreate{Name: "v4only"}); err != nil {
			t.Fatal(err)
		}
		if _, err := inv.AttachNetwork(ctx, "v4only", api.AttachNetwork{NetworkID: "net4", RequireIPv6: true}); !errors.Is(err, ErrNoIPv6Prefix) {
			t.Errorf("IPv6 from an IPv4-only network: %v, want ErrNoIPv6Prefix", err)
		}
		// Nothing was written by the refusals.
		v, err := inv.ShowGroup(ctx, "nginx")
		if err != nil || v.VIP != nil {
			t.Errorf("group after refusals: %+v %v", v.VIP, err)
		}
	})
}
