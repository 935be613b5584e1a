package neigh

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// TestLookup reads neighbour entries from a network namespace of its own:
// a veth with a permanent and a stale entry, and an address without one.
func TestLookup(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipUnprivileged(t, "needs root to create a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testutil.SkipUnprivileged(t, "needs iproute2's ip")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "vknb" + hex.EncodeToString(b[:])
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run("-n", name, "link", "add", "vkna0", "type", "veth", "peer", "name", "vknb0")
	run("-n", name, "link", "set", "vkna0", "up")
	run("-n", name, "neigh", "add", "192.0.2.5", "lladdr", "52:54:00:00:00:05", "dev", "vkna0", "nud", "permanent")
	run("-n", name, "neigh", "add", "192.0.2.6", "lladdr", "52:54:00:00:00:06", "dev", "vkna0", "nud", "stale")

	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	tab := New(h)
	cases := []struct{ addr, want string }{
		{"192.0.2.5", "52:54:00:00:00:05"},
		{"192.0.2.6", "52:54:00:00:00:06"},
		{"192.0.2.7", ""},
	}
	for _, tc := range cases {
		mac, err := tab.Lookup(netip.MustParseAddr(tc.addr))
		if err != nil {
			t.Fatalf("Lookup(%s): %v", tc.addr, err)
		}
		got := ""
		if mac != nil {
			got = mac.String()
		}
		if got != tc.want {
			t.Fatalf("Lookup(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
