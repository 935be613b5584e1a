package ownership

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// service is what the engine's tests drive: the inventory wired to the
// engine, as hostsync.New wires them.
type service struct {
	*inventory.Inventory
	*Engine
}

func newService(ctx context.Context, store registry.Store, o Options) (*service, error) {
	e, err := New(ctx, store, o)
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
