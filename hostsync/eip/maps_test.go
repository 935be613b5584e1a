package eip

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables/expr"
)

func TestNewNFTSelectsBackend(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts NFTOptions
		maps bool
	}{
		{"default", NFTOptions{}, true},
		{"nft binary named", NFTOptions{NFT: "/usr/sbin/nft"}, false},
		{"runner", NFTOptions{Run: (&scriptRecorder{}).run}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := NewNFT(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if got := n.maps != nil; got != tc.maps {
				t.Errorf("Maps backend = %v, want %v", got, tc.maps)
			}
		})
	}
}

func TestNewMapsOptions(t *testing.T) {
	for _, o := range []MapsOptions{{Table: "a b"}, {RouteProtocol: 4}, {RouteProtocol: 256}, {RouteTable: -1}, {NetNS: -1}, {ReadBack: -1}} {
		if _, err := NewMaps(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("NewMaps(%+v) error = %v, want ErrInvalidOptions", o, err)
		}
	}
}

func TestDiffPairs(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	have := map[netip.Addr]netip.Addr{
		a("203.0.113.1"): a("192.0.2.1"), // kept
		a("203.0.113.2"): a("192.0.2.2"), // changed
		a("203.0.113.3"): a("192.0.2.3"), // removed
	}
	want := map[netip.Addr]netip.Addr{
		a("203.0.113.1"): a("192.0.2.1"),
		a("203.0.113.2"): a("192.0.2.22"),
		a("203.0.113.4"): a("192.0.2.4"), // added
	}
	del, add := diffPairs(have, want)
	addrCmp := cmp.Comparer(func(x, y netip.Addr) bool { return x == y })
	wantDel := map[netip.Addr]netip.Addr{a("203.0.113.2"): a("192.0.2.2"), a("203.0.113.3"): a("192.0.2.3")}
	wantAdd := map[netip.Addr]netip.Addr{a("203.0.113.2"): a("192.0.2.22"), a("203.0.113.4"): a("192.0.2.4")}
	if diff := cmp.Diff(wantDel, del, addrCmp); diff != "" {
		t.Errorf("deleted (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantAdd, add, addrCmp); diff != "" {
		t.Errorf("added (-want +got):\n%s", diff)
	}
	if del, add := diffPairs(want, want); len(del)+len(add) != 0 {
		t.Errorf("diff of a set with itself: %v, %v", del, add)
	}
}

func TestRuleMatches(t *testing.T) {
	for _, chain := range []string{"prerouting", "output", "postrouting"} {
		// Read back, the lookup carries the kernel's set id.
		got := ruleExprs(chain, 7)
		if !ruleMatches(chain, got) {
			t.Errorf("%s: its own rule does not match", chain)
		}
		other := "postrouting"
		if chain == other {
			other = "prerouting"
		}
		if ruleMatches(chain, ruleExprs(other, 0)) {
			t.Errorf("%s: matches the rule of %s", chain, other)
		}
		if ruleMatches(chain, append(ruleExprs(chain, 0), &expr.Counter{})) {
			t.Errorf("%s: matches a rule with one more expression", chain)
		}
	}
}
