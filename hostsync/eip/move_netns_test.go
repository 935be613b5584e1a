package eip

import (
	"errors"
	"maps"
	"testing"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// TestNetnsMapsMove: Move re-points one VIP's route with one write and
// never a NAT element, removes it when the owner is directly connected,
// and refuses (ErrNeedApply, nothing written) what it cannot follow alone.
func TestNetnsMapsMove(t *testing.T) {
	testutil.RequireRoot(t, "nft")
	ns := testutil.NewNetns(t, "mm")
	testutil.IP(t, "-n", ns, "link", "add", "r0", "type", "veth", "peer", "name", "r1")
	testutil.IP(t, "-n", ns, "addr", "add", "198.51.100.1/24", "dev", "r0")
	testutil.IP(t, "-n", ns, "link", "set", "r0", "up")
	testutil.IP(t, "-n", ns, "link", "set", "r1", "up")
	m := newNetnsMaps(t, ns, true)
	nl := netlinkAt(t, ns)
	a := Mapping{Group: "a", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10")}
	b := Mapping{Group: "b", EIP: addr("203.0.113.6"), VIP: addr("192.0.2.20"), NextHop: addr("198.51.100.21")}
	ctx := t.Context()

	if err := m.Move(ctx, a); !errors.Is(err, ErrNeedApply) {
		t.Fatalf("Move before any Apply: %v, want ErrNeedApply", err)
	}
	if err := m.Apply(ctx, []Mapping{a, b}); err != nil {
		t.Fatal(err)
	}
	routes := func() map[string]string {
		t.Helper()
		n := NFT{routes: nl, proto: DefaultRouteProtocol, rtable: mainTable}
		rs, err := n.ownedRoutes()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, r := range rs {
			dst, via, _ := vipRoute(r)
			out[dst.String()] = via.String()
		}
		return out
	}
	for _, step := range []struct {
		name   string
		move   Mapping
		err    error
		writes Writes
		routes map[string]string
	}{
		{"a's owner behind host .22", Mapping{Group: "a", EIP: a.EIP, VIP: a.VIP, NextHop: addr("198.51.100.22")}, nil,
			Writes{Routes: 1}, map[string]string{"192.0.2.10": "198.51.100.22", "192.0.2.20": "198.51.100.21"}},
		{"same again", Mapping{Group: "a", EIP: a.EIP, VIP: a.VIP, NextHop: addr("198.51.100.22")}, nil,
			Writes{}, map[string]string{"192.0.2.10": "198.51.100.22", "192.0.2.20": "198.51.100.21"}},
		{"b's owner on the segment", Mapping{Group: "b", EIP: b.EIP, VIP: b.VIP}, nil,
			Writes{Routes: 1}, map[string]string{"192.0.2.10": "198.51.100.22"}},
		{"unusable next hop", Mapping{Group: "a", EIP: a.EIP, VIP: a.VIP, NextHop: addr("224.0.0.1")}, nil,
			Writes{Routes: 1}, map[string]string{}},
		{"pair not applied", Mapping{Group: "a", EIP: a.EIP, VIP: addr("192.0.2.99"), NextHop: addr("198.51.100.21")}, ErrNeedApply,
			Writes{}, map[string]string{}},
		{"unknown EIP", Mapping{Group: "c", EIP: addr("203.0.113.7"), VIP: addr("192.0.2.30"), NextHop: addr("198.51.100.21")}, ErrNeedApply,
			Writes{}, map[string]string{}},
	} {
		before := m.Writes()
		if err := m.Move(ctx, step.move); !errors.Is(err, step.err) {
			t.Fatalf("%s: Move = %v, want %v", step.name, err, step.err)
		}
		if w := diffWrites(m, before); w != step.writes {
			t.Errorf("%s: wrote %+v, want %+v", step.name, w, step.writes)
		}
		if got := routes(); !maps.Equal(got, step.routes) {
			t.Errorf("%s: routes %v, want %v", step.name, got, step.routes)
		}
	}
	// The next Apply of the same set (as moved) writes nothing: Move kept
	// the desired state in step.
	before := m.Writes()
	if err := m.Apply(ctx, []Mapping{a, {Group: "b", EIP: b.EIP, VIP: b.VIP}}); err != nil {
		t.Fatal(err)
	}
	if w := diffWrites(m, before); w != (Writes{}) {
		t.Errorf("Apply after the moves wrote %+v, want nothing", w)
	}
	if err := m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if w := diffWrites(m, before); w != (Writes{}) {
		t.Errorf("Reconcile after the moves wrote %+v, want nothing", w)
	}
}
