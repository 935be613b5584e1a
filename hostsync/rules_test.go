package hostsync

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// TestRules runs every rule of the seed (and the ones Cloudpods codes) as
// a table: a setup on the fixture, one operation, the rule it must break
// (nil: it must succeed) and what the error text must say.
func TestRules(t *testing.T) {
	type op func(f *fixture) error
	attach := func(group string, req api.AttachNetwork) op {
		return func(f *fixture) error { _, err := f.svc.AttachNetwork(f.ctx, group, req); return err }
	}
	join := func(group string, guests ...string) op {
		return func(f *fixture) error { _, err := f.svc.Join(f.ctx, group, guests); return err }
	}
	createEIP := func(group string, req api.CreateGroupEIP) op {
		return func(f *fixture) error { _, err := f.svc.CreateGroupEIP(f.ctx, group, req); return err }
	}
	cases := []struct {
		name    string
		setup   func(f *fixture)
		do      op
		want    error
		msgHas  string
		checkOK func(t *testing.T, f *fixture)
	}{
		// One VIP per group.
		{
			name:   "second VIP refused",
			setup:  func(f *fixture) { f.nginx() },
			do:     attach("nginx", api.AttachNetwork{NetworkID: "net1"}),
			want:   inventory.ErrOneVIPPerGroup,
			msgHas: "group nginx already has VIP 192.0.2.10",
		},
		// A group without members chooses the VIP's network.
		{
			name:   "empty group needs a network",
			setup:  func(f *fixture) { f.mustGroup("web") },
			do:     attach("web", api.AttachNetwork{}),
			want:   inventory.ErrNetworkRequired,
			msgHas: "--network-id",
		},
		{
			name:  "empty group chooses the network",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "net2"}),
			checkOK: func(t *testing.T, f *fixture) {
				v, _ := f.svc.ShowGroup(f.ctx, "web")
				if v.VIP == nil || v.VIP.NetworkID != "net2" || v.VIP.Address.String() != "198.51.100.2/25" {
					t.Fatalf("VIP = %+v, want 198.51.100.2/25 in net2 (first free after the gateway)", v.VIP)
				}
			},
		},
		{
			name:  "empty group given only an address takes that address's network",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{IPAddr: ip("198.51.100.50")}),
			checkOK: func(t *testing.T, f *fixture) {
				v, _ := f.svc.ShowGroup(f.ctx, "web")
				if v.VIP.NetworkID != "net2" || v.VIP.Address.Addr() != ip("198.51.100.50") {
					t.Fatalf("VIP = %+v", v.VIP)
				}
			},
		},
		{
			name: "after the VIP only guests of its network may join",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustAttach("web", api.AttachNetwork{NetworkID: "net1"})
			},
			do:     join("web", "classic"),
			want:   inventory.ErrWrongNetwork,
			msgHas: "guest classic is in network net2",
		},
		{
			name: "after the VIP only guests with one NIC may join",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustAttach("web", api.AttachNetwork{NetworkID: "net1"})
			},
			do:     join("web", "g3"),
			want:   inventory.ErrOneNIC,
			msgHas: "guest two-nics has 2 NICs",
		},
		{
			name: "after the VIP a guest of its network with one NIC joins",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustAttach("web", api.AttachNetwork{NetworkID: "net1"})
			},
			do: join("web", "g1", "g2"),
			checkOK: func(t *testing.T, f *fixture) {
				v, _ := f.svc.ShowGroup(f.ctx, "web")
				if len(v.Members) != 2 || v.Members[0].Priority != 250 || v.Members[1].Priority != 230 {
					t.Fatalf("members = %+v, want priorities 250, 230 in join order", v.Members)
				}
			},
		},
		{
			name:  "a group without a VIP takes any guest",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    join("web", "g3", "g4"),
		},
		// A group with members binds a VIP only when all have one NIC in one network.
		{
			name: "members in two networks",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustJoin("web", "g1", "g4")
			},
			do:     attach("web", api.AttachNetwork{}),
			want:   inventory.ErrMembersNotInOneNetwork,
			msgHas: "nginx-master in net1; classic in net2",
		},
		{
			name: "member with two NICs",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustJoin("web", "g1", "g3")
			},
			do:     attach("web", api.AttachNetwork{}),
			want:   inventory.ErrOneNIC,
			msgHas: "two-nics has 2 NICs",
		},
		{
			name: "network other than the members'",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustJoin("web", "g1")
			},
			do:     attach("web", api.AttachNetwork{NetworkID: "net2"}),
			want:   inventory.ErrNetworkMismatch,
			msgHas: "members of group web are in network net1",
		},
		{
			name: "members' network is used without --network-id",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustJoin("web", "g1", "g2")
			},
			do: attach("web", api.AttachNetwork{}),
			checkOK: func(t *testing.T, f *fixture) {
				v, _ := f.svc.ShowGroup(f.ctx, "web")
				if v.VIP.NetworkID != "net1" || v.VIP.Address.Addr() != ip("192.0.2.2") {
					t.Fatalf("VIP = %+v, want 192.0.2.2 in net1", v.VIP)
				}
			},
		},
		{
			name:  "VIP network of kind eip",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "pub"}),
			want:  inventory.ErrNotGuestNetwork,
		},
		{
			name:  "unknown network",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "nope"}),
			want:  inventory.ErrNotFound,
		},
		{
			name: "unknown group",
			do:   attach("nope", api.AttachNetwork{NetworkID: "net1"}),
			want: inventory.ErrNotFound,
		},
		// Allocation: --ip-addr, --require-designated-ip, --reserved, --alloc-dir.
		{
			name:  "--ip-addr honoured when free and in range",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "net1", IPAddr: ip("192.0.2.99")}),
			checkOK: func(t *testing.T, f *fixture) {
				wantVIP(t, f, "web", "192.0.2.99")
			},
		},
		{
			name:  "--ip-addr taken: another address is picked",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "net1", IPAddr: ip("192.0.2.11")}),
			checkOK: func(t *testing.T, f *fixture) {
				wantVIP(t, f, "web", "192.0.2.2")
			},
		},
		{
			name:   "--ip-addr taken with --require-designated-ip",
			setup:  func(f *fixture) { f.mustGroup("web") },
			do:     attach("web", api.AttachNetwork{NetworkID: "net1", IPAddr: ip("192.0.2.11"), RequireDesignatedIP: true}),
			want:   inventory.ErrAddressUnavailable,
			msgHas: "192.0.2.11 in network net1 is in use by guest g1",
		},
		{
			name:   "--ip-addr is the gateway with --require-designated-ip",
			setup:  func(f *fixture) { f.mustGroup("web") },
			do:     attach("web", api.AttachNetwork{NetworkID: "net1", IPAddr: ip("192.0.2.1"), RequireDesignatedIP: true}),
			want:   inventory.ErrAddressUnavailable,
			msgHas: "the gateway",
		},
		{
			name:   "--ip-addr reserved without --reserved, with --require-designated-ip",
			setup:  func(f *fixture) { f.mustGroup("web") },
			do:     attach("web", api.AttachNetwork{NetworkID: "net1", IPAddr: ip("192.0.2.200"), RequireDesignatedIP: true}),
			want:   inventory.ErrAddressUnavailable,
			msgHas: "reserved",
		},
		{
			name:   "--ip-addr outside the network",
			setup:  func(f *fixture) { f.mustGroup("web") },
			do:     attach("web", api.AttachNetwork{NetworkID: "net1", IPAddr: ip("198.51.100.7")}),
			want:   inventory.ErrAddressNotInNetwork,
			msgHas: "198.51.100.7 is not in network net1",
		},
		{
			name:  "--require-designated-ip without --ip-addr",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "net1", RequireDesignatedIP: true}),
			want:  inventory.ErrInvalid,
		},
		{
			name:  "--reserved takes the lowest reserved address",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "net1", Reserved: true}),
			checkOK: func(t *testing.T, f *fixture) {
				wantVIP(t, f, "web", "192.0.2.200")
			},
		},
		{
			name:  "--reserved --alloc-dir stepdown takes the highest",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "net1", Reserved: true, AllocDir: api.AllocStepDown}),
			checkOK: func(t *testing.T, f *fixture) {
				wantVIP(t, f, "web", "192.0.2.201")
			},
		},
		{
			name: "--reserved pool used up",
			setup: func(f *fixture) {
				for _, g := range []string{"a", "b"} {
					f.mustGroup(g)
					f.mustAttach(g, api.AttachNetwork{NetworkID: "net1", Reserved: true})
				}
				f.mustGroup("web")
			},
			do:     attach("web", api.AttachNetwork{NetworkID: "net1", Reserved: true}),
			want:   inventory.ErrNetworkFull,
			msgHas: "reserved pool of network net1",
		},
		{
			name:  "--alloc-dir stepdown",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "net1", AllocDir: api.AllocStepDown}),
			checkOK: func(t *testing.T, f *fixture) {
				wantVIP(t, f, "web", "192.0.2.254")
			},
		},
		{
			name:  "--alloc-dir random",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "net1", AllocDir: api.AllocRandom}),
			checkOK: func(t *testing.T, f *fixture) {
				// The fixture's Intn always answers 40: range start .2 + 40.
				wantVIP(t, f, "web", "192.0.2.42")
			},
		},
		{
			name:  "--alloc-dir unknown",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    attach("web", api.AttachNetwork{NetworkID: "net1", AllocDir: "sideways"}),
			want:  inventory.ErrInvalid,
		},
		{
			name: "network full",
			setup: func(f *fixture) {
				f.mustGroup("a")
				f.mustAttach("a", api.AttachNetwork{NetworkID: "net3"})
				f.mustGroup("web")
			},
			do:     attach("web", api.AttachNetwork{NetworkID: "net3"}),
			want:   inventory.ErrNetworkFull,
			msgHas: "network net3 has no free address",
		},
		// EIP: one per group, only after a VIP, only in a VPC, maps to the VIP.
		{
			name: "EIP before VIP",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustJoin("web", "g1")
			},
			do:     createEIP("web", api.CreateGroupEIP{}),
			want:   inventory.ErrVIPRequired,
			msgHas: "group web has no VIP",
		},
		{
			name: "associate before VIP",
			setup: func(f *fixture) {
				f.mustGroup("web")
				if _, err := f.svc.CreateEIP(f.ctx, api.EIPCreate{IPAddr: ip("203.0.113.9")}); err != nil {
					f.t.Fatal(err)
				}
			},
			do: func(f *fixture) error {
				_, err := f.svc.AssociateEIP(f.ctx, "web", api.AssociateEIP{IPAddr: ip("203.0.113.9")})
				return err
			},
			want: inventory.ErrVIPRequired,
		},
		{
			name:   "second EIP refused",
			setup:  func(f *fixture) { f.nginx() },
			do:     createEIP("nginx", api.CreateGroupEIP{}),
			want:   inventory.ErrOneEIPPerGroup,
			msgHas: "group nginx already has EIP 203.0.113.5",
		},
		{
			name: "EIP for a VIP in a classic network",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustAttach("web", api.AttachNetwork{NetworkID: "net2"})
			},
			do:     createEIP("web", api.CreateGroupEIP{}),
			want:   inventory.ErrEIPNeedsVPC,
			msgHas: "classic network net2",
		},
		{
			name: "EIP bound to another group",
			setup: func(f *fixture) {
				f.nginx()
				f.mustGroup("web")
				f.mustAttach("web", api.AttachNetwork{NetworkID: "net1"})
			},
			do: func(f *fixture) error {
				_, err := f.svc.AssociateEIP(f.ctx, "web", api.AssociateEIP{IPAddr: ip("203.0.113.5")})
				return err
			},
			want:   inventory.ErrEIPInUse,
			msgHas: "bound to group ig-nginx",
		},
		{
			name: "associate an existing EIP by id, it maps to the VIP",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustAttach("web", api.AttachNetwork{NetworkID: "net1", IPAddr: ip("192.0.2.77")})
				if _, err := f.svc.CreateEIP(f.ctx, api.EIPCreate{ID: "eip-web", IPAddr: ip("203.0.113.9")}); err != nil {
					f.t.Fatal(err)
				}
			},
			do: func(f *fixture) error {
				_, err := f.svc.AssociateEIP(f.ctx, "web", api.AssociateEIP{EIPID: "eip-web"})
				return err
			},
			checkOK: func(t *testing.T, f *fixture) {
				ms, err := f.svc.Mappings(f.ctx)
				if err != nil || len(ms) != 1 || ms[0].EIP != ip("203.0.113.9") || ms[0].VIP != ip("192.0.2.77") {
					t.Fatalf("mappings = %+v, %v; want 203.0.113.9 -> 192.0.2.77", ms, err)
				}
				if got := f.backend.LastSet(); len(got) != 1 || got[0].EIP != ip("203.0.113.9") {
					t.Fatalf("data plane = %+v, want the mapping applied", got)
				}
			},
		},
		{
			name:  "associate an unknown EIP",
			setup: func(f *fixture) { f.nginx(); _, _ = f.svc.DissociateEIP(f.ctx, "nginx") },
			do: func(f *fixture) error {
				_, err := f.svc.AssociateEIP(f.ctx, "nginx", api.AssociateEIP{IPAddr: ip("203.0.113.99")})
				return err
			},
			want: inventory.ErrNotFound,
		},
		{
			name:  "dissociate without EIP",
			setup: func(f *fixture) { f.mustGroup("web") },
			do: func(f *fixture) error {
				_, err := f.svc.DissociateEIP(f.ctx, "web")
				return err
			},
			want: inventory.ErrNoEIP,
		},
		{
			name: "dissociate with auto-deallocate deletes the EIP",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustAttach("web", api.AttachNetwork{NetworkID: "net1"})
				f.mustCreateEIP("web", api.CreateGroupEIP{IPAddr: ip("203.0.113.20"), AutoDeallocate: true})
			},
			do: func(f *fixture) error {
				_, err := f.svc.DissociateEIP(f.ctx, "web")
				return err
			},
			checkOK: func(t *testing.T, f *fixture) {
				eips, _ := f.svc.ListEIPs(f.ctx)
				if len(eips) != 0 {
					t.Fatalf("EIPs = %+v, want none", eips)
				}
				// The address is free again.
				if _, err := f.svc.CreateEIP(f.ctx, api.EIPCreate{IPAddr: ip("203.0.113.20")}); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "EIP address outside every EIP network",
			do: func(f *fixture) error {
				_, err := f.svc.CreateEIP(f.ctx, api.EIPCreate{IPAddr: ip("198.51.100.9")})
				return err
			},
			want:   inventory.ErrAddressNotInNetwork,
			msgHas: "198.51.100.9 is in no EIP network",
		},
		{
			name:  "EIP address taken",
			setup: func(f *fixture) { f.nginx() },
			do: func(f *fixture) error {
				_, err := f.svc.CreateEIP(f.ctx, api.EIPCreate{IPAddr: ip("203.0.113.5")})
				return err
			},
			want: inventory.ErrAddressUnavailable,
		},
		{
			name: "EIP from a guest network",
			do:   func(f *fixture) error { _, err := f.svc.CreateEIP(f.ctx, api.EIPCreate{NetworkID: "net1"}); return err },
			want: inventory.ErrNotEIPNetwork,
		},
		// Detaching the VIP.
		{
			name:   "detach while an EIP is bound",
			setup:  func(f *fixture) { f.nginx() },
			do:     func(f *fixture) error { _, err := f.svc.DetachNetwork(f.ctx, "nginx", api.DetachNetwork{}); return err },
			want:   inventory.ErrDetachWithEIP,
			msgHas: "dissociate the EIP before detaching the VIP",
		},
		{
			name:  "detach another address",
			setup: func(f *fixture) { f.nginx(); _, _ = f.svc.DissociateEIP(f.ctx, "nginx") },
			do: func(f *fixture) error {
				_, err := f.svc.DetachNetwork(f.ctx, "nginx", api.DetachNetwork{IPAddr: ip("192.0.2.99")})
				return err
			},
			want: inventory.ErrVIPMismatch,
		},
		{
			name:  "detach without VIP",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    func(f *fixture) error { _, err := f.svc.DetachNetwork(f.ctx, "web", api.DetachNetwork{}); return err },
			want:  inventory.ErrNoVIP,
		},
		{
			name:  "detach after dissociating frees the VIP",
			setup: func(f *fixture) { f.nginx(); _, _ = f.svc.DissociateEIP(f.ctx, "nginx") },
			do: func(f *fixture) error {
				_, err := f.svc.DetachNetwork(f.ctx, "nginx", api.DetachNetwork{IPAddr: ip("192.0.2.10")})
				return err
			},
			checkOK: func(t *testing.T, f *fixture) {
				f.mustGroup("web")
				f.mustAttach("web", api.AttachNetwork{NetworkID: "net1", IPAddr: ip("192.0.2.10"), RequireDesignatedIP: true})
			},
		},
		// Deleting a group.
		{
			name:   "delete a group with members",
			setup:  func(f *fixture) { f.mustGroup("web"); f.mustJoin("web", "g1") },
			do:     func(f *fixture) error { return f.svc.DeleteGroup(f.ctx, "web") },
			want:   inventory.ErrGroupHasMembers,
			msgHas: "group web has 1 members",
		},
		{
			name: "delete a group with an EIP",
			setup: func(f *fixture) {
				f.nginx()
				if _, err := f.svc.Leave(f.ctx, "nginx", []string{"g1", "g2"}); err != nil {
					f.t.Fatal(err)
				}
			},
			do:     func(f *fixture) error { return f.svc.DeleteGroup(f.ctx, "nginx") },
			want:   inventory.ErrGroupHasEIP,
			msgHas: "dissociate it first",
		},
		{
			name: "delete an empty group releases its VIP",
			setup: func(f *fixture) {
				f.mustGroup("web")
				f.mustAttach("web", api.AttachNetwork{NetworkID: "net3"})
			},
			do: func(f *fixture) error { return f.svc.DeleteGroup(f.ctx, "web") },
			checkOK: func(t *testing.T, f *fixture) {
				f.mustGroup("web2")
				f.mustAttach("web2", api.AttachNetwork{NetworkID: "net3"})
			},
		},
		// Membership.
		{
			name:  "join twice",
			setup: func(f *fixture) { f.mustGroup("web"); f.mustJoin("web", "g1") },
			do:    join("web", "nginx-master"),
			want:  inventory.ErrAlreadyMember,
		},
		{
			name:   "join a second group",
			setup:  func(f *fixture) { f.mustGroup("web"); f.mustJoin("web", "g1"); f.mustGroup("db") },
			do:     join("db", "g1"),
			want:   inventory.ErrInOtherGroup,
			msgHas: "already in group ig-web",
		},
		{
			name:  "join is all or nothing",
			setup: func(f *fixture) { f.mustGroup("web"); f.mustAttach("web", api.AttachNetwork{NetworkID: "net1"}) },
			do:    join("web", "g1", "g3"),
			want:  inventory.ErrOneNIC,
			checkOK: func(t *testing.T, f *fixture) {
				v, _ := f.svc.ShowGroup(f.ctx, "web")
				if len(v.Members) != 0 {
					t.Fatalf("members = %+v, want none after a refused join", v.Members)
				}
			},
		},
		{
			name:  "leave a group one is not in",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    func(f *fixture) error { _, err := f.svc.Leave(f.ctx, "web", []string{"g1"}); return err },
			want:  inventory.ErrNotMember,
		},
		{
			name:  "unknown guest",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    join("web", "nope"),
			want:  inventory.ErrNotFound,
		},
		// Registry objects.
		{
			name: "overlapping network",
			do: func(f *fixture) error {
				_, err := f.svc.CreateNetwork(f.ctx, api.NetworkCreate{ID: "x", CIDR: netip.MustParsePrefix("192.0.2.128/25")})
				return err
			},
			want:   inventory.ErrNetworkOverlap,
			msgHas: "overlaps network net1",
		},
		{
			name: "network id taken",
			do: func(f *fixture) error {
				_, err := f.svc.CreateNetwork(f.ctx, api.NetworkCreate{ID: "net1", CIDR: netip.MustParsePrefix("198.51.100.0/24")})
				return err
			},
			want: inventory.ErrExists,
		},
		{
			name: "IPv6 network",
			do: func(f *fixture) error {
				_, err := f.svc.CreateNetwork(f.ctx, api.NetworkCreate{ID: "v6", CIDR: netip.MustParsePrefix("2001:db8::/64")})
				return err
			},
			want: inventory.ErrInvalid,
		},
		{
			name: "guest outside its network",
			do: func(f *fixture) error {
				_, err := f.svc.RegisterGuest(f.ctx, api.GuestRegister{ID: "x", Name: "x", NetworkID: "net1", Address: ip("198.51.100.9"), MAC: "52:54:00:00:00:99", NICs: 1})
				return err
			},
			want: inventory.ErrAddressNotInNetwork,
		},
		{
			name:  "guest on the VIP's address",
			setup: func(f *fixture) { f.nginx() },
			do: func(f *fixture) error {
				_, err := f.svc.RegisterGuest(f.ctx, api.GuestRegister{ID: "x", Name: "x", NetworkID: "net1", Address: ip("192.0.2.10"), MAC: "52:54:00:00:00:99", NICs: 1})
				return err
			},
			want:   inventory.ErrAddressInUse,
			msgHas: "in use by vip ig-nginx",
		},
		{
			name: "guest with a MAC already registered",
			do: func(f *fixture) error {
				_, err := f.svc.RegisterGuest(f.ctx, api.GuestRegister{ID: "x", Name: "x", NetworkID: "net1", Address: ip("192.0.2.99"), MAC: "52:54:00:00:00:11", NICs: 1})
				return err
			},
			want: inventory.ErrExists,
		},
		{
			name: "guest on an EIP network",
			do: func(f *fixture) error {
				_, err := f.svc.RegisterGuest(f.ctx, api.GuestRegister{ID: "x", Name: "x", NetworkID: "pub", Address: ip("203.0.113.99"), MAC: "52:54:00:00:00:99", NICs: 1})
				return err
			},
			want: inventory.ErrNotGuestNetwork,
		},
		{
			name:  "group name taken",
			setup: func(f *fixture) { f.mustGroup("web") },
			do:    func(f *fixture) error { _, err := f.svc.CreateGroup(f.ctx, api.GroupCreate{Name: "web"}); return err },
			want:  inventory.ErrExists,
		},
		{
			name: "group settings checked by vrrp's rules",
			do: func(f *fixture) error {
				_, err := f.svc.CreateGroup(f.ctx, api.GroupCreate{Name: "web", AdvertInt: vrrp.Seconds(500)})
				return err
			},
			want:   inventory.ErrInvalid,
			msgHas: "advert_int",
		},
		{
			name: "VRRPv3 with a password",
			do: func(f *fixture) error {
				_, err := f.svc.CreateGroup(f.ctx, api.GroupCreate{Name: "web", VRRPVersion: 3, AuthPass: "secret"})
				return err
			},
			want: inventory.ErrInvalid,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.svc.Inventory = inventory.New(f.store, inventory.Options{
				Logger: testLogger(t), Now: f.clock.Now, Intn: func(int) int { return 40 }, Changed: f.svc.Changed,
			})
			if tc.setup != nil {
				tc.setup(f)
			}
			err := tc.do(f)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				if !strings.HasPrefix(err.Error(), "hostsync: ") {
					t.Errorf("error %q is not prefixed by the package", err)
				}
				if tc.msgHas != "" && !strings.Contains(err.Error(), tc.msgHas) {
					t.Errorf("error %q does not say %q", err, tc.msgHas)
				}
				if !strings.Contains(err.Error(), strings.TrimPrefix(tc.want.Error(), "hostsync: ")) {
					t.Errorf("error %q does not state the rule %q", err, tc.want)
				}
			}
			if tc.checkOK != nil {
				tc.checkOK(t, f)
			}
		})
	}
}

func wantVIP(t *testing.T, f *fixture, group, addr string) {
	t.Helper()
	v, err := f.svc.ShowGroup(f.ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if v.VIP == nil || v.VIP.Address.Addr() != ip(addr) {
		t.Fatalf("VIP of %s = %+v, want %s", group, v.VIP, addr)
	}
}

func TestPrioritiesStableAndUnique(t *testing.T) {
	f := newFixture(t)
	f.mustGroup("web")
	f.mustJoin("web", "g1", "g2", "g5")
	if _, err := f.svc.Leave(f.ctx, "web", []string{"g2"}); err != nil {
		t.Fatal(err)
	}
	f.mustJoin("web", "g2")
	v, _ := f.svc.ShowGroup(f.ctx, "web")
	got := map[string]int{}
	for _, m := range v.Members {
		got[m.GuestID] = m.Priority
	}
	want := map[string]int{"g1": 250, "g5": 210, "g2": 190}
	for id, p := range want {
		if got[id] != p {
			t.Errorf("priority of %s = %d, want %d (all: %v)", id, got[id], p, got)
		}
	}
}

func TestVRIDUniquePerNetwork(t *testing.T) {
	f := newFixture(t)
	seen := map[int]string{}
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		f.mustGroup(name)
		v := f.mustAttach(name, api.AttachNetwork{NetworkID: "net1"})
		if other, dup := seen[v.VIP.VRID]; dup {
			t.Fatalf("groups %s and %s share virtual_router_id %d", other, name, v.VIP.VRID)
		}
		if v.VIP.VRID < 1 || v.VIP.VRID > 255 {
			t.Fatalf("virtual_router_id %d out of range", v.VIP.VRID)
		}
		seen[v.VIP.VRID] = name
	}
	// A group alone in its network keeps the id vrrp derives.
	f.mustGroup("solo")
	v := f.mustAttach("solo", api.AttachNetwork{NetworkID: "net2"})
	if v.VIP.VRID != vrrp.DeriveVRID("ig-solo") {
		t.Fatalf("virtual_router_id = %d, want the derived %d", v.VIP.VRID, vrrp.DeriveVRID("ig-solo"))
	}
}

func TestGeneratedAuthPass(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	md, err := f.svc.GroupMetadata(f.ctx, "nginx")
	if err != nil {
		t.Fatal(err)
	}
	if md.Auth == nil || len(md.Auth.Pass) != 8 {
		t.Fatalf("auth = %+v, want a generated 8-character PASS", md.Auth)
	}
}
