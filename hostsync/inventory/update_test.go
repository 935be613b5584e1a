package inventory_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// updFixture is an inventory on a real bbolt file with the seed's group
// nginx (members g1 and g2, VIP 192.0.2.10, an EIP), recording the
// changes it notifies.
type updFixture struct {
	t       *testing.T
	ctx     context.Context
	store   *registry.Bolt
	inv     *inventory.Inventory
	changes []inventory.Change
}

func newUpdFixture(t *testing.T) *updFixture {
	f := &updFixture{t: t, ctx: t.Context(), store: hstest.OpenStore(t)}
	f.inv = inventory.New(f.store, inventory.Options{Logger: hstest.Logger(t), Changed: func(_ context.Context, c inventory.Change) error {
		f.changes = append(f.changes, c)
		return nil
	}})
	hstest.Seed(t, f.ctx, f.inv)
	hstest.Nginx(t, f.ctx, f.inv)
	f.changes = nil
	return f
}

// group reads the stored record of group nginx.
func (f *updFixture) group() registry.Group {
	f.t.Helper()
	var g registry.Group
	if err := f.store.View(f.ctx, func(tx registry.Tx) error {
		var err error
		g, err = inventory.FindGroup(tx, "nginx")
		return err
	}); err != nil {
		f.t.Fatal(err)
	}
	return g
}

func (f *updFixture) update(req api.GroupUpdate) {
	f.t.Helper()
	if _, err := f.inv.UpdateGroup(f.ctx, "nginx", req); err != nil {
		f.t.Fatalf("setup update %+v: %v", req, err)
	}
	f.changes = nil
}

// addrs compares the records' addresses by value.
var addrs = cmpopts.EquateComparable(netip.Addr{})

func ptr[T any](v T) *T { return &v }

func secs(s string) *vrrp.Seconds {
	v, err := vrrp.ParseSeconds(s)
	if err != nil {
		panic(err)
	}
	return &v
}

var (
	httpCheck   = vrrp.Check{Name: "chk_http", Kind: vrrp.CheckHTTP, URL: "http://127.0.0.1/", Interval: 1000, Weight: 2}
	resignCheck = vrrp.Check{Name: "chk_nginx", Kind: vrrp.CheckProcess, Process: "nginx", OnFailure: vrrp.OnFailureResign, Interval: 50, Timeout: 50, Fall: 2}
)

// TestUpdateGroupChangesOnlyWhatIsGiven: each update changes exactly the
// fields it sets, in one new revision, and tells the engine once.
func TestUpdateGroupChangesOnlyWhatIsGiven(t *testing.T) {
	cases := []struct {
		name  string
		setup []api.GroupUpdate
		req   api.GroupUpdate
		// want edits the settings before the update into the expected ones.
		want func(s *registry.Settings)
		// pass checks the password the update leaves.
		pass func(before, after string) bool
	}{
		{
			name: "advert_int",
			req:  api.GroupUpdate{AdvertInt: secs("2")},
			want: func(s *registry.Settings) { s.AdvertInt = 2000 },
		},
		{
			name: "to VRRPv3 drops the password",
			req:  api.GroupUpdate{VRRPVersion: ptr(3)},
			want: func(s *registry.Settings) { s.VRRPVersion, s.AuthPass = 3, "" },
		},
		{
			name:  "then a sub-second advert",
			setup: []api.GroupUpdate{{VRRPVersion: ptr(3)}},
			req:   api.GroupUpdate{AdvertInt: secs("0.1")},
			want:  func(s *registry.Settings) { s.AdvertInt = 100 },
		},
		{
			name:  "back to VRRPv2 generates a password",
			setup: []api.GroupUpdate{{VRRPVersion: ptr(3)}},
			req:   api.GroupUpdate{VRRPVersion: ptr(2)},
			want:  func(s *registry.Settings) { s.VRRPVersion = 2 },
			pass:  func(before, after string) bool { return before == "" && len(after) == 8 },
		},
		{
			name:  "back to VRRPv2 with a password given",
			setup: []api.GroupUpdate{{VRRPVersion: ptr(3)}},
			req:   api.GroupUpdate{VRRPVersion: ptr(2), AuthPass: ptr("n3wpass")},
			want:  func(s *registry.Settings) { s.VRRPVersion, s.AuthPass = 2, "n3wpass" },
		},
		{
			name: "a new password on VRRPv2",
			req:  api.GroupUpdate{AuthPass: ptr("n3wpass")},
			want: func(s *registry.Settings) { s.AuthPass = "n3wpass" },
		},
		{
			name: "nopreempt",
			req:  api.GroupUpdate{NoPreempt: ptr(true)},
			want: func(s *registry.Settings) { s.NoPreempt = true },
		},
		{
			name:  "preempt again with a delay",
			setup: []api.GroupUpdate{{NoPreempt: ptr(true)}},
			req:   api.GroupUpdate{NoPreempt: ptr(false), PreemptDelay: secs("5")},
			want:  func(s *registry.Settings) { s.NoPreempt, s.PreemptDelay = false, 5000 },
		},
		{
			name:  "nopreempt clearing the delay",
			setup: []api.GroupUpdate{{PreemptDelay: secs("5")}},
			req:   api.GroupUpdate{NoPreempt: ptr(true), PreemptDelay: secs("0")},
			want:  func(s *registry.Settings) { s.NoPreempt, s.PreemptDelay = true, 0 },
		},
		{
			name: "checks replaced",
			req:  api.GroupUpdate{Checks: &[]vrrp.Check{httpCheck}},
			want: func(s *registry.Settings) { s.Checks = []vrrp.Check{httpCheck} },
		},
		{
			name: "a resign check every 0.05 s",
			req:  api.GroupUpdate{Checks: &[]vrrp.Check{resignCheck}},
			want: func(s *registry.Settings) { s.Checks = []vrrp.Check{resignCheck} },
		},
		{
			name:  "checks cleared",
			setup: []api.GroupUpdate{{Checks: &[]vrrp.Check{httpCheck}}},
			req:   api.GroupUpdate{Checks: &[]vrrp.Check{}},
			want:  func(s *registry.Settings) { s.Checks = nil },
		},
		{
			name:  "made from the current revision",
			setup: []api.GroupUpdate{{AdvertInt: secs("3")}},
			req:   api.GroupUpdate{AdvertInt: secs("2"), Revision: 5},
			want:  func(s *registry.Settings) { s.AdvertInt = 2000 },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newUpdFixture(t)
			for _, u := range tc.setup {
				f.update(u)
			}
			before := f.group()
			v, err := f.inv.UpdateGroup(f.ctx, "nginx", tc.req)
			if err != nil {
				t.Fatalf("UpdateGroup: %v", err)
			}
			after := f.group()
			want := before
			want.Settings.Checks = append([]vrrp.Check(nil), before.Settings.Checks...)
			tc.want(&want.Settings)
			want.Revision++
			if tc.pass != nil {
				if !tc.pass(before.Settings.AuthPass, after.Settings.AuthPass) {
					t.Errorf("password %q → %q", before.Settings.AuthPass, after.Settings.AuthPass)
				}
				want.Settings.AuthPass = after.Settings.AuthPass
			}
			if diff := cmp.Diff(want, after, addrs); diff != "" {
				t.Errorf("stored group (-want +got):\n%s", diff)
			}
			if v.Revision != after.Revision {
				t.Errorf("answered revision %d, stored %d", v.Revision, after.Revision)
			}
			if diff := cmp.Diff([]inventory.Change{{Op: "instancegroup-update", Group: "ig-nginx"}}, f.changes); diff != "" {
				t.Errorf("changes notified (-want +got):\n%s", diff)
			}
			// The members are served the new revision, and it validates.
			md, err := f.inv.GroupMetadata(f.ctx, "nginx")
			if err != nil || md.Revision != after.Revision || md.AdvertInt != after.Settings.AdvertInt {
				t.Errorf("served metadata %+v, %v; want revision %d", md, err, after.Revision)
			}
		})
	}
}

// TestUpdateGroupRefused: an update the rules refuse names the field and
// leaves the stored group exactly as it was, unnotified.
func TestUpdateGroupRefused(t *testing.T) {
	cases := []struct {
		name  string
		setup []api.GroupUpdate
		group string
		req   api.GroupUpdate
		is    error
		field string
	}{
		{name: "nothing to change", req: api.GroupUpdate{Revision: 5}, is: inventory.ErrInvalid, field: ""},
		{name: "VRRPv2 advert below a second", req: api.GroupUpdate{AdvertInt: secs("0.5")}, is: inventory.ErrInvalid, field: "advert_int"},
		{name: "VRRPv3 advert not in 0.01 steps", req: api.GroupUpdate{VRRPVersion: ptr(3), AdvertInt: secs("0.005")}, is: inventory.ErrInvalid, field: "advert_int"},
		{name: "to VRRPv2 keeping a sub-second advert", setup: []api.GroupUpdate{{VRRPVersion: ptr(3)}, {AdvertInt: secs("0.1")}}, req: api.GroupUpdate{VRRPVersion: ptr(2)}, is: inventory.ErrInvalid, field: "advert_int"},
		{name: "version and advert changed at once", req: api.GroupUpdate{VRRPVersion: ptr(3), AdvertInt: secs("0.1")}, is: inventory.ErrInvalid, field: "advert_int"},
		{name: "version 4", req: api.GroupUpdate{VRRPVersion: ptr(4)}, is: inventory.ErrInvalid, field: "vrrp_version"},
		{name: "password with VRRPv3", req: api.GroupUpdate{VRRPVersion: ptr(3), AuthPass: ptr("secret")}, is: inventory.ErrInvalid, field: "auth_pass"},
		{name: "password too long", req: api.GroupUpdate{AuthPass: ptr("123456789")}, is: inventory.ErrInvalid, field: "auth_pass"},
		{name: "empty password", req: api.GroupUpdate{AuthPass: ptr("")}, is: inventory.ErrInvalid, field: "auth_pass"},
		{name: "nopreempt with a delay", setup: []api.GroupUpdate{{PreemptDelay: secs("5")}}, req: api.GroupUpdate{NoPreempt: ptr(true)}, is: inventory.ErrInvalid, field: "preempt_delay"},
		{name: "preempt delay too long", req: api.GroupUpdate{PreemptDelay: secs("1001")}, is: inventory.ErrInvalid, field: "preempt_delay"},
		{name: "bad process name", req: api.GroupUpdate{Checks: &[]vrrp.Check{{Name: "chk", Kind: vrrp.CheckProcess, Process: "ng inx"}}}, is: inventory.ErrInvalid, field: "checks[0].process"},
		{name: "two checks of one name", req: api.GroupUpdate{Checks: &[]vrrp.Check{httpCheck, httpCheck}}, is: inventory.ErrInvalid, field: "checks[1].name"},
		{name: "unknown on_failure", req: api.GroupUpdate{Checks: &[]vrrp.Check{{Name: "chk", Kind: vrrp.CheckTCP, Address: "127.0.0.1:80", OnFailure: "failover"}}}, is: inventory.ErrInvalid, field: "checks[0].on_failure"},
		{name: "resign with a weight", req: api.GroupUpdate{Checks: &[]vrrp.Check{{Name: "chk", Kind: vrrp.CheckTCP, Address: "127.0.0.1:80", OnFailure: vrrp.OnFailureResign, Weight: 2}}}, is: inventory.ErrInvalid, field: "checks[0].weight"},
		{name: "lower_priority without a weight", req: api.GroupUpdate{Checks: &[]vrrp.Check{{Name: "chk", Kind: vrrp.CheckTCP, Address: "127.0.0.1:80", OnFailure: vrrp.OnFailureLowerPriority}}}, is: inventory.ErrInvalid, field: "checks[0].weight"},
		{name: "lower_priority below a second", req: api.GroupUpdate{Checks: &[]vrrp.Check{{Name: "chk", Kind: vrrp.CheckTCP, Address: "127.0.0.1:80", Weight: 2, Interval: 500}}}, is: inventory.ErrInvalid, field: "checks[0].interval"},
		{name: "resign below the floor", req: api.GroupUpdate{Checks: &[]vrrp.Check{{Name: "chk", Kind: vrrp.CheckTCP, Address: "127.0.0.1:80", Interval: 30}}}, is: inventory.ErrInvalid, field: "checks[0].interval"},
		{name: "stale revision", setup: []api.GroupUpdate{{AdvertInt: secs("2")}}, req: api.GroupUpdate{AdvertInt: secs("3"), Revision: 4}, is: inventory.ErrRevisionChanged},
		{name: "no such group", group: "apache", req: api.GroupUpdate{AdvertInt: secs("2")}, is: inventory.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newUpdFixture(t)
			for _, u := range tc.setup {
				f.update(u)
			}
			before := f.group()
			group := tc.group
			if group == "" {
				group = "nginx"
			}
			_, err := f.inv.UpdateGroup(f.ctx, group, tc.req)
			if !errors.Is(err, tc.is) {
				t.Fatalf("UpdateGroup = %v, want %v", err, tc.is)
			}
			var ie *inventory.InvalidError
			if errors.As(err, &ie) != (tc.is == inventory.ErrInvalid) || (ie != nil && ie.Field != tc.field) {
				t.Errorf("error %v names field %+v, want %q", err, ie, tc.field)
			}
			if diff := cmp.Diff(before, f.group(), addrs); diff != "" {
				t.Errorf("a refused update changed the group (-before +after):\n%s", diff)
			}
			if len(f.changes) != 0 {
				t.Errorf("a refused update notified %+v", f.changes)
			}
		})
	}
}

// TestSetPriority: one member's priority changes in one new revision,
// equal priorities included; out-of-range values and non-members are
// refused and change nothing.
func TestSetPriority(t *testing.T) {
	cases := []struct {
		name     string
		member   string
		priority int
		want     map[string]int // guest id → priority after; nil: refused
		is       error
		field    string
	}{
		{name: "by name", member: "nginx-slave", priority: 240, want: map[string]int{"g1": 250, "g2": 240}},
		{name: "by id, above the other", member: "g2", priority: 254, want: map[string]int{"g1": 250, "g2": 254}},
		{name: "equal to the other", member: "g2", priority: 250, want: map[string]int{"g1": 250, "g2": 250}},
		{name: "the lowest", member: "g1", priority: 1, want: map[string]int{"g1": 1, "g2": 230}},
		{name: "zero", member: "g1", priority: 0, is: inventory.ErrInvalid, field: "priority"},
		{name: "255 is the address owner's", member: "g1", priority: 255, is: inventory.ErrInvalid, field: "priority"},
		{name: "no member named", member: "", priority: 100, is: inventory.ErrInvalid, field: "member"},
		{name: "not a member", member: "third", priority: 100, is: inventory.ErrNotMember},
		{name: "no such guest", member: "nobody", priority: 100, is: inventory.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newUpdFixture(t)
			before := f.group()
			if got := priorities(before); !cmp.Equal(got, map[string]int{"g1": 250, "g2": 230}) {
				t.Fatalf("join order priorities %v, want g1 250, g2 230", got)
			}
			v, err := f.inv.SetPriority(f.ctx, "nginx", tc.member, tc.priority)
			after := f.group()
			if tc.want == nil {
				var ie *inventory.InvalidError
				if !errors.Is(err, tc.is) || (errors.As(err, &ie) && ie.Field != tc.field) {
					t.Fatalf("SetPriority = %v, want %v naming %q", err, tc.is, tc.field)
				}
				if diff := cmp.Diff(before, after, addrs); diff != "" {
					t.Errorf("a refused priority changed the group (-before +after):\n%s", diff)
				}
				if len(f.changes) != 0 {
					t.Errorf("a refused priority notified %+v", f.changes)
				}
				return
			}
			if err != nil {
				t.Fatalf("SetPriority: %v", err)
			}
			want := before
			want.Members = append([]registry.Member(nil), before.Members...)
			for i := range want.Members {
				want.Members[i].Priority = tc.want[want.Members[i].GuestID]
			}
			want.Revision++
			if diff := cmp.Diff(want, after, addrs); diff != "" {
				t.Errorf("stored group (-want +got):\n%s", diff)
			}
			for _, m := range v.Members {
				if m.Priority != tc.want[m.GuestID] {
					t.Errorf("answered member %s priority %d, want %d", m.Name, m.Priority, tc.want[m.GuestID])
				}
			}
			md, err := f.inv.GroupMetadata(f.ctx, "nginx")
			if err != nil {
				t.Fatalf("served metadata: %v", err)
			}
			for _, m := range md.Members {
				if m.Priority != tc.want[m.GuestID] {
					t.Errorf("served member %s priority %d, want %d", m.Name, m.Priority, tc.want[m.GuestID])
				}
			}
			if diff := cmp.Diff([]inventory.Change{{Op: "instancegroup-set-priority", Group: "ig-nginx"}}, f.changes); diff != "" {
				t.Errorf("changes notified (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSetPriorityWithoutVIP: a group without VIP has no document to
// serve; its members' priorities are still checked and stored.
func TestSetPriorityWithoutVIP(t *testing.T) {
	f := newUpdFixture(t)
	if _, err := f.inv.CreateGroup(f.ctx, api.GroupCreate{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.inv.Join(f.ctx, "web", []string{"third"}); err != nil {
		t.Fatal(err)
	}
	v, err := f.inv.SetPriority(f.ctx, "web", "third", 120)
	if err != nil || len(v.Members) != 1 || v.Members[0].Priority != 120 || v.Revision != 3 {
		t.Fatalf("SetPriority = %+v, %v; want priority 120 at revision 3", v, err)
	}
}

func priorities(g registry.Group) map[string]int {
	out := map[string]int{}
	for _, m := range g.Members {
		out[m.GuestID] = m.Priority
	}
	return out
}
