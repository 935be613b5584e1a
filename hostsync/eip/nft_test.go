package eip

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var addr = netip.MustParseAddr

// renderCases are rendered to testdata/<name>.golden; the privileged test
// also loads each golden into a real nftables in a network namespace.
var renderCases = []struct {
	name     string
	mappings []Mapping
}{
	{"empty", nil},
	{"nginx", []Mapping{{
		Group: "nginx", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10"),
		Owner: "nginx-master", OwnerMAC: "52:54:00:00:02:0b", OwnerHost: "host-a",
	}}},
	{"sorted_and_skipped", []Mapping{
		{Group: "web", EIP: addr("203.0.113.7"), VIP: addr("192.0.2.30"), NextHop: addr("198.51.100.21")},
		{Group: "db", EIP: addr("::ffff:203.0.113.6"), VIP: addr("::ffff:192.0.2.20")},
		{Group: "pending", VIP: addr("192.0.2.40")},
		{Group: "v6", EIP: addr("2001:db8::5"), VIP: addr("2001:db8:1::10")},
		{Group: "zz-dup-eip", EIP: addr("203.0.113.6"), VIP: addr("192.0.2.50")},
		{Group: "zz-dup-vip", EIP: addr("203.0.113.9"), VIP: addr("192.0.2.30")},
		{Group: `evil"; flush ruleset; #`, EIP: addr("203.0.113.8"), VIP: addr("192.0.2.60")},
	}},
}

func TestRenderNFTGolden(t *testing.T) {
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RenderNFT(DefaultTable, tc.mappings)
			if err != nil {
				t.Fatalf("RenderNFT: %v", err)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("RenderNFT (-want +got):\n%s", diff)
			}
			// Nothing but addresses from a mapping reaches the script.
			for _, m := range tc.mappings {
				if m.Group != "" && strings.Contains(string(got), m.Group) {
					t.Errorf("script contains group name %q", m.Group)
				}
			}
			// Rendering is a pure function of the set, not of its order.
			rev := slices.Clone(tc.mappings)
			slices.Reverse(rev)
			again, _ := RenderNFT(DefaultTable, rev)
			if diff := cmp.Diff(string(got), string(again)); diff != "" {
				t.Errorf("RenderNFT depends on input order (-first +reversed):\n%s", diff)
			}
		})
	}
}

func TestRenderNFTRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		table    string
		mappings []Mapping
		want     []string // lines that must appear, in this order
		absent   []string
	}{
		{
			name:     "one mapping, custom table",
			table:    "vk_test",
			mappings: []Mapping{{Group: "g", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10")}},
			want: []string{
				"table ip vk_test",
				"delete table ip vk_test",
				"table ip vk_test {",
				"type nat hook prerouting priority dstnat; policy accept;",
				"ip daddr 203.0.113.5 dnat to 192.0.2.10",
				"type nat hook output priority -100; policy accept;",
				"ip daddr 203.0.113.5 dnat to 192.0.2.10",
				"type nat hook postrouting priority srcnat; policy accept;",
				"ip saddr 192.0.2.10 snat to 203.0.113.5",
			},
		},
		{
			name:     "nothing to map removes the table",
			table:    "vipkeeper",
			mappings: []Mapping{{Group: "g", VIP: addr("192.0.2.10")}},
			want:     []string{"table ip vipkeeper", "delete table ip vipkeeper"},
			absent:   []string{"{", "dnat", "snat"},
		},
		{
			name:  "next hop does not change NAT",
			table: "vipkeeper",
			mappings: []Mapping{{Group: "g", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10"),
				NextHop: addr("198.51.100.20")}},
			want:   []string{"ip daddr 203.0.113.5 dnat to 192.0.2.10", "ip saddr 192.0.2.10 snat to 203.0.113.5"},
			absent: []string{"198.51.100.20"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := RenderNFT(tc.table, tc.mappings)
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for l := range strings.Lines(string(b)) {
				lines = append(lines, strings.TrimSpace(l))
			}
			i := 0
			for _, l := range lines {
				if i < len(tc.want) && l == tc.want[i] {
					i++
				}
			}
			if i != len(tc.want) {
				t.Errorf("line %q missing or out of order in:\n%s", tc.want[i], b)
			}
			for _, a := range tc.absent {
				if strings.Contains(string(b), a) {
					t.Errorf("script contains %q:\n%s", a, b)
				}
			}
		})
	}
}

func TestRenderNFTTableName(t *testing.T) {
	for _, name := range []string{"", "1abc", "a b", "a;flush ruleset", "a-b", strings.Repeat("a", 33), "tåble"} {
		if _, err := RenderNFT(name, nil); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("RenderNFT(%q) error = %v, want ErrInvalidOptions", name, err)
		}
		if _, err := NewNFT(NFTOptions{Table: name}); name != "" && !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("NewNFT(table %q) error = %v, want ErrInvalidOptions", name, err)
		}
	}
	for _, o := range []NFTOptions{{RouteProtocol: 4}, {RouteProtocol: 256}, {RouteTable: -1}, {Timeout: -1}} {
		if _, err := NewNFT(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("NewNFT(%+v) error = %v, want ErrInvalidOptions", o, err)
		}
	}
}

func TestPlan(t *testing.T) {
	p := plan(renderCases[2].mappings)
	wantNAT := []nat{
		{eip: addr("203.0.113.6"), vip: addr("192.0.2.20")}, // db, unmapped from ::ffff:
		{eip: addr("203.0.113.8"), vip: addr("192.0.2.60")}, // evil, its name harmless
		{eip: addr("203.0.113.7"), vip: addr("192.0.2.30")}, // web
	}
	wantRoutes := []route{{vip: addr("192.0.2.30"), via: addr("198.51.100.21")}}
	var skipped []string
	for _, s := range p.skipped {
		skipped = append(skipped, s.group+": "+s.reason)
	}
	wantSkipped := []string{
		`pending: no EIP or no VIP`,
		`v6: not IPv4`,
		`zz-dup-eip: address already mapped for group "db"`,
		`zz-dup-vip: address already mapped for group "web"`,
	}
	opt := cmp.AllowUnexported(nat{}, route{})
	addrCmp := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	if diff := cmp.Diff(wantNAT, p.nat, opt, addrCmp); diff != "" {
		t.Errorf("nat (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantRoutes, p.routes, opt, addrCmp); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantSkipped, skipped); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}

	bad := plan([]Mapping{{Group: "g", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10"), NextHop: addr("2001:db8::1")}})
	if len(bad.nat) != 1 || len(bad.routes) != 0 || len(bad.skipped) != 1 {
		t.Errorf("IPv6 next hop: plan = %+v, want NAT kept, no route, one skip note", bad)
	}
}

// fakeRoutes is an in-memory routing table behind routeOps.
type fakeRoutes struct {
	mu       sync.Mutex
	routes   []netlink.Route
	failVia  map[string]bool // RouteReplace fails for these gateways
	replaced []string
	deleted  []string
}

func routeKey(r netlink.Route) string { return r.Dst.String() + " via " + r.Gw.String() }

func (f *fakeRoutes) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if family != netlink.FAMILY_V4 || mask != netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE {
		return nil, errors.New("fake: unexpected filter")
	}
	var out []netlink.Route
	for _, r := range f.routes {
		if r.Protocol == filter.Protocol && r.Table == filter.Table {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeRoutes) RouteReplace(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failVia[r.Gw.String()] {
		return syscall.ENETUNREACH
	}
	f.replaced = append(f.replaced, routeKey(*r))
	for i, old := range f.routes {
		if old.Dst.String() == r.Dst.String() && old.Table == r.Table {
			f.routes[i] = *r
			return nil
		}
	}
	f.routes = append(f.routes, *r)
	return nil
}

func (f *fakeRoutes) RouteDel(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, old := range f.routes {
		if old.Dst.String() == r.Dst.String() && old.Table == r.Table && old.Protocol == r.Protocol {
			f.routes = slices.Delete(f.routes, i, i+1)
			f.deleted = append(f.deleted, routeKey(*r))
			return nil
		}
	}
	return syscall.ESRCH
}

func (f *fakeRoutes) table() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.routes {
		out = append(out, routeKey(r))
	}
	slices.Sort(out)
	return out
}

func (f *fakeRoutes) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replaced, f.deleted = nil, nil
}

// scriptRecorder is an NFTOptions.Run that records scripts.
type scriptRecorder struct {
	mu      sync.Mutex
	scripts []string
	err     error
}

func (r *scriptRecorder) run(_ context.Context, script []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scripts = append(r.scripts, string(script))
	return r.err
}

func newTestNFT(t *testing.T, rec *scriptRecorder, routes *fakeRoutes) *NFT {
	t.Helper()
	n, err := NewNFT(NFTOptions{Run: rec.run, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	n.routes = routes
	return n
}

func TestNFTApply(t *testing.T) {
	foreign := netlink.Route{ // a static route of somebody else
		Dst: &net.IPNet{IP: net.IPv4(192, 0, 2, 99).To4(), Mask: net.CIDRMask(32, 32)}, Gw: net.IPv4(198, 51, 100, 30).To4(),
		Protocol: 4, Table: mainTable,
	}
	stale := netlink.Route{ // ours, from an earlier run, no longer wanted
		Dst: &net.IPNet{IP: net.IPv4(192, 0, 2, 77).To4(), Mask: net.CIDRMask(32, 32)}, Gw: net.IPv4(198, 51, 100, 20).To4(),
		Protocol: DefaultRouteProtocol, Table: mainTable,
	}
	routes := &fakeRoutes{routes: []netlink.Route{foreign, stale}}
	rec := &scriptRecorder{}
	n := newTestNFT(t, rec, routes)

	ms := []Mapping{
		{Group: "a", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10"), NextHop: addr("198.51.100.20")},
		{Group: "b", EIP: addr("203.0.113.6"), VIP: addr("192.0.2.20")},
	}
	if err := n.Apply(t.Context(), ms); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantScript, _ := RenderNFT(DefaultTable, ms)
	if len(rec.scripts) != 1 || rec.scripts[0] != string(wantScript) {
		t.Errorf("nft ran %d scripts, want the rendered one once:\n%v", len(rec.scripts), rec.scripts)
	}
	wantTable := []string{"192.0.2.10/32 via 198.51.100.20", "192.0.2.99/32 via 198.51.100.30"}
	if diff := cmp.Diff(wantTable, routes.table()); diff != "" {
		t.Errorf("routes after first apply (-want +got):\n%s", diff)
	}

	t.Run("idempotent", func(t *testing.T) {
		routes.reset()
		if err := n.Apply(t.Context(), ms); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if rec.scripts[len(rec.scripts)-1] != rec.scripts[0] {
			t.Error("second apply rendered another script")
		}
		if len(routes.deleted) != 0 {
			t.Errorf("second apply deleted %v", routes.deleted)
		}
		if diff := cmp.Diff(wantTable, routes.table()); diff != "" {
			t.Errorf("routes (-want +got):\n%s", diff)
		}
	})

	t.Run("owner moves", func(t *testing.T) {
		moved := slices.Clone(ms)
		moved[0].NextHop = addr("198.51.100.21")
		if err := n.Apply(t.Context(), moved); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		want := []string{"192.0.2.10/32 via 198.51.100.21", "192.0.2.99/32 via 198.51.100.30"}
		if diff := cmp.Diff(want, routes.table()); diff != "" {
			t.Errorf("routes (-want +got):\n%s", diff)
		}
	})

	t.Run("unreachable next hop removes the stale route", func(t *testing.T) {
		routes.failVia = map[string]bool{"198.51.100.22": true}
		defer func() { routes.failVia = nil }()
		moved := slices.Clone(ms)
		moved[0].NextHop = addr("198.51.100.22")
		err := n.Apply(t.Context(), moved)
		if !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("Apply = %v, want ENETUNREACH", err)
		}
		if diff := cmp.Diff([]string{"192.0.2.99/32 via 198.51.100.30"}, routes.table()); diff != "" {
			t.Errorf("routes (-want +got):\n%s", diff)
		}
	})

	t.Run("nft failure still syncs routes", func(t *testing.T) {
		rec.err = errors.New("Error: Could not process rule")
		defer func() { rec.err = nil }()
		err := n.Apply(t.Context(), ms)
		if !errors.Is(err, rec.err) {
			t.Errorf("Apply = %v, want the runner's error", err)
		}
		if diff := cmp.Diff(wantTable, routes.table()); diff != "" {
			t.Errorf("routes (-want +got):\n%s", diff)
		}
	})

	t.Run("empty set", func(t *testing.T) {
		if err := n.Apply(t.Context(), nil); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if got := rec.scripts[len(rec.scripts)-1]; strings.Contains(got, "{") {
			t.Errorf("empty apply still defines the table:\n%s", got)
		}
		if diff := cmp.Diff([]string{"192.0.2.99/32 via 198.51.100.30"}, routes.table()); diff != "" {
			t.Errorf("routes (-want +got):\n%s", diff)
		}
	})
}

func TestExecNFTError(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "nft")
	script := "#!/bin/sh\ncat >/dev/null\necho 'Error: syntax error, unexpected junk' >&2\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	n, err := NewNFT(NFTOptions{NFT: fake, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	n.routes = &fakeRoutes{}
	err = n.Apply(t.Context(), nil)
	if err == nil || !strings.Contains(err.Error(), "unexpected junk") {
		t.Errorf("Apply = %v, want an error carrying nft's stderr", err)
	}
}
