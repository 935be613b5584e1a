package hostsync

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Shorthands for the shared fixtures (package hstest).
type (
	recorder      = hstest.Recorder
	fakeClock     = hstest.Clock
	fakeAnnouncer = hstest.Announcer
	fakeBackend   = hstest.Backend
)

var (
	vpcNet = hstest.VPCNet
	eipNet = hstest.EIPNet
)

// The nginx group's members as callers, and a notify transition.
var (
	master = hstest.Master
	slave  = hstest.Slave
)

func transition(seq uint64, to string) vrrp.Transition { return hstest.Transition(seq, to) }

func testLogger(tb testing.TB) *slog.Logger  { return hstest.Logger(tb) }
func openStore(tb testing.TB) *registry.Bolt { return hstest.OpenStore(tb) }
func newClock() *fakeClock                   { return hstest.NewClock() }
func ip(s string) netip.Addr                 { return hstest.IP(s) }
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	hstest.WaitFor(tb, what, cond)
}

// The guest API's test doubles (package hstest).
type fakeNeighbors = hstest.Neighbors

func guestDo(h http.Handler, method, path, from, body string, hdr map[string]string) *httptest.ResponseRecorder {
	return hstest.GuestDo(h, method, path, from, body, hdr)
}

// fixture is a Service on a real bbolt file with the seed's networks and
// guests (hstest.Seed).
type fixture struct {
	t       testing.TB
	ctx     context.Context
	svc     *Service
	store   *registry.Bolt
	clock   *fakeClock
	rec     *recorder
	ann     *fakeAnnouncer
	backend *fakeBackend
}

type fixtureOpt func(*Options)

func newFixture(tb testing.TB, opts ...fixtureOpt) *fixture {
	tb.Helper()
	f := &fixture{t: tb, ctx: context.Background(), store: openStore(tb), clock: newClock(), rec: &recorder{}}
	f.ann = &fakeAnnouncer{Rec: f.rec, Store: f.store, Group: "ig-nginx"}
	f.backend = &fakeBackend{Rec: f.rec}
	o := Options{
		Logger: testLogger(tb), Announcer: f.ann, Backend: f.backend, Now: f.clock.Now,
		Hosts: hstest.Hosts(),
	}
	for _, fn := range opts {
		fn(&o)
	}
	svc, err := New(f.ctx, f.store, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	f.svc = svc
	hstest.Seed(tb, f.ctx, f.svc.Inventory)
	f.rec.Take()
	return f
}

func (f *fixture) mustNetwork(req api.NetworkCreate) {
	f.t.Helper()
	if _, err := f.svc.CreateNetwork(f.ctx, req); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mustGuest(id, name, network, addr, mac string, nics int, host string) {
	f.t.Helper()
	_, err := f.svc.RegisterGuest(f.ctx, api.GuestRegister{ID: id, Name: name, NetworkID: network, Address: ip(addr), MAC: mac, NICs: nics, Host: host})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mustGroup(name string) {
	f.t.Helper()
	if _, err := f.svc.CreateGroup(f.ctx, api.GroupCreate{Name: name}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mustJoin(group string, guests ...string) {
	f.t.Helper()
	if _, err := f.svc.Join(f.ctx, group, guests); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mustAttach(group string, req api.AttachNetwork) api.GroupView {
	f.t.Helper()
	v, err := f.svc.AttachNetwork(f.ctx, group, req)
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func (f *fixture) mustCreateEIP(group string, req api.CreateGroupEIP) api.GroupView {
	f.t.Helper()
	v, err := f.svc.CreateGroupEIP(f.ctx, group, req)
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

// nginx builds the seed's group (hstest.Nginx).
func (f *fixture) nginx() {
	f.t.Helper()
	hstest.Nginx(f.t, f.ctx, f.svc.Inventory)
	f.rec.Take()
}

// owner reads the owner record of a group.
func (f *fixture) owner(group string) registry.Owner {
	f.t.Helper()
	return hstest.Owner(f.t, f.ctx, f.store, group)
}

// roles reads every role record of a group.
func (f *fixture) roles(group string) []registry.RoleState {
	f.t.Helper()
	return hstest.Roles(f.t, f.ctx, f.store, group)
}
