package eip

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
)

// Privileged tests: a lab of network namespaces with real nftables and
// routes. The test binary doubles as the HTTP server and client that run
// inside the namespaces (see TestMain).

const (
	helperEnv       = "VIPKEEPER_EIP_TEST_HELPER" // "server" or "client"
	helperNameEnv   = "VIPKEEPER_EIP_TEST_NAME"   // server: the body it answers
	helperListenEnv = "VIPKEEPER_EIP_TEST_LISTEN" // server: listen address
	helperURLEnv    = "VIPKEEPER_EIP_TEST_URL"    // client: what to GET
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "server":
		name := os.Getenv(helperNameEnv)
		err := http.ListenAndServe(os.Getenv(helperListenEnv), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, name)
		}))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	case "client":
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
		resp, err := c.Get(os.Getenv(helperURLEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			fmt.Fprintln(os.Stderr, resp.Status, err)
			os.Exit(1)
		}
		os.Stdout.Write(body)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// netnsNFT is an NFTOptions.Run that applies the script with
// `ip netns exec NS nft -f -`.
func netnsNFT(ns string) func(context.Context, []byte) error {
	return func(ctx context.Context, script []byte) error {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
		cmd.Stdin = bytes.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
}

// forkNFT is an NFTOptions.Run that starts nft from a thread inside ns, so
// only nft itself is timed.
func forkNFT(ns string) func(context.Context, []byte) error {
	return func(ctx context.Context, script []byte) error {
		return testutil.InNetns(ns, func() error {
			cmd := exec.CommandContext(ctx, "nft", "-f", "-")
			cmd.Stdin = bytes.NewReader(script)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		})
	}
}

// netlinkAt returns a netlink handle inside ns, closed when the test ends.
func netlinkAt(tb testing.TB, ns string) *netlink.Handle {
	tb.Helper()
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		tb.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(h.Close)
	return h
}

// startHelper runs the test binary as a helper inside ns and stops it, by
// PID, when the test ends.
func startHelper(t *testing.T, ns string, env ...string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
}

// waitBody GETs url from inside ns until the answer is want or the
// deadline passes.
func waitBody(t *testing.T, ns, url, want string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		cmd := exec.Command("ip", "netns", "exec", ns, exe)
		cmd.Env = append(os.Environ(), helperEnv+"=client", helperURLEnv+"="+url)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil && string(out) == want {
			return
		}
		last = fmt.Sprintf("body %q, err %v, stderr %q", out, err, strings.TrimSpace(stderr.String()))
		time.Sleep(100 * time.Millisecond) // pacing between attempts, not an assertion
	}
	t.Fatalf("GET %s from %s never answered %q; last: %s", url, ns, want, last)
}

func nftList(t *testing.T, ns string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v\n%s", err, out)
	}
	return string(out)
}

func TestNetnsGoldenScriptsLoad(t *testing.T) {
	testutil.RequireRoot(t, "nft")
	ns := testutil.NewNetns(t, "en")
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			golden := filepath.Join("testdata", tc.name+".golden")
			for _, args := range [][]string{{"-c", "-f", golden}, {"-f", golden}, {"-f", golden}} {
				if out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...).CombinedOutput(); err != nil {
					t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			}
			has := strings.Contains(nftList(t, ns), "table ip vipkeeper")
			if has != (len(plan(tc.mappings).nat) > 0) {
				t.Errorf("table present = %v after loading %s", has, golden)
			}
		})
	}
}

// TestNetnsEIPFollowsVIP runs a client through a gateway namespace
// programmed by each nftables backend: the EIP reaches the VIP on A, then
// on B after the VIP moved.
func TestNetnsEIPFollowsVIP(t *testing.T) {
	testutil.RequireRoot(t, "nft")
	for _, tc := range []struct {
		name string
		open func(t *testing.T, gw string) Backend
	}{
		{"nft", func(t *testing.T, gw string) Backend {
			n, err := NewNFT(NFTOptions{Run: netnsNFT(gw), Netlink: netlinkAt(t, gw), Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			return n
		}},
		{"maps", func(t *testing.T, gw string) Backend { return newNetnsMaps(t, gw, true) }},
	} {
		t.Run(tc.name, func(t *testing.T) { testEIPFollowsVIP(t, tc.open) })
	}
}

func testEIPFollowsVIP(t *testing.T, open func(t *testing.T, gw string) Backend) {
	client, gw, srvA, srvB := testutil.NewNetns(t, "ec"), testutil.NewNetns(t, "eg"), testutil.NewNetns(t, "ea"), testutil.NewNetns(t, "eb")

	// client 198.51.100.2 -- 198.51.100.1 gateway 192.0.2.1 (bridge) -- A 192.0.2.11, B 192.0.2.12
	testutil.IP(t, "-n", client, "link", "add", "c0", "type", "veth", "peer", "name", "g0", "netns", gw)
	testutil.IP(t, "-n", client, "addr", "add", "198.51.100.2/24", "dev", "c0")
	testutil.IP(t, "-n", client, "link", "set", "c0", "up")
	testutil.IP(t, "-n", client, "route", "add", "203.0.113.0/24", "via", "198.51.100.1")
	testutil.IP(t, "-n", gw, "addr", "add", "198.51.100.1/24", "dev", "g0")
	testutil.IP(t, "-n", gw, "link", "set", "g0", "up")
	testutil.IP(t, "-n", gw, "link", "add", "br0", "type", "bridge")
	testutil.IP(t, "-n", gw, "addr", "add", "192.0.2.1/24", "dev", "br0")
	testutil.IP(t, "-n", gw, "link", "set", "br0", "up")
	if out, err := exec.Command("ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("enable forwarding: %v\n%s", err, out)
	}
	for _, s := range []struct{ ns, port, dev, addr, name string }{
		{srvA, "pa", "a0", "192.0.2.11/24", "A"},
		{srvB, "pb", "b0", "192.0.2.12/24", "B"},
	} {
		testutil.IP(t, "-n", gw, "link", "add", s.port, "type", "veth", "peer", "name", s.dev, "netns", s.ns)
		testutil.IP(t, "-n", gw, "link", "set", s.port, "master", "br0")
		testutil.IP(t, "-n", gw, "link", "set", s.port, "up")
		testutil.IP(t, "-n", s.ns, "addr", "add", s.addr, "dev", s.dev)
		testutil.IP(t, "-n", s.ns, "link", "set", s.dev, "up")
		testutil.IP(t, "-n", s.ns, "route", "add", "default", "via", "192.0.2.1")
		startHelper(t, s.ns, helperEnv+"=server", helperNameEnv+"="+s.name, helperListenEnv+"=0.0.0.0:8080")
	}
	testutil.IP(t, "-n", srvA, "addr", "add", "192.0.2.10/24", "dev", "a0")

	n := open(t, gw)
	mapping := Mapping{Group: "nginx", EIP: netip.MustParseAddr("203.0.113.5"), VIP: netip.MustParseAddr("192.0.2.10"), Owner: "A"}
	if err := n.Apply(t.Context(), []Mapping{mapping}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	first := nftList(t, gw)
	waitBody(t, client, "http://203.0.113.5:8080/", "A")

	// The VIP moves to B, which announces it, and the mapping is applied again.
	testutil.IP(t, "-n", srvA, "addr", "del", "192.0.2.10/24", "dev", "a0")
	testutil.IP(t, "-n", srvB, "addr", "add", "192.0.2.10/24", "dev", "b0")
	var macB net.HardwareAddr
	var sender *garp.Sender
	var closer io.Closer
	if err := testutil.InNetns(srvB, func() error {
		ifi, err := net.InterfaceByName("b0")
		if err != nil {
			return err
		}
		macB = ifi.HardwareAddr
		sender, closer, err = garp.OpenSender("b0", garp.Options{Logger: testLogger(t)})
		return err
	}); err != nil {
		t.Fatalf("GARP sender in B: %v", err)
	}
	defer closer.Close()
	if _, err := sender.Announce(t.Context(), mapping.VIP, macB); err != nil {
		t.Fatalf("Announce: %v", err)
	}
	// The gateway learnt B's MAC from the announcement.
	neigh := ""
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if neigh = testutil.IP(t, "-n", gw, "neigh", "show", "192.0.2.10", "dev", "br0"); strings.Contains(neigh, macB.String()) {
			break
		}
	}
	if !strings.Contains(neigh, macB.String()) {
		t.Errorf("gateway neighbour for the VIP = %q, want B's MAC %s", neigh, macB)
	}

	mapping.Owner, mapping.OwnerMAC = "B", macB.String()
	if err := n.Apply(t.Context(), []Mapping{mapping}); err != nil {
		t.Fatalf("Apply after move: %v", err)
	}
	if again := nftList(t, gw); again != first {
		t.Errorf("applying the same NAT again changed the ruleset:\n%s\nthen:\n%s", first, again)
	}
	waitBody(t, client, "http://203.0.113.5:8080/", "B")

	// No mapping left: the table goes away.
	if err := n.Apply(t.Context(), nil); err != nil {
		t.Fatalf("Apply(nil): %v", err)
	}
	if rs := nftList(t, gw); strings.Contains(rs, "vipkeeper") {
		t.Errorf("table left after an empty apply:\n%s", rs)
	}
}

func TestNetnsVIPRoutes(t *testing.T) {
	testutil.RequireRoot(t)
	ns, peer := testutil.NewNetns(t, "er"), testutil.NewNetns(t, "ep")
	testutil.IP(t, "-n", ns, "link", "add", "r0", "type", "veth", "peer", "name", "p0", "netns", peer)
	testutil.IP(t, "-n", ns, "addr", "add", "198.51.100.1/24", "dev", "r0")
	testutil.IP(t, "-n", ns, "link", "set", "r0", "up")
	testutil.IP(t, "-n", peer, "link", "set", "p0", "up")
	testutil.IP(t, "-n", ns, "route", "add", "192.0.2.99/32", "via", "198.51.100.30", "proto", "static")

	hostBefore := hostOwnedRoutes(t)
	rec := &scriptRecorder{}
	n, err := NewNFT(NFTOptions{Run: rec.run, Netlink: netlinkAt(t, ns), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	eip, vip := netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("192.0.2.10")
	show := func() string {
		return strings.TrimSpace(testutil.IP(t, "-n", ns, "route", "show", "proto", fmt.Sprint(DefaultRouteProtocol)))
	}
	for _, step := range []struct {
		name     string
		mappings []Mapping
		want     string
	}{
		{"next hop set", []Mapping{{Group: "g", EIP: eip, VIP: vip, NextHop: netip.MustParseAddr("198.51.100.20")}},
			"192.0.2.10 via 198.51.100.20 dev r0"},
		{"same again", []Mapping{{Group: "g", EIP: eip, VIP: vip, NextHop: netip.MustParseAddr("198.51.100.20")}},
			"192.0.2.10 via 198.51.100.20 dev r0"},
		{"owner moved", []Mapping{{Group: "g", EIP: eip, VIP: vip, NextHop: netip.MustParseAddr("198.51.100.21")}},
			"192.0.2.10 via 198.51.100.21 dev r0"},
		{"directly connected", []Mapping{{Group: "g", EIP: eip, VIP: vip}}, ""},
		{"next hop again", []Mapping{{Group: "g", EIP: eip, VIP: vip, NextHop: netip.MustParseAddr("198.51.100.22")}},
			"192.0.2.10 via 198.51.100.22 dev r0"},
		{"mapping removed", nil, ""},
	} {
		if err := n.Apply(t.Context(), step.mappings); err != nil {
			t.Fatalf("%s: Apply: %v", step.name, err)
		}
		if got := show(); got != step.want {
			t.Errorf("%s: routes of protocol %d = %q, want %q", step.name, DefaultRouteProtocol, got, step.want)
		}
	}
	if got := testutil.IP(t, "-n", ns, "route", "show", "192.0.2.99/32"); !strings.Contains(got, "via 198.51.100.30") {
		t.Errorf("foreign static route touched: %q", got)
	}

	// An unreachable next hop is an error and leaves no stale route.
	if err := n.Apply(t.Context(), []Mapping{{Group: "g", EIP: eip, VIP: vip, NextHop: netip.MustParseAddr("198.51.100.20")}}); err != nil {
		t.Fatal(err)
	}
	if err := n.Apply(t.Context(), []Mapping{{Group: "g", EIP: eip, VIP: vip, NextHop: netip.MustParseAddr("203.0.113.77")}}); err == nil {
		t.Error("Apply with an unreachable next hop succeeded")
	}
	if got := show(); got != "" {
		t.Errorf("stale route kept after a failed replace: %q", got)
	}
	if after := hostOwnedRoutes(t); after != hostBefore {
		t.Errorf("the host's own routes of protocol %d changed: %q → %q", DefaultRouteProtocol, hostBefore, after)
	}
}

// hostOwnedRoutes lists the routes of DefaultRouteProtocol in the test's
// own namespace, to prove the tests never touch it.
func hostOwnedRoutes(t *testing.T) string {
	out, err := exec.Command("ip", "route", "show", "table", "all", "proto", fmt.Sprint(DefaultRouteProtocol)).CombinedOutput()
	if err != nil {
		t.Fatalf("ip route show: %v\n%s", err, out)
	}
	return string(out)
}

// BenchmarkNFTApply measures one Apply of the script backend (one atomic
// `nft -f` transaction plus the route sync) of 1 to 10,000 mappings in a
// network namespace; compare BenchmarkMapsApply.
// nft is started from a thread inside the namespace, so no `ip netns exec`
// is timed.
func BenchmarkNFTApply(b *testing.B) {
	testutil.RequireRoot(b, "nft")
	for _, size := range []int{1, 100, 1_000, 10_000} {
		b.Run(fmt.Sprintf("mappings=%d", size), func(b *testing.B) {
			ns := testutil.NewNetns(b, "ex")
			n, err := NewNFT(NFTOptions{Run: forkNFT(ns), Netlink: netlinkAt(b, ns)})
			if err != nil {
				b.Fatal(err)
			}
			ms := manyMappings(size)
			ctx := b.Context()
			for b.Loop() {
				if err := n.Apply(ctx, ms); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
