package hstest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// Many groups: the registry of a large host or gateway, built through the
// admin operations (every rule checked, as in production). RFC 2544's
// benchmarking range, used only inside the caller's own registry and
// network namespaces, gives the addresses beyond the documentation
// ranges' 762:
//
//	many-K  guest networks 198.18.4K.0/22 in VPC vpc-many (K = i/ManyPerNetwork)
//	manypub 198.19.0.0/16, kind eip
//
// Group i ("big-i") has members big-i-a (host-a) and big-i-b (host-b),
// VIP ManyVIP(i) and EIP ManyEIP(i).
const (
	// ManyPerNetwork is the number of groups per guest network (VRIDs are
	// unique among a network's groups: at most 255).
	ManyPerNetwork = 250
	// ManyMax is the largest count Many builds.
	ManyMax = 16_000
)

func manyBase(i int) netip.Addr {
	k := i / ManyPerNetwork
	return netip.AddrFrom4([4]byte{198, 18, byte(4 * k), 0})
}

func manyAddr(i, m int) netip.Addr {
	b := manyBase(i).As4()
	off := 2 + 3*(i%ManyPerNetwork) + m // 2..751: never network, gateway (.1) or broadcast
	b[2] += byte(off >> 8)
	b[3] = byte(off)
	return netip.AddrFrom4(b)
}

// ManyMember is the address of member m (0: big-i-a, 1: big-i-b) of group i.
func ManyMember(i, m int) netip.Addr { return manyAddr(i, m) }

// ManyVIP is group i's VIP.
func ManyVIP(i int) netip.Addr { return manyAddr(i, 2) }

// ManyEIP is group i's EIP.
func ManyEIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte((i + 2) >> 8), byte(i + 2)}) // from .0.2: .0.1 is the gateway
}

// ManyGroup is group i's name.
func ManyGroup(i int) string { return fmt.Sprintf("big-%d", i) }

// Many creates groups n groups as described above through inv (an
// Inventory without a Changed hook, so that building them costs no data
// plane work).
func Many(tb testing.TB, ctx context.Context, inv *inventory.Inventory, n int) {
	tb.Helper()
	if n > ManyMax {
		tb.Fatalf("hstest.Many: %d groups, at most %d", n, ManyMax)
	}
	must := func(err error) {
		if err != nil {
			tb.Helper()
			tb.Fatal(err)
		}
	}
	_, err := inv.CreateNetwork(ctx, api.NetworkCreate{ID: "manypub", CIDR: netip.MustParsePrefix("198.19.0.0/16"), Kind: "eip"})
	must(err)
	for i := range n {
		if i%ManyPerNetwork == 0 {
			_, err := inv.CreateNetwork(ctx, api.NetworkCreate{
				ID: fmt.Sprintf("many-%d", i/ManyPerNetwork), CIDR: netip.PrefixFrom(manyBase(i), 22), VPCID: "vpc-many",
			})
			must(err)
		}
		name := ManyGroup(i)
		ids := []string{name + "-a", name + "-b"}
		for m, host := range []string{"host-a", "host-b"} {
			_, err := inv.RegisterGuest(ctx, api.GuestRegister{
				ID: ids[m], Name: ids[m], NetworkID: fmt.Sprintf("many-%d", i/ManyPerNetwork),
				Address: ManyMember(i, m), MAC: fmt.Sprintf("52:54:01:%02x:%02x:%02x", i>>8, i&0xff, m), NICs: 1, Host: host,
			})
			must(err)
		}
		_, err := inv.CreateGroup(ctx, api.GroupCreate{Name: name})
		must(err)
		_, err = inv.Join(ctx, name, ids)
		must(err)
		_, err = inv.AttachNetwork(ctx, name, api.AttachNetwork{IPAddr: ManyVIP(i)})
		must(err)
		_, err = inv.CreateGroupEIP(ctx, name, api.CreateGroupEIP{IPAddr: ManyEIP(i)})
		must(err)
	}
}

// ManyBulk writes what Many creates straight into the registry, a
// thousand groups per transaction, for sizes the admin operations would
// take minutes to build (each of them checks its rules against every
// record: building 10,000 groups through them is quadratic). The records
// are those Many's operations write (TestManyBulkMatchesAdmin compares
// them) except for timestamps, the VRID (i mod 250 + 1 instead of a
// random free one) and the VRRP password (derived from i).
func ManyBulk(tb testing.TB, ctx context.Context, st registry.Store, n int) {
	tb.Helper()
	if n > ManyMax {
		tb.Fatalf("hstest.ManyBulk: %d groups, at most %d", n, ManyMax)
	}
	now := time.Now().UTC()
	put := func(tx registry.Tx, rs ...registry.Record) error {
		for _, r := range rs {
			if err := tx.Put(r.Bucket(), r.Key(), r); err != nil {
				return err
			}
		}
		return nil
	}
	network := func(id string, cidr netip.Prefix, vpc string, kind registry.NetworkKind) registry.Network {
		first, last := cidr.Addr().Next(), lastAddr(cidr)
		return registry.Network{ID: id, CIDR: cidr, Gateway: first, RangeStart: first.Next(), RangeEnd: last.Prev(),
			VPCID: vpc, Kind: kind, CreatedAt: now}
	}
	err := st.Update(ctx, func(tx registry.Tx) error {
		return put(tx, network("manypub", netip.MustParsePrefix("198.19.0.0/16"), "", "eip"))
	})
	for lo := 0; err == nil && lo < n; lo += 1000 {
		err = st.Update(ctx, func(tx registry.Tx) error {
			for i := lo; i < min(n, lo+1000); i++ {
				netID := fmt.Sprintf("many-%d", i/ManyPerNetwork)
				if i%ManyPerNetwork == 0 {
					if err := put(tx, network(netID, netip.PrefixFrom(manyBase(i), 22), "vpc-many", "guest")); err != nil {
						return err
					}
				}
				name := ManyGroup(i)
				gid, eid := "ig-"+name, "eip-"+strings.ReplaceAll(ManyEIP(i).String(), ".", "-")
				g := registry.Group{
					ID: gid, Name: name,
					VIP:      &registry.VIPBinding{Address: ManyVIP(i), NetworkID: netID, VRID: i%ManyPerNetwork + 1, BoundAt: now},
					EIP:      &registry.EIPBinding{EIPID: eid, Address: ManyEIP(i), BoundAt: now},
					Settings: registry.Settings{VRRPVersion: 2, AuthPass: fmt.Sprintf("pw%06d", i)},
					Revision: 4, CreatedAt: now,
				}
				for m, host := range []string{"host-a", "host-b"} {
					id := name + []string{"-a", "-b"}[m]
					g.Members = append(g.Members, registry.Member{GuestID: id, Priority: 250 - 20*m, JoinedAt: now})
					err := put(tx,
						registry.Guest{ID: id, Name: id, NICs: 1, NetworkID: netID, Address: ManyMember(i, m),
							MAC: fmt.Sprintf("52:54:01:%02x:%02x:%02x", i>>8, i&0xff, m), Host: host, Group: gid, CreatedAt: now},
						registry.Lease{NetworkID: netID, Address: ManyMember(i, m), Kind: registry.LeaseGuest, Holder: id},
						registry.AddrIndex{Address: ManyMember(i, m), GuestID: id})
					if err != nil {
						return err
					}
				}
				err := put(tx, g,
					registry.Lease{NetworkID: netID, Address: ManyVIP(i), Kind: registry.LeaseVIP, Holder: gid},
					registry.VIPIndex{Address: ManyVIP(i), GroupID: gid},
					registry.EIP{ID: eid, Address: ManyEIP(i), NetworkID: "manypub", Group: gid, CreatedAt: now},
					registry.Lease{NetworkID: "manypub", Address: ManyEIP(i), Kind: registry.LeaseEIP, Holder: eid})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		tb.Fatalf("hstest.ManyBulk: %v", err)
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
