package eip

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	mnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestLimitsOf(t *testing.T) {
	ms := []Mapping{
		{Group: "a", EIP: addr("203.0.113.5"), VIP: addr("192.0.2.10"), Bandwidth: 10},
		{Group: "b", EIP: addr("203.0.113.6"), VIP: addr("192.0.2.20")},
		// Mapped IPv4: the same address.
		{Group: "c", EIP: addr("::ffff:203.0.113.7"), VIP: addr("192.0.2.30"), Bandwidth: 30},
		// The same EIP and VIP as group d, which plan keeps (first by
		// name): d's bandwidth holds.
		{Group: "e", EIP: addr("203.0.113.8"), VIP: addr("192.0.2.40"), Bandwidth: 99},
		{Group: "d", EIP: addr("203.0.113.8"), VIP: addr("192.0.2.40")},
		// Skipped by plan: its EIP is not in the pairs programmed.
		{Group: "f", EIP: addr("203.0.113.9"), VIP: addr("203.0.113.9"), Bandwidth: 5},
	}
	p := plan(ms)
	want := map[netip.Addr]netip.Addr{}
	for _, n := range p.nat {
		want[n.eip] = n.vip
	}
	got := limitsOf(ms, want)
	if diff := cmp.Diff(map[netip.Addr]int{addr("203.0.113.5"): 10, addr("203.0.113.7"): 30}, got); diff != "" {
		t.Errorf("limitsOf (-want +got):\n%s", diff)
	}
}

func TestRateNames(t *testing.T) {
	for _, mbps := range []int{1, 10, 1_000_000} {
		for i, d := range limitDirs {
			n, dir, ok := parseRateName(rateName(mbps, d))
			if !ok || n != mbps || dir != i {
				t.Errorf("parseRateName(%q) = %d, %d, %v", rateName(mbps, d), n, dir, ok)
			}
		}
	}
	for _, name := range []string{"limit_in", "bw_010_in", "bw_0_in", "bw_-1_out", "bw_10_up", "bw_10", "x_10_in"} {
		if _, _, ok := parseRateName(name); ok {
			t.Errorf("parseRateName(%q) accepted", name)
		}
	}
}

func TestGotoChain(t *testing.T) {
	enc := func(code int32, chain string) []byte {
		ae := mnetlink.NewAttributeEncoder()
		ae.ByteOrder = binary.BigEndian // as the kernel sends it
		ae.Uint32(unix.NFTA_VERDICT_CODE, uint32(code))
		if chain != "" {
			ae.String(unix.NFTA_VERDICT_CHAIN, chain)
		}
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		val  []byte
		want string
	}{
		{enc(unix.NFT_GOTO, "bw_10_in"), "bw_10_in"},
		{enc(unix.NFT_JUMP, "bw_10_in"), ""},
		{enc(0, ""), ""}, // drop
		{[]byte{1, 2}, ""},
	} {
		if got := gotoChain(tc.val); got != tc.want {
			t.Errorf("gotoChain(%x) = %q, want %q", tc.val, got, tc.want)
		}
	}
}
