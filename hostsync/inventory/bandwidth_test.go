package inventory_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

func TestChangeEIPBandwidth(t *testing.T) {
	f := newUpdFixture(t)
	eipRecord := func() registry.EIP {
		t.Helper()
		var e registry.EIP
		if err := f.store.View(f.ctx, func(tx registry.Tx) error {
			var err error
			e, err = registry.Get[registry.EIP](tx, f.group().EIP.EIPID)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return e
	}
	rev := f.group().Revision

	// Refused before anything is written, naming the field.
	for _, bw := range []int{-1, 1_000_001} {
		_, err := f.inv.ChangeEIPBandwidth(f.ctx, "nginx", bw)
		var ie *inventory.InvalidError
		if !errors.As(err, &ie) || ie.Field != "bandwidth" {
			t.Errorf("bandwidth %d: err = %v, want an invalid bandwidth", bw, err)
		}
	}
	if g := f.group(); g.Revision != rev || len(f.changes) != 0 {
		t.Fatalf("a refused change wrote revision %d (was %d) or notified %v", g.Revision, rev, f.changes)
	}

	for _, step := range []struct {
		ref     string
		bw      int
		changed bool
	}{
		{"nginx", 20, true},
		{"nginx", 20, false},             // the same again: no revision, no apply
		{"203.0.113.5", 1_000_000, true}, // named by the EIP's address
		{f.group().EIP.EIPID, 0, true},   // by its id; 0 is unlimited
		{"ig-nginx", 100, true},          // by the group's id
	} {
		v, err := f.inv.ChangeEIPBandwidth(f.ctx, step.ref, step.bw)
		if err != nil {
			t.Fatalf("%s → %d: %v", step.ref, step.bw, err)
		}
		if v.EIP == nil || v.EIP.Bandwidth != step.bw {
			t.Errorf("%s → %d: view shows EIP %+v", step.ref, step.bw, v.EIP)
		}
		if e := eipRecord(); e.Bandwidth != step.bw {
			t.Errorf("%s → %d: EIP record has %d", step.ref, step.bw, e.Bandwidth)
		}
		want := []inventory.Change(nil)
		if step.changed {
			rev++
			want = []inventory.Change{{Op: "instancegroup-change-eip-bandwidth", Group: "ig-nginx", DataPlane: true}}
		}
		if g := f.group(); g.Revision != rev || v.Revision != rev {
			t.Errorf("%s → %d: revision %d (view %d), want %d", step.ref, step.bw, g.Revision, v.Revision, rev)
		}
		if diff := cmp.Diff(want, f.changes); diff != "" {
			t.Errorf("%s → %d: changes (-want +got):\n%s", step.ref, step.bw, diff)
		}
		f.changes = nil
	}

	if _, err := f.inv.ChangeEIPBandwidth(f.ctx, "nope", 10); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("unknown group: err = %v, want ErrNotFound", err)
	}
	if _, err := f.inv.DissociateEIP(f.ctx, "nginx"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.inv.ChangeEIPBandwidth(f.ctx, "nginx", 10); !errors.Is(err, inventory.ErrNoEIP) {
		t.Errorf("group without EIP: err = %v, want ErrNoEIP", err)
	}
	if _, err := f.inv.ChangeEIPBandwidth(f.ctx, "203.0.113.5", 10); !errors.Is(err, inventory.ErrNoEIP) {
		t.Errorf("EIP bound to no group: err = %v, want ErrNoEIP", err)
	}
}
