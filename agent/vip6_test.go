package agent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// dualMeta is testMeta with the IPv6 VIP 2001:db8::10/64.
func dualMeta(rev uint64) *vrrp.Metadata {
	m := testMeta(rev)
	m.VIP6 = netip.MustParsePrefix("2001:db8::10/64")
	return m
}

// TestDualStackPresencePerFamily: the status and every recorded
// transition say which of the two VIPs is on the interface, each family
// read on its own.
func TestDualStackPresencePerFamily(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, dualMeta(1)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	if st := h.status(); st.VIP6 != "2001:db8::10/64" || st.VIP6Present {
		t.Fatalf("status before MASTER: vip6 %q present %v", st.VIP6, st.VIP6Present)
	}
	// keepalived added the IPv4 VIP, the IPv6 one not (yet).
	h.link.set("192.0.2.11/24", "192.0.2.10/24")
	h.hook("INSTANCE", "VI_web", "MASTER", "100")
	hist := h.history()
	last := hist[len(hist)-1]
	if !last.VIPPresent || last.VIP6Present == nil || *last.VIP6Present {
		t.Fatalf("MASTER recorded with vip %v vip6 %v, want the IPv4 VIP only", last.VIPPresent, last.VIP6Present)
	}
	st := h.status()
	if !st.VIPPresent || st.VIP6Present || !strings.Contains(st.Sentence, "IPv6 VIP 2001:db8::10/64 missing from eth0") {
		t.Fatalf("status = %+v", st)
	}
	// Both on the interface: the reconcile loop sees the IPv6 one come.
	h.link.set("192.0.2.11/24", "192.0.2.10/24", "2001:db8::10/64")
	waitFor(t, "the IPv6 VIP seen", func() bool { return h.status().VIP6Present })
	if s := h.status().Sentence; !strings.Contains(s, "VIP 192.0.2.10/24 on eth0") || !strings.Contains(s, "IPv6 VIP 2001:db8::10/64 on eth0") {
		t.Errorf("sentence %q", s)
	}
	h.link.set("192.0.2.11/24")
	h.hook("INSTANCE", "VI_web", "BACKUP", "100")
	hist = h.history()
	last = hist[len(hist)-1]
	if last.VIPPresent || last.VIP6Present == nil || *last.VIP6Present {
		t.Errorf("BACKUP recorded with vip %v vip6 %v, want neither", last.VIPPresent, last.VIP6Present)
	}
	// A group without an IPv6 VIP records none.
	h2 := startTestAgent(t, metaJSON(t, testMeta(1)))
	h2.link.set("192.0.2.11/24", "192.0.2.10/24")
	h2.hook("INSTANCE", "VI_web", "MASTER", "100")
	if hist := h2.history(); hist[len(hist)-1].VIP6Present != nil {
		t.Errorf("IPv4-only group recorded vip6_present %v", *hist[len(hist)-1].VIP6Present)
	}
	if st := h2.status(); st.VIP6 != "" || strings.Contains(st.Sentence, "IPv6") {
		t.Errorf("IPv4-only status %+v", st)
	}
}

// TestDualStackStaleVIPsRemoved: keepalived killed leaves both VIPs;
// both are removed and STOP records neither present.
func TestDualStackStaleVIPsRemoved(t *testing.T) {
	h := startTestAgent(t, metaJSON(t, dualMeta(1)))
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	h.link.set("192.0.2.11/24", "192.0.2.10/24", "2001:db8::10/64")
	h.hook("INSTANCE", "VI_web", "MASTER", "100")
	h.ka.setRunning(false)
	waitFor(t, "STOP recorded", func() bool { return h.status().Role == vrrp.RoleStop })
	removed := h.link.removedAddrs()
	for _, a := range []string{"192.0.2.10", "2001:db8::10"} {
		if !slices.Contains(removed, netip.MustParseAddr(a)) {
			t.Errorf("removed %v, want %s among them", removed, a)
		}
	}
	hist := h.history()
	last := hist[len(hist)-1]
	if last.To != vrrp.RoleStop || last.VIPPresent || last.VIP6Present == nil || *last.VIP6Present {
		t.Errorf("transition = %+v", last)
	}
	if st := h.status(); st.VIPPresent || st.VIP6Present {
		t.Errorf("status = %+v", st)
	}
}
