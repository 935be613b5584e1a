package hostsync

import (
	"context"
	"net/netip"
	"os/exec"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// Privileged tests of the data plane in another network namespace
// ([dataplane] netns): OpenPlatform builds the Maps backend there, and the
// tests read (and edit by hand) what it programmed through netlink, never
// with nft.

// nsConn is an nftables connection into the named namespace; the handle
// is closed when the test ends.
func nsConn(t *testing.T, ns string) *nftables.Conn {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var nsTable = &nftables.Table{Name: eip.DefaultTable, Family: nftables.TableFamilyIPv4}

// nsMap reads the map name of the backend's table in ns as "key → value"
// strings; nil when the table does not exist.
func nsMap(t *testing.T, c *nftables.Conn, name string) map[string]string {
	t.Helper()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tb := range tables {
		found = found || tb.Name == nsTable.Name
	}
	if !found {
		return nil
	}
	s, err := c.GetSetByName(nsTable, name)
	if err != nil {
		t.Fatalf("map %s: %v", name, err)
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range els {
		k, _ := netip.AddrFromSlice(e.Key)
		v, _ := netip.AddrFromSlice(e.Val)
		out[k.String()] = v.String()
	}
	return out
}

// nsRoutes lists the backend's VIP routes in ns as "VIP via NEXTHOP".
func nsRoutes(t *testing.T, ns string) []string {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: eip.DefaultRouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Dst.IP.String()+" via "+r.Gw.String())
	}
	return out
}

// gapWatcher is a registry.Watcher whose callback the test calls: with
// nil it simulates the watch re-established after a gap.
type gapWatcher struct {
	fn chan func([]registry.Change)
}

func (w *gapWatcher) Watch(ctx context.Context, fn func([]registry.Change)) error {
	w.fn <- fn
	<-ctx.Done()
	return ctx.Err()
}

// TestNetnsDataPlaneMapsWithoutNFT is issue 14's "no `ip netns exec` or
// nft process on any path" for [dataplane] netns: with PATH emptied (so
// neither nft nor ip could be started) OpenPlatform programs the EIP as
// elements of the two maps in that namespace; an element deleted there by
// hand stays deleted through a plain reapply (applies write only
// differences) and is repaired by the reconcile that follows a registry
// watch re-established after a gap.
func TestNetnsDataPlaneMapsWithoutNFT(t *testing.T) {
	testutil.RequireRoot(t)
	ns := testutil.NewNetns(t, "dm")
	cfg, err := ParseConfig("test.toml", []byte("[dataplane]\nnetns = \""+ns+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	for _, bin := range []string{eip.DefaultNFT, "ip"} {
		if p, err := exec.LookPath(bin); err == nil {
			t.Fatalf("%s is still found (%s) with PATH emptied", bin, p)
		}
	}
	p, err := OpenPlatform(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Platform.Close: %v", err)
		}
	})
	if _, ok := p.Backend.(*eip.Maps); !ok {
		t.Fatalf("backend %T with dataplane.netns, want *eip.Maps", p.Backend)
	}
	f := newFixture(t, func(o *Options) { o.Backend = p.Backend })
	c := nsConn(t, ns)

	f.nginx() // binds EIP 203.0.113.5 to VIP 192.0.2.10 and applies
	wantE2V, wantV2E := map[string]string{"203.0.113.5": "192.0.2.10"}, map[string]string{"192.0.2.10": "203.0.113.5"}
	check := func(when string) {
		t.Helper()
		if d := cmp.Diff(wantE2V, nsMap(t, c, eip.MapEIPToVIP)); d != "" {
			t.Errorf("%s: %s (-want +got):\n%s", when, eip.MapEIPToVIP, d)
		}
		if d := cmp.Diff(wantV2E, nsMap(t, c, eip.MapVIPToEIP)); d != "" {
			t.Errorf("%s: %s (-want +got):\n%s", when, eip.MapVIPToEIP, d)
		}
	}
	check("after the EIP was bound")
	if rs := nsRoutes(t, ns); len(rs) != 0 {
		t.Errorf("routes %v for a group without owner, want none", rs)
	}

	ctx, cancel := context.WithCancel(f.ctx)
	w := &gapWatcher{fn: make(chan func([]registry.Change))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ownership.FollowWatch(ctx, f.svc.Engine, w, testLogger(t))
	}()
	defer func() { cancel(); <-done }()
	fn := <-w.fn

	// An operator deletes the EIP's element by hand.
	e, v := ip("203.0.113.5").As4(), ip("192.0.2.10").As4()
	set, err := c.GetSetByName(nsTable, eip.MapEIPToVIP)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeleteElements(set, []nftables.SetElement{{Key: e[:], Val: v[:]}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := nsMap(t, c, eip.MapEIPToVIP); len(got) != 0 {
		t.Fatalf("after the hand deletion %s = %v, want empty", eip.MapEIPToVIP, got)
	}
	if err := f.svc.Reapply(f.ctx); err != nil {
		t.Fatal(err)
	}
	if got := nsMap(t, c, eip.MapEIPToVIP); len(got) != 0 {
		t.Fatalf("a plain reapply wrote %s = %v; want it to write only differences (the test relies on it)", eip.MapEIPToVIP, got)
	}

	fn(nil) // the registry watch re-established after a gap
	waitFor(t, "the deleted element repaired", func() bool { return len(nsMap(t, c, eip.MapEIPToVIP)) == 1 })
	check("after the watch gap")
}
