package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// service is what the handlers' tests serve: the inventory wired to the
// engine, as hostsync.New wires them.
type service struct {
	*inventory.Inventory
	*ownership.Engine
}

func newService(ctx context.Context, store registry.Store, o ownership.Options) (*service, error) {
	e, err := ownership.New(ctx, store, o)
	if err != nil {
		return nil, err
	}
	inv := inventory.New(store, inventory.Options{Logger: o.Logger, Now: o.Now, Changed: e.Changed})
	return &service{Inventory: inv, Engine: e}, nil
}

// Shorthands for the shared fixtures (package hstest).
type (
	recorder      = hstest.Recorder
	fakeClock     = hstest.Clock
	fakeAnnouncer = hstest.Announcer
	fakeBackend   = hstest.Backend
)

func testLogger(tb testing.TB) *slog.Logger  { return hstest.Logger(tb) }
func openStore(tb testing.TB) *registry.Bolt { return hstest.OpenStore(tb) }
func newClock() *fakeClock                   { return hstest.NewClock() }
func ip(s string) netip.Addr                 { return hstest.IP(s) }

// The guest API's test doubles (package hstest).
type fakeNeighbors = hstest.Neighbors

func guestDo(h http.Handler, method, path, from, body string, hdr map[string]string) *httptest.ResponseRecorder {
	return hstest.GuestDo(h, method, path, from, body, hdr)
}

// fixture is a service (inventory and engine) on a real bbolt file with the seed's networks and
// guests (hstest.Seed).
type fixture struct {
	t       testing.TB
	ctx     context.Context
	svc     *service
	store   *registry.Bolt
	clock   *fakeClock
	rec     *recorder
	ann     *fakeAnnouncer
	backend *fakeBackend
}

type fixtureOpt func(*ownership.Options)

func newFixture(tb testing.TB, opts ...fixtureOpt) *fixture {
	tb.Helper()
	f := &fixture{t: tb, ctx: context.Background(), store: openStore(tb), clock: newClock(), rec: &recorder{}}
	f.ann = &fakeAnnouncer{Rec: f.rec, Store: f.store, Group: "ig-nginx"}
	f.backend = &fakeBackend{Rec: f.rec}
	o := ownership.Options{
		Logger: testLogger(tb), Announcer: f.ann, Backend: f.backend, Now: f.clock.Now,
		Hosts: hstest.Hosts(),
	}
	for _, fn := range opts {
		fn(&o)
	}
	svc, err := newService(f.ctx, f.store, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	f.svc = svc
	hstest.Seed(tb, f.ctx, f.svc.Inventory)
	f.rec.Take()
	return f
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
