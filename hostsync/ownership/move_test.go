package ownership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// movingBackend is a fakeBackend that can follow one mapping
// (eip.Mover): each Move is recorded as "move GROUP@OWNER via NEXTHOP"
// and answered with err.
type movingBackend struct {
	fakeBackend
	mu  sync.Mutex
	err error
}

func (b *movingBackend) Move(_ context.Context, m eip.Mapping) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.Rec.Add("move %s:%s->%s@%s via %s", m.Group, m.EIP, m.VIP, m.Owner, m.NextHop)
	return b.err
}

func (b *movingBackend) setErr(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = err
}

var _ eip.Mover = (*movingBackend)(nil)

func newMovingFixture(t *testing.T) (*fixture, *movingBackend) {
	t.Helper()
	b := &movingBackend{}
	f := newFixture(t, func(o *Options) { o.Backend = b })
	b.Rec = f.rec
	// The complete set applied once (and the start's reconcile done).
	hstest.Nginx(t, f.ctx, f.svc.Inventory)
	if got := f.rec.Take(); len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "apply ") {
		t.Fatalf("building the group recorded %q, want a complete apply", got)
	}
	return f, b
}

// onlyData keeps the data-plane lines of a recording.
func onlyData(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "move ") || strings.HasPrefix(l, "apply ") {
			out = append(out, l)
		}
	}
	return out
}

// TestMoveFollowsOneMapping: a claim that moves the VIP hands the backend
// that group's mapping alone (owner and next hop), never the complete set.
func TestMoveFollowsOneMapping(t *testing.T) {
	f, b := newMovingFixture(t)
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	want := []string{"move ig-nginx:203.0.113.5->192.0.2.10@nginx-master via 192.0.2.1"}
	if got := onlyData(f.rec.Take()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("first move: %q, want %q", got, want)
	}
	f.clock.Advance(time.Second)
	if _, err := f.svc.Claim(f.ctx, master, transition(2, "BACKUP")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Second)
	if _, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	want = []string{"move ig-nginx:203.0.113.5->192.0.2.10@nginx-slave via 192.0.2.2"}
	if got := onlyData(f.rec.Take()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("failover: %q, want %q", got, want)
	}
	if n := b.Applies(); n != 1 {
		t.Errorf("%d complete applies, want only the one that bound the EIP", n)
	}
}

// TestMoveFallsBackToCompleteApply: a backend that cannot follow the
// mapping (eip.ErrNeedApply) gets the complete set; a failing move is
// reported in the claim's answer and the status, as a failing apply is.
func TestMoveFallsBackToCompleteApply(t *testing.T) {
	f, b := newMovingFixture(t)
	b.setErr(eip.ErrNeedApply)
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"move ig-nginx:203.0.113.5->192.0.2.10@nginx-master via 192.0.2.1",
		"apply ig-nginx:203.0.113.5->192.0.2.10@nginx-master",
	}
	if got := onlyData(f.rec.Take()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("move refused by the backend: %q, want %q", got, want)
	}

	b.setErr(errors.New("netlink: network is unreachable"))
	f.clock.Advance(time.Second)
	if _, err := f.svc.Claim(f.ctx, master, transition(2, "BACKUP")); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Second)
	res, err := f.svc.Claim(f.ctx, slave, transition(1, "MASTER"))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Accepted || !strings.Contains(res.Message, "data plane: hostsync: data plane move: netlink: network is unreachable") {
		t.Errorf("claim answered %+v, want accepted with the data plane's error", res)
	}
	st, err := f.svc.Status(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.LastApplyError, "network is unreachable") {
		t.Errorf("status last apply error %q, want the move's", st.LastApplyError)
	}
	if n := len(st.RecentMoves); n == 0 || st.RecentMoves[n-1].ApplyError == "" {
		t.Errorf("recent moves %+v: the last one should carry the apply error", st.RecentMoves)
	}
}

// TestMoveWithoutEIPTouchesNothing: a group with a VIP but no EIP has
// nothing in the data plane to follow its moves.
func TestMoveWithoutEIPTouchesNothing(t *testing.T) {
	f, _ := newMovingFixture(t)
	if _, err := f.svc.DissociateEIP(f.ctx, "nginx"); err != nil {
		t.Fatal(err)
	}
	f.rec.Take()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	if got := onlyData(f.rec.Take()); len(got) != 0 {
		t.Fatalf("move of a group without EIP: %q, want no data-plane call", got)
	}
	if o := f.owner("ig-nginx"); o.GuestID != "g1" {
		t.Fatalf("owner %+v, want g1", o)
	}
}

// TestFollowWatchMovesOneGroup: another host's move (only the owner
// record changed) is followed as a move of that group; any other record
// changed still re-applies the complete set.
func TestFollowWatchMovesOneGroup(t *testing.T) {
	f, _ := newMovingFixture(t)
	ctx, cancel := context.WithCancel(f.ctx)
	w := &fakeWatcher{fn: make(chan func([]registry.Change))}
	done := make(chan struct{})
	go func() {
		defer close(done)
		FollowWatch(ctx, f.svc.Engine, w, testLogger(t))
	}()
	defer func() { cancel(); <-done }()
	fn := <-w.fn

	err := f.store.Update(f.ctx, func(tx registry.Tx) error {
		_, err := registry.SwapOwner(tx, 0, registry.Owner{Group: "ig-nginx", GuestID: "g2", Since: f.clock.Now(), Source: "notify"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fn([]registry.Change{{Bucket: registry.BucketOwners, Key: "ig-nginx"}, {Bucket: registry.BucketRoles, Key: "ig-nginx/g2"}})
	want := "move ig-nginx:203.0.113.5->192.0.2.10@nginx-slave via 192.0.2.2"
	var got []string
	waitFor(t, "the move followed", func() bool {
		got = append(got, onlyData(f.rec.Take())...)
		return len(got) > 0
	})
	if fmt.Sprint(got) != fmt.Sprint([]string{want}) {
		t.Fatalf("another host's move: %q, want %q", got, want)
	}

	fn([]registry.Change{{Bucket: registry.BucketOwners, Key: "ig-nginx"}, {Bucket: registry.BucketGroups, Key: "ig-nginx"}})
	got = nil
	waitFor(t, "the complete apply", func() bool {
		got = append(got, onlyData(f.rec.Take())...)
		return len(got) > 0
	})
	if len(got) != 1 || !strings.HasPrefix(got[0], "apply ") {
		t.Fatalf("a group changed with its owner: %q, want one complete apply", got)
	}
}

// TestLateReportIsNoSplitBrain: the owner's MASTER report reached
// hostsync late (its notify hook and the report took 1.5 s here), so by
// hostsync's clock the other member's MASTER claim follows it within the
// split-brain window (2 × advert_int = 2 s); by the events' own times it
// came 2.5 s later — a failover, which moves the VIP instead of keeping
// and re-announcing the old master.
func TestLateReportIsNoSplitBrain(t *testing.T) {
	f, _ := newMovingFixture(t)
	t0 := f.clock.Now()
	tr := transition(1, "MASTER")
	tr.At = t0
	f.clock.Advance(1500 * time.Millisecond)
	if _, err := f.svc.Claim(f.ctx, master, tr); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Second)
	tr = transition(1, "MASTER")
	tr.At = f.clock.Now()
	res, err := f.svc.Claim(f.ctx, slave, tr)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Accepted || res.Owner != "nginx-slave" {
		t.Fatalf("claim = %+v, want the VIP moved to nginx-slave", res)
	}
	if st, _ := f.svc.Status(f.ctx); st.SplitBrains != 0 {
		t.Errorf("split brains = %d, want 0", st.SplitBrains)
	}

	// Two members whose transitions are 0.5 s apart are still two
	// masters, whatever the reports' delays: a split brain, which the
	// higher priority (nginx-master, 250) wins.
	f.clock.Advance(time.Second)
	tr = transition(2, "MASTER")
	tr.At = f.clock.Now().Add(-500 * time.Millisecond)
	res, err = f.svc.Claim(f.ctx, master, tr)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Accepted || res.Owner != "nginx-master" || !strings.Contains(res.Message, "split brain") {
		t.Fatalf("claim = %+v, want a split brain resolved for nginx-master", res)
	}
	if st, _ := f.svc.Status(f.ctx); st.SplitBrains != 1 {
		t.Errorf("split brains = %d, want 1", st.SplitBrains)
	}
}

// TestLateOldMasterClaimIsNoSplitBrain is the restarted gateway host of
// the lab: while hostsync was away the master failed over to the slave;
// back up, its probe finds the slave holding the VIP, and only then does
// the master's agent deliver its MASTER transition of before the failover
// (from its outbox), then its FAULT. The old MASTER claim is old news:
// recorded, no split brain, the VIP stays with the slave and no GARP is
// sent for the master.
func TestLateOldMasterClaimIsNoSplitBrain(t *testing.T) {
	f, _ := newMovingFixture(t)
	slaveMAC, err := net.ParseMAC("52:54:00:00:00:12")
	if err != nil {
		t.Fatal(err)
	}
	old := transition(1, "MASTER")
	old.At = f.clock.Now()
	f.clock.Advance(6 * time.Second)
	res, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, Reply: true, At: f.clock.Now()})
	if err != nil || !res.Accepted || res.Owner != "nginx-slave" {
		t.Fatalf("probe answer from the slave: %+v, %v", res, err)
	}
	f.rec.Take()
	f.clock.Advance(10 * time.Millisecond)
	res, err = f.svc.Claim(f.ctx, master, old)
	if err != nil {
		t.Fatal(err)
	}
	if res.Owner != "nginx-slave" || !strings.Contains(res.Message, "predates") {
		t.Errorf("the master's old MASTER claim: %+v, want recorded with the VIP left to nginx-slave", res)
	}
	if got := f.rec.Take(); slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, "move ") || strings.HasPrefix(l, "garp ") }) {
		t.Errorf("the old claim moved or announced: %q", got)
	}
	if st, _ := f.svc.Status(f.ctx); st.SplitBrains != 0 {
		t.Errorf("split brains = %d, want 0", st.SplitBrains)
	}
	res, err = f.svc.Claim(f.ctx, master, transition(2, "FAULT"))
	if err != nil || res.Owner != "nginx-slave" {
		t.Fatalf("the master's FAULT: %+v, %v; want nginx-slave kept", res, err)
	}

	// A MASTER transition within the window of the owner's is still
	// judged as two masters (TestLateReportIsNoSplitBrain has the rest).
	f.clock.Advance(time.Second)
	near := transition(3, "MASTER")
	near.At = f.clock.Now()
	if _, err := f.svc.Observe(f.ctx, garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: f.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	res, err = f.svc.Claim(f.ctx, master, near)
	if err != nil || !strings.Contains(res.Message, "split brain") {
		t.Errorf("a MASTER claim as recent as the owner's: %+v, %v; want a split brain", res, err)
	}
}
