// Package hstest holds the test fixtures hostsync's packages share: a
// logger to t.Log, a registry under t.TempDir(), a settable clock, a
// recorder of side effects in order, recording fakes of the GARP
// announcer and the data plane, and the seed's networks, guests and
// group built through the inventory. Only tests import it.
package hstest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
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
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// tWriter sends log lines to t.Log.
type tWriter struct{ tb testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Logger logs to tb.Log at debug level.
func Logger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// OpenStore opens a real bbolt registry under tb.TempDir(), closed at
// cleanup.
func OpenStore(tb testing.TB) *registry.Bolt {
	tb.Helper()
	s, err := registry.OpenBolt(filepath.Join(tb.TempDir(), "hostsync.db"), time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// Clock is a settable clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at 2025-03-01 12:00 UTC.
func NewClock() *Clock {
	return &Clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Recorder keeps the order of side effects across fakes.
type Recorder struct {
	mu     sync.Mutex
	events []string
}

// Add records one event.
func (r *Recorder) Add(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// Take returns the events recorded since the last Take.
func (r *Recorder) Take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// Announcer records each round together with the owner the registry
// holds at that moment, so tests see that the CAS came first. Its burst
// is one round, done when Start returns, unless Rounds is set: then the
// rounds after the first follow at those offsets (after the first round's
// 0) on a goroutine, until the schedule ends or ctx is cancelled, as
// garp.Sender's do.
type Announcer struct {
	Rec    *Recorder
	Store  registry.Store
	Group  string
	Rounds []time.Duration

	mu   sync.Mutex
	ctxs []context.Context // of every call, in order
}

// Start records the first round and starts the burst.
func (f *Announcer) Start(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) (garp.Progress, error) {
	f.mu.Lock()
	f.ctxs = append(f.ctxs, ctx)
	f.mu.Unlock()
	f.round(ctx, vip, mac)
	done := make(chan garp.Burst, 1)
	if len(f.Rounds) == 0 {
		done <- garp.Burst{VIP: vip, MAC: mac, Rounds: 1, Sent: 2}
		close(done)
		return garp.Progress{Sent: 2, Done: done}, nil
	}
	start := time.Now()
	go func() {
		defer close(done)
		b := garp.Burst{VIP: vip, MAC: mac, Rounds: 1, Sent: 2}
		defer func() { done <- b }()
		for _, offset := range f.Rounds {
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

func (f *Announcer) round(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) {
	owner := "?"
	if f.Store != nil {
		_ = f.Store.View(ctx, func(tx registry.Tx) error {
			o, err := inventory.Owner(tx, f.Group)
			owner = o.GuestID
			return err
		})
	}
	f.Rec.Add("garp %s %s owner=%s", vip, mac, owner)
}

// Ctx returns the context of the i-th call.
func (f *Announcer) Ctx(i int) context.Context {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ctxs[i]
}

// Backend records every apply (in Rec, when set).
type Backend struct {
	Rec *Recorder

	mu  sync.Mutex
	err error
	// last is the last applied set.
	last []eip.Mapping
	n    int
}

// Apply records ms and fails with the error SetErr set.
func (f *Backend) Apply(_ context.Context, ms []eip.Mapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%s:%s->%s@%s", m.Group, m.EIP, m.VIP, m.Owner)
	}
	if f.Rec != nil {
		f.Rec.Add("apply %s", strings.Join(parts, " "))
	}
	if f.err != nil {
		return f.err
	}
	f.last = append([]eip.Mapping(nil), ms...)
	return nil
}

// SetErr makes every later Apply fail with err (nil: succeed).
func (f *Backend) SetErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

// LastSet returns the last set applied successfully.
func (f *Backend) LastSet() []eip.Mapping {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Applies counts the calls of Apply.
func (f *Backend) Applies() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// Addresses of the seed (documentation ranges only).
var (
	VPCNet     = netip.MustParsePrefix("192.0.2.0/24")
	VPCNet6    = netip.MustParsePrefix("2001:db8::/64") // net1's IPv6 prefix (dual-stack groups)
	ClassicNet = netip.MustParsePrefix("198.51.100.0/25")
	TinyNet    = netip.MustParsePrefix("198.51.100.128/30")
	EIPNet     = netip.MustParsePrefix("203.0.113.0/24")
)

// IP parses an address or panics.
func IP(s string) netip.Addr { return netip.MustParseAddr(s) }

// Hosts are the seed's hosts with the addresses VIPs are routed through.
func Hosts() map[string]netip.Addr {
	return map[string]netip.Addr{"host-a": IP("192.0.2.1"), "host-b": IP("192.0.2.2")}
}

// Seed creates the seed's networks and guests through inv:
//
//	net1  192.0.2.0/24      VPC vpc1, reserved .200 .201
//	net2  198.51.100.0/25   classic
//	net3  198.51.100.128/30 classic, one usable address
//	pub   203.0.113.0/24    kind eip
//	g1 192.0.2.11, g2 192.0.2.12 (net1, one NIC)
//	g3 192.0.2.13 (net1, two NICs), g4 198.51.100.14 (net2), g5 192.0.2.15 (net1)
func Seed(tb testing.TB, ctx context.Context, inv *inventory.Inventory) {
	tb.Helper()
	for _, req := range []api.NetworkCreate{
		{ID: "net1", CIDR: VPCNet, VPCID: "vpc1", Reserved: []netip.Addr{IP("192.0.2.200"), IP("192.0.2.201")}, CIDR6: VPCNet6},
		{ID: "net2", CIDR: ClassicNet},
		{ID: "net3", CIDR: TinyNet},
		{ID: "pub", CIDR: EIPNet, Kind: "eip"},
	} {
		if _, err := inv.CreateNetwork(ctx, req); err != nil {
			tb.Fatal(err)
		}
	}
	for _, g := range []struct {
		id, name, network, addr, mac string
		nics                         int
		host                         string
	}{
		{"g1", "nginx-master", "net1", "192.0.2.11", "52:54:00:00:00:11", 1, "host-a"},
		{"g2", "nginx-slave", "net1", "192.0.2.12", "52:54:00:00:00:12", 1, "host-b"},
		{"g3", "two-nics", "net1", "192.0.2.13", "52:54:00:00:00:13", 2, "host-a"},
		{"g4", "classic", "net2", "198.51.100.14", "52:54:00:00:00:14", 1, "host-a"},
		{"g5", "third", "net1", "192.0.2.15", "52:54:00:00:00:15", 1, "host-b"},
	} {
		_, err := inv.RegisterGuest(ctx, api.GuestRegister{ID: g.id, Name: g.name, NetworkID: g.network, Address: IP(g.addr), MAC: g.mac, NICs: g.nics, Host: g.host})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// Nginx builds the seed's group through inv: nginx with nginx-master
// (priority 100) and nginx-slave (99), VIP 192.0.2.10 and EIP
// 203.0.113.5.
func Nginx(tb testing.TB, ctx context.Context, inv *inventory.Inventory) {
	tb.Helper()
	if _, err := inv.CreateGroup(ctx, api.GroupCreate{Name: "nginx"}); err != nil {
		tb.Fatal(err)
	}
	if _, err := inv.Join(ctx, "nginx", []string{"g1", "g2"}); err != nil {
		tb.Fatal(err)
	}
	if _, err := inv.AttachNetwork(ctx, "nginx", api.AttachNetwork{IPAddr: IP("192.0.2.10")}); err != nil {
		tb.Fatal(err)
	}
	if _, err := inv.CreateGroupEIP(ctx, "nginx", api.CreateGroupEIP{IPAddr: IP("203.0.113.5")}); err != nil {
		tb.Fatal(err)
	}
}

// Owner reads the owner record of a group.
func Owner(tb testing.TB, ctx context.Context, s registry.Store, group string) registry.Owner {
	tb.Helper()
	var o registry.Owner
	err := s.View(ctx, func(tx registry.Tx) error {
		var err error
		o, err = inventory.Owner(tx, group)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// Roles reads every role record of a group.
func Roles(tb testing.TB, ctx context.Context, s registry.Store, group string) []registry.RoleState {
	tb.Helper()
	var rs []registry.RoleState
	err := s.View(ctx, func(tx registry.Tx) error {
		var err error
		rs, err = registry.List[registry.RoleState](tx, group+"/")
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rs
}

// Master and Slave are the nginx group's members as the guest API sees
// them (nginx-master g1 priority 100, nginx-slave g2 priority 99).
var (
	Master = inventory.Caller{Addr: IP("192.0.2.11")}
	Slave  = inventory.Caller{Addr: IP("192.0.2.12")}
)

// Transition is an agent's notify transition numbered seq to role to.
func Transition(seq uint64, to string) vrrp.Transition {
	return vrrp.Transition{Seq: seq, To: vrrp.Role(to), Source: "notify"}
}

// WaitFor polls cond until it holds or 10 s pass.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Neighbors is a neighbour table: address → MAC.
type Neighbors map[netip.Addr]string

// Lookup returns a's MAC, nil when unknown.
func (n Neighbors) Lookup(a netip.Addr) (net.HardwareAddr, error) {
	s, ok := n[a]
	if !ok {
		return nil, nil
	}
	return net.ParseMAC(s)
}

// GuestDo sends one request to the guest API as if from addr; a POST is
// application/json unless hdr sets another Content-Type.
func GuestDo(h http.Handler, method, path, from, body string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = from + ":40000"
	if method == http.MethodPost {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
