package hostsync

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// tWriter sends log lines to t.Log.
type tWriter struct{ tb testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// openStore opens a real bbolt registry under t.TempDir().
func openStore(tb testing.TB) *registry.Bolt {
	tb.Helper()
	s, err := registry.OpenBolt(filepath.Join(tb.TempDir(), "hostsync.db"), time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recorder keeps the order of side effects across fakes.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// fakeAnnouncer records each round together with the owner the registry
// holds at that moment, so tests see that the CAS came first. Its burst
// is one round, done when Start returns, unless rounds is set: then the
// rounds after the first follow at those offsets (after the first round's
// 0) on a goroutine, until the schedule ends or ctx is cancelled, as
// garp.Sender's do.
type fakeAnnouncer struct {
	rec    *recorder
	store  registry.Store
	group  string
	rounds []time.Duration

	mu   sync.Mutex
	ctxs []context.Context // of every call, in order
}

func (f *fakeAnnouncer) Start(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) (garp.Progress, error) {
	f.mu.Lock()
	f.ctxs = append(f.ctxs, ctx)
	f.mu.Unlock()
	f.round(ctx, vip, mac)
	done := make(chan garp.Burst, 1)
	if len(f.rounds) == 0 {
		done <- garp.Burst{VIP: vip, MAC: mac, Rounds: 1, Sent: 2}
		close(done)
		return garp.Progress{Sent: 2, Done: done}, nil
	}
	start := time.Now()
	go func() {
		defer close(done)
		b := garp.Burst{VIP: vip, MAC: mac, Rounds: 1, Sent: 2}
		defer func() { done <- b }()
		for _, offset := range f.rounds {
			t := time.NewTimer(time.Until(start.Add(offset)))
			select {
			case <-ctx.Done():
				t.Stop()
				b.Cancelled = true
				return
			case <-t.C:
			}
			f.round(ctx, vip, mac)
			b.Rounds++
			b.Sent += 2
		}
	}()
	return garp.Progress{Sent: 2, Done: done}, nil
}

func (f *fakeAnnouncer) round(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) {
	owner := "?"
	if f.store != nil {
		_ = f.store.View(ctx, func(tx registry.Tx) error {
			o, err := inventory.Owner(tx, f.group)
			owner = o.GuestID
			return err
		})
	}
	f.rec.add("garp %s %s owner=%s", vip, mac, owner)
}

// ctx returns the context of the i-th call.
func (f *fakeAnnouncer) ctx(i int) context.Context {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ctxs[i]
}

// fakeBackend records every apply.
type fakeBackend struct {
	rec *recorder
	mu  sync.Mutex
	err error
	// last is the last applied set.
	last []eip.Mapping
	n    int
}

func (f *fakeBackend) Apply(_ context.Context, ms []eip.Mapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s:%s->%s@%s", m.Group, m.EIP, m.VIP, m.Owner)
	}
	if f.rec != nil {
		f.rec.add("apply %s", strings.Join(parts, " "))
	}
	if f.err != nil {
		return f.err
	}
	f.last = append([]eip.Mapping(nil), ms...)
	return nil
}

func (f *fakeBackend) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeBackend) lastSet() []eip.Mapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Addresses and MACs of the fixture (documentation ranges only).
var (
	vpcNet     = netip.MustParsePrefix("192.0.2.0/24")
	classicNet = netip.MustParsePrefix("198.51.100.0/25")
	tinyNet    = netip.MustParsePrefix("198.51.100.128/30")
	eipNet     = netip.MustParsePrefix("203.0.113.0/24")
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// fixture is a Service on a real bbolt file with networks and guests:
//
//	net1  192.0.2.0/24      VPC vpc1, reserved .200 .201
//	net2  198.51.100.0/25   classic
//	net3  198.51.100.128/30 classic, one usable address
//	pub   203.0.113.0/24    kind eip
//	g1 192.0.2.11, g2 192.0.2.12 (net1, one NIC)
//	g3 192.0.2.13 (net1, two NICs), g4 198.51.100.14 (net2), g5 192.0.2.15 (net1)
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
	f.ann = &fakeAnnouncer{rec: f.rec, store: f.store, group: "ig-nginx"}
	f.backend = &fakeBackend{rec: f.rec}
	o := Options{
		Logger: testLogger(tb), Announcer: f.ann, Backend: f.backend, Now: f.clock.Now,
		Hosts: map[string]netip.Addr{"host-a": ip("192.0.2.1"), "host-b": ip("192.0.2.2")},
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
	f.mustNetwork(api.NetworkCreate{ID: "net1", CIDR: vpcNet, VPCID: "vpc1", Reserved: []netip.Addr{ip("192.0.2.200"), ip("192.0.2.201")}})
	f.mustNetwork(api.NetworkCreate{ID: "net2", CIDR: classicNet})
	f.mustNetwork(api.NetworkCreate{ID: "net3", CIDR: tinyNet})
	f.mustNetwork(api.NetworkCreate{ID: "pub", CIDR: eipNet, Kind: "eip"})
	f.mustGuest("g1", "nginx-master", "net1", "192.0.2.11", "52:54:00:00:00:11", 1, "host-a")
	f.mustGuest("g2", "nginx-slave", "net1", "192.0.2.12", "52:54:00:00:00:12", 1, "host-b")
	f.mustGuest("g3", "two-nics", "net1", "192.0.2.13", "52:54:00:00:00:13", 2, "host-a")
	f.mustGuest("g4", "classic", "net2", "198.51.100.14", "52:54:00:00:00:14", 1, "host-a")
	f.mustGuest("g5", "third", "net1", "192.0.2.15", "52:54:00:00:00:15", 1, "host-b")
	f.rec.take()
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

// nginx builds the seed's group: nginx with nginx-master (priority 100)
// and nginx-slave (99), VIP 192.0.2.10 and EIP 203.0.113.5.
func (f *fixture) nginx() {
	f.t.Helper()
	f.mustGroup("nginx")
	f.mustJoin("nginx", "g1", "g2")
	f.mustAttach("nginx", api.AttachNetwork{IPAddr: ip("192.0.2.10")})
	f.mustCreateEIP("nginx", api.CreateGroupEIP{IPAddr: ip("203.0.113.5")})
	f.rec.take()
}

// owner reads the owner record of a group.
func (f *fixture) owner(group string) registry.Owner {
	f.t.Helper()
	var o registry.Owner
	err := f.store.View(f.ctx, func(tx registry.Tx) error {
		var err error
		o, err = inventory.Owner(tx, group)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

// roles reads every role record of a group.
func (f *fixture) roles(group string) []registry.RoleState {
	f.t.Helper()
	var rs []registry.RoleState
	err := f.store.View(f.ctx, func(tx registry.Tx) error {
		var err error
		rs, err = registry.List[registry.RoleState](tx, group+"/")
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return rs
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
