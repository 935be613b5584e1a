package hostsync

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
)

// TestNetnsEmptyRegistryKeepsNFTables is defect 5 of issue 11 with real
// nftables and routes in a network namespace, programmed as [dataplane]
// netns is (OpenPlatform: the Maps backend through netlink): the data
// plane holds a mapping (table, maps with its pair, a VIP route), hostsync
// starts on a new, empty registry (a mistyped db_path) and must leave all
// of it alone, log why and count it; started again with allow_empty it
// removes it.
func TestNetnsEmptyRegistryKeepsNFTables(t *testing.T) {
	testutil.RequireRoot(t)
	ns, peer := testutil.NewNetns(t, "dg"), testutil.NewNetns(t, "dp")
	testutil.IP(t, "-n", ns, "link", "add", "r0", "type", "veth", "peer", "name", "p0", "netns", peer)
	testutil.IP(t, "-n", ns, "addr", "add", "198.51.100.1/24", "dev", "r0")
	testutil.IP(t, "-n", ns, "link", "set", "r0", "up")
	testutil.IP(t, "-n", peer, "link", "set", "p0", "up")

	pcfg, err := ParseConfig("platform.toml", []byte("[dataplane]\nnetns = \""+ns+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := OpenPlatform(pcfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	backend, ok := p.Backend.(*eip.Maps)
	if !ok {
		t.Fatalf("backend %T with dataplane.netns, want *eip.Maps", p.Backend)
	}
	mapping := eip.Mapping{Group: "ig-nginx", EIP: ip("203.0.113.5"), VIP: ip("192.0.2.10"), NextHop: ip("198.51.100.20")}
	if err := backend.Apply(t.Context(), []eip.Mapping{mapping}); err != nil {
		t.Fatal(err)
	}
	c := nsConn(t, ns)
	programmed := func() (pairs map[string]string, route bool) {
		return nsMap(t, c, eip.MapEIPToVIP), slices.Contains(nsRoutes(t, ns), "192.0.2.10 via 198.51.100.20")
	}
	want := map[string]string{"203.0.113.5": "192.0.2.10"}
	if pairs, route := programmed(); !maps.Equal(pairs, want) || !route {
		t.Fatalf("before start: %s = %v, route %v; want %v and the route", eip.MapEIPToVIP, pairs, route, want)
	}
	if st, err := backend.Programmed(t.Context()); err != nil || st != (eip.State{Table: true, Rules: 3, Mappings: 1, Routes: 1}) {
		t.Fatalf("Programmed = %+v, %v; want the table, 3 rules, 1 mapping, 1 route", st, err)
	}

	// A mistyped db_path: a registry file that does not exist yet.
	dir := t.TempDir()
	start := func(extra string) (stop func(), logs *testutil.LogRecorder) {
		cfg, err := ParseConfig("test.toml", []byte(`
state_dir = "`+dir+`"
db_path = "`+filepath.Join(dir, "hostsync-typo.db")+`"
admin_socket = "`+filepath.Join(dir, "hostsync.sock")+`"
guest_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
reapply_interval = "1h"
[dataplane]
`+extra))
		if err != nil {
			t.Fatal(err)
		}
		logs = testutil.NewLogRecorder(testLogger(t).Handler())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- runWith(ctx, cfg, slog.New(logs), &Platform{Backend: backend}) }()
		return func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not stop")
			}
		}, logs
	}

	stop, logs := start("")
	waitFor(t, "the held apply logged", func() bool {
		_, ok := logs.Attr("data plane held: not applying an empty set", "reason")
		return ok
	})
	reason, _ := logs.Attr("data plane held: not applying an empty set", "reason")
	t.Logf("reason: %s", reason)
	if !strings.Contains(reason, "3 rules, 1 mappings, 1 routes") || !strings.Contains(reason, "allow-empty-dataplane") {
		t.Errorf("reason %q does not say what is kept and how to confirm", reason)
	}
	addr, _ := logs.Attr("hostsync started", "metrics")
	if got := testutil.Scrape(t, "http://"+addr+"/metrics")[`vipkeeper_hostsync_dataplane_applies_total{result="held"}`]; got < 1 {
		t.Errorf(`dataplane_applies_total{result="held"} = %v, want ≥ 1`, got)
	}
	stop()
	if pairs, route := programmed(); !maps.Equal(pairs, want) || !route {
		t.Fatalf("after a start on an empty registry: %s = %v, route %v; want them kept", eip.MapEIPToVIP, pairs, route)
	}

	// The operator confirms: the empty registry is applied.
	stop, _ = start("allow_empty = true\n")
	waitFor(t, "the data plane emptied", func() bool {
		pairs, route := programmed()
		return pairs == nil && !route // the table removed
	})
	stop()
	if st, err := backend.Programmed(t.Context()); err != nil || !st.Empty() {
		t.Errorf("after the confirmed start: %+v, %v; want nothing", st, err)
	}
}
