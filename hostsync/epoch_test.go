package hostsync

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// TestClaimNewEpochIsNewStream is the regression test of a re-created
// agent database (issue 11, defect 2): a member reported seq 1..7 from
// its agent.db (epoch A); the file is deleted, the new one (epoch B)
// numbers from 1 again. Its MASTER claim seq 1 must move the owner, not
// be answered as a duplicate. Within one epoch a seq at or below the last
// is still a duplicate, and a claim without an epoch (an agent before
// epochs) is compared with the last seq as before.
func TestClaimNewEpochIsNewStream(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	h := httpapi.NewGuestAPI(f.svc.Engine, fakeNeighbors{}, testLogger(t))
	post := func(from string, seq uint64, role vrrp.Role, epoch string) api.ClaimResult {
		t.Helper()
		body := fmt.Sprintf(`{"transition":{"seq":%d,"to":%q,"source":"notify"}`, seq, role)
		if epoch != "" {
			body += fmt.Sprintf(`,"epoch":%q`, epoch)
		}
		body += "}"
		w := guestDo(h, "POST", api.PathClaims, from, body, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("%s seq %d epoch %q: status %d: %s", role, seq, epoch, w.Code, w.Body)
		}
		var res api.ClaimResult
		if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	const epochA, epochB = "a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"
	post("192.0.2.11", 1, vrrp.RoleMaster, "c3c3c3c3c3c3c3c3")
	for seq := uint64(1); seq <= 7; seq++ {
		role := vrrp.RoleBackup
		if seq%2 == 0 {
			role = vrrp.RoleFault
		}
		if res := post("192.0.2.12", seq, role, epochA); res.Duplicate {
			t.Fatalf("epoch A seq %d: %+v, want it recorded", seq, res)
		}
	}
	f.clock.Advance(time.Minute) // a failover, not a split brain
	f.rec.Take()

	// agent.db of nginx-slave re-created: epoch B, seq 1.
	res := post("192.0.2.12", 1, vrrp.RoleMaster, epochB)
	if res.Duplicate || !res.Accepted || res.Owner != "nginx-slave" {
		t.Fatalf("epoch B seq 1 MASTER: %+v, want accepted and the owner moved to nginx-slave", res)
	}
	if got := f.owner("ig-nginx").GuestID; got != "g2" {
		t.Fatalf("owner = %q, want g2", got)
	}
	if ev := f.rec.Take(); len(ev) != 2 {
		t.Fatalf("side effects %v, want GARP and apply", ev)
	}
	for _, rs := range f.roles("ig-nginx") {
		if rs.GuestID == "g2" && (rs.Epoch != epochB || rs.Seq != 1 || rs.Role != vrrp.RoleMaster) {
			t.Fatalf("role record of g2 = %+v, want MASTER at epoch B seq 1", rs)
		}
	}

	// Within epoch B the usual dedupe holds.
	if res := post("192.0.2.12", 1, vrrp.RoleBackup, epochB); !res.Duplicate || !res.Accepted {
		t.Fatalf("epoch B seq 1 again: %+v, want an accepted duplicate", res)
	}
	if res := post("192.0.2.12", 2, vrrp.RoleMaster, epochB); res.Duplicate {
		t.Fatalf("epoch B seq 2: %+v, want it recorded", res)
	}
	// Without an epoch: compared with the last seq, whatever its epoch.
	if res := post("192.0.2.12", 2, vrrp.RoleBackup, ""); !res.Duplicate {
		t.Fatalf("seq 2 without epoch: %+v, want a duplicate", res)
	}
	if res := post("192.0.2.12", 3, vrrp.RoleMaster, ""); res.Duplicate {
		t.Fatalf("seq 3 without epoch: %+v, want it recorded", res)
	}
	if ev := f.rec.Take(); len(ev) != 0 {
		t.Fatalf("claims of the owner had side effects: %v", ev)
	}
}

// TestDecodeClaimEpoch checks the epoch's syntax.
func TestDecodeClaimEpoch(t *testing.T) {
	for _, tc := range []struct {
		epoch string
		ok    bool
	}{
		{"0123456789abcdef", true},
		{"550e8400-e29b-41d4-a716-446655440000", true},
		{"with space", false},
		{"a\u00e9", false},
		{string(make([]byte, api.MaxEpochLen+1)), false},
	} {
		body, _ := json.Marshal(api.Claim{Transition: vrrp.Transition{Seq: 1, To: vrrp.RoleMaster}, Epoch: tc.epoch})
		c, err := httpapi.DecodeClaim(bytes.NewReader(body))
		if tc.ok && (err != nil || c.Epoch != tc.epoch) {
			t.Errorf("epoch %q: %v, %q; want it accepted", tc.epoch, err, c.Epoch)
		}
		if !tc.ok && err == nil {
			t.Errorf("epoch %q accepted, want it refused", tc.epoch)
		}
	}
}

// TestUpgradeFrom612e5b9Claims runs hostsync on a registry written by
// commit 612e5b9 (testdata/upgrade/hostsync-612e5b9.db: role records
// without an epoch): the mappings are as they were, and the first claim
// of an agent with an epoch starts its stream even at seq 1.
func TestUpgradeFrom612e5b9Claims(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "testdata", "upgrade", "hostsync-612e5b9.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hostsync.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := registry.OpenBolt(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	rec := &recorder{}
	clock := newClock()
	clock.Advance(time.Hour) // the fixture's last claims are an hour old
	svc, err := New(ctx, store, Options{
		Logger: testLogger(t), Announcer: &fakeAnnouncer{Rec: rec}, Backend: &fakeBackend{Rec: rec}, Now: clock.Now,
		Hosts: map[string]netip.Addr{"host-a": ip("192.0.2.1"), "host-b": ip("192.0.2.2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ms, err := svc.Mappings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range ms {
		got[m.EIP.String()] = m.VIP.String() + "@" + m.Owner
	}
	if got["203.0.113.5"] != "192.0.2.10@nginx-slave" || len(got) != 2 || !strings.HasSuffix(got["203.0.113.9"], "@web-a") {
		t.Fatalf("mappings after the upgrade = %v, want 203.0.113.5 → 192.0.2.10 at nginx-slave and 203.0.113.9 at web-a", got)
	}
	// nginx-master (g1) reported up to seq 4 with the old agent; its new
	// agent.db starts at 1 with an epoch.
	res, err := svc.ClaimEpoch(ctx, inventory.Caller{Addr: ip("192.0.2.11")}, "0123456789abcdef", vrrp.Transition{Seq: 1, To: vrrp.RoleMaster, Source: "notify"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || !res.Accepted || res.Owner != "nginx-master" {
		t.Fatalf("claim after the upgrade: %+v, want the owner moved to nginx-master", res)
	}
}
