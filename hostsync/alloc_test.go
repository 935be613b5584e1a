package hostsync

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
)

// TestConcurrentAttachNeverHandsOutAnAddressTwice runs 100 attaches at
// once, each for its own group in the same network, and checks that every
// group got a distinct address in the usable range, none of them a
// guest's, the gateway or a reserved one.
func TestConcurrentAttachNeverHandsOutAnAddressTwice(t *testing.T) {
	for _, dir := range []string{api.AllocStepUp, api.AllocStepDown, api.AllocRandom} {
		t.Run(dir, func(t *testing.T) {
			f := newFixture(t) // real random picks for AllocRandom
			const n = 100
			for i := range n {
				f.mustGroup(fmt.Sprintf("g%03d", i))
			}
			var wg sync.WaitGroup
			errs := make([]error, n)
			views := make([]api.GroupView, n)
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					views[i], errs[i] = f.svc.AttachNetwork(f.ctx, fmt.Sprintf("g%03d", i), api.AttachNetwork{NetworkID: "net1", AllocDir: dir})
				}()
			}
			close(start)
			wg.Wait()

			taken := map[netip.Addr]bool{
				ip("192.0.2.1"): true, ip("192.0.2.11"): true, ip("192.0.2.12"): true, ip("192.0.2.13"): true,
				ip("192.0.2.15"): true, ip("192.0.2.200"): true, ip("192.0.2.201"): true,
			}
			seen := map[netip.Addr]string{}
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("attach %d: %v", i, errs[i])
				}
				a := views[i].VIP.Address.Addr()
				if other, dup := seen[a]; dup {
					t.Fatalf("%s handed out twice: to %s and %s", a, other, views[i].Name)
				}
				seen[a] = views[i].Name
				if taken[a] || !vpcNet.Contains(a) || a == ip("192.0.2.0") || a == ip("192.0.2.255") {
					t.Fatalf("%s got %s, which is not allocatable", views[i].Name, a)
				}
			}
			if len(seen) != n {
				t.Fatalf("%d distinct addresses, want %d", len(seen), n)
			}
			// The registry agrees: one lease per VIP.
			nets, err := f.svc.ListNetworks(f.ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, nw := range nets {
				if nw.ID == "net1" && nw.Used != n+4 {
					t.Fatalf("net1 has %d leases, want %d (100 VIPs and 4 guests)", nw.Used, n+4)
				}
			}
		})
	}
}

// TestConcurrentClaimsForOneGroup: MASTER claims of three members racing
// (all within the split-brain window) end with the highest-priority member
// as the owner, and the owner's revision counts exactly the moves made.
func TestConcurrentClaimsForOneGroup(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	f.mustJoin("nginx", "g5")
	var wg sync.WaitGroup
	callers := []string{"192.0.2.11", "192.0.2.12", "192.0.2.15"}
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := inventory.Caller{Addr: ip(callers[i%len(callers)])}
			if _, err := f.svc.Claim(f.ctx, c, transition(uint64(i/len(callers)+1), "MASTER")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	o := f.owner("ig-nginx")
	if o.GuestID != "g1" {
		t.Fatalf("owner = %q, want g1 (the first member's priority 250 wins every split brain)", o.GuestID)
	}
	st, err := f.svc.Status(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if o.Revision != st.Moves || st.Moves == 0 {
		t.Fatalf("owner revision %d, moves %d: every move is one compare-and-swap", o.Revision, st.Moves)
	}
}
