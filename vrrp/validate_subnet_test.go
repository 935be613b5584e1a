package vrrp

import (
	"errors"
	"net/netip"
	"testing"
)

// TestValidateSubnet: member addresses may not be the network or broadcast
// address of the VIP's subnet, and the VIP's prefix must be a plausible
// subnet (issue 11).
func TestValidateSubnet(t *testing.T) {
	v6 := func(m *Metadata, vip string, members ...string) {
		m.VRRPVersion = 3
		m.Auth = nil
		m.VIP = netip.MustParsePrefix(vip)
		for i, a := range members {
			m.Members[i].Address = netip.MustParseAddr(a)
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(m *Metadata)
		path   string // "" means valid
	}{
		{"member is the network address", func(m *Metadata) { m.Members[1].Address = netip.MustParseAddr("192.0.2.0") }, "members[1].address"},
		{"member is the broadcast address", func(m *Metadata) { m.Members[0].Address = netip.MustParseAddr("192.0.2.255") }, "members[0].address"},
		{"member is the broadcast of a /25", func(m *Metadata) {
			m.VIP = netip.MustParsePrefix("192.0.2.10/25")
			m.Members[1].Address = netip.MustParseAddr("192.0.2.127")
		}, "members[1].address"},
		{"first and last host of a /30", func(m *Metadata) {
			m.VIP = netip.MustParsePrefix("192.0.2.9/30")
			m.Members = m.Members[:1]
			m.Members[0].Address = netip.MustParseAddr("192.0.2.10")
		}, ""},
		{"a /31 has no network or broadcast address", func(m *Metadata) {
			m.VIP = netip.MustParsePrefix("192.0.2.10/31")
			m.Members = m.Members[:1]
			m.Members[0].Address = netip.MustParseAddr("192.0.2.11")
		}, ""},
		{"vip /0", func(m *Metadata) { m.VIP = netip.MustParsePrefix("192.0.2.10/0") }, "vip"},
		{"vip /7", func(m *Metadata) { m.VIP = netip.MustParsePrefix("192.0.2.10/7") }, "vip"},
		{"vip /8", func(m *Metadata) { m.VIP = netip.MustParsePrefix("192.0.2.10/8") }, ""},
		{"ipv6 /64", func(m *Metadata) { v6(m, "2001:db8::10/64", "2001:db8::11", "2001:db8::12") }, ""},
		{"ipv6 /0", func(m *Metadata) { v6(m, "2001:db8::10/0", "2001:db8::11", "2001:db8::12") }, "vip"},
		{"ipv6 /47", func(m *Metadata) { v6(m, "2001:db8::10/47", "2001:db8::11", "2001:db8::12") }, "vip"},
		{"ipv6 member is the subnet-router anycast", func(m *Metadata) { v6(m, "2001:db8::10/64", "2001:db8::11", "2001:db8::") }, "members[1].address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.mutate(m)
			err := m.Validate()
			if tc.path == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Path != tc.path {
				t.Fatalf("error %v, want a FieldError at %s", err, tc.path)
			}
			t.Log(err)
		})
	}
}
