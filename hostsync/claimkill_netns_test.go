package hostsync

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/netns"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// TestNetnsClaimsSurviveSIGKILL is issue 14's durability check of the
// batched registry writes: a real vipkeeper-hostsync process on a bbolt
// registry takes claims from the members of 32 groups at once, each
// member calling from its own address (on the loopback of a network
// namespace, where the guest API identifies it); the process is SIGKILLed
// while claims are in flight. Reopened, the registry must hold every
// claim answered 200 or 202: each member's recorded sequence is at least
// the highest sequence it was answered for.
func TestNetnsClaimsSurviveSIGKILL(t *testing.T) {
	testutil.RequireRoot(t, "go")
	const groups = 32
	ns := testutil.NewNetns(t, "kc")
	const listen = "192.0.2.1"
	testutil.IP(t, "-n", ns, "addr", "add", listen+"/32", "dev", "lo")
	for g := range groups {
		for m := range 2 {
			testutil.IP(t, "-n", ns, "addr", "add", benchMember(g, m).String()+"/32", "dev", "lo")
		}
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "vipkeeper-hostsync")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/vipkeeper/vipkeeper/cmd/vipkeeper-hostsync").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dbPath := filepath.Join(dir, "hostsync.db")
	config := filepath.Join(dir, "hostsync.toml")
	err := os.WriteFile(config, []byte(`
state_dir = "`+dir+`"
db_path = "`+dbPath+`"
admin_socket = "`+filepath.Join(dir, "hostsync.sock")+`"
guest_listen = "`+listen+`:8750"
metrics_listen = "127.0.0.1:0"
reapply_interval = "1h"
[dataplane]
backend = "none"
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}

	// Seed the registry, then close it: the process opens it itself.
	store, err := registry.OpenBolt(dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: context.Background(), store: store, clock: newClock(), rec: &recorder{}}
	f.svc, err = New(f.ctx, store, Options{Logger: slog.New(slog.DiscardHandler), Hosts: hstest.Hosts()})
	if err != nil {
		t.Fatal(err)
	}
	hstest.Seed(t, f.ctx, f.svc.Inventory)
	f.addClaimGroups(groups)
	f.svc.Close()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	var stderr bytes.Buffer
	cmd := netns.Command(ns, bin, "-config", config, "-log-level", "warn")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		t.Logf("vipkeeper-hostsync stderr:\n%s", stderr.String())
	})

	client := func(from netip.Addr) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := netns.Run(ns, func() error {
					d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}
					var err error
					c, err = d.DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		}}
	}
	url := "http://" + listen + ":8750" + api.PathClaims
	probe := client(benchMember(0, 0))
	waitFor(t, "the guest API", func() bool {
		resp, err := probe.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})

	// Every member sends its claims in order, one at a time, as an agent
	// does; the members of all groups at once.
	var (
		killed atomic.Bool
		acked  atomic.Int64
		mu     sync.Mutex
		// highest sequence answered 200/202, and the last sent, per member
		answered = map[netip.Addr]uint64{}
		sent     = map[netip.Addr]uint64{}
		wg       sync.WaitGroup
	)
	enough := make(chan struct{})
	var enoughOnce sync.Once
	for g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			members := []netip.Addr{benchMember(g, 0), benchMember(g, 1)}
			clients := []*http.Client{client(members[0]), client(members[1])}
			var seq [2]uint64
			for i := 0; ; i++ {
				who := (i / 2) % 2
				role := "MASTER"
				if i%2 == 1 {
					role = "BACKUP"
				}
				seq[who]++
				mu.Lock()
				sent[members[who]] = seq[who]
				mu.Unlock()
				body := fmt.Sprintf(`{"transition":{"seq":%d,"to":%q,"source":"notify"}}`, seq[who], role)
				resp, err := clients[who].Post(url, "application/json", strings.NewReader(body))
				if err != nil {
					if !killed.Load() {
						t.Errorf("claim %d of %s before the kill: %v", seq[who], members[who], err)
					}
					return
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK, http.StatusAccepted:
					mu.Lock()
					answered[members[who]] = seq[who]
					mu.Unlock()
					if acked.Add(1) >= 2000 {
						enoughOnce.Do(func() { close(enough) })
					}
				default:
					t.Errorf("claim %d of %s: HTTP %d", seq[who], members[who], resp.StatusCode)
					return
				}
			}
		}()
	}
	select {
	case <-enough:
	case err := <-exited:
		t.Fatalf("vipkeeper-hostsync exited: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("2000 claims not answered within a minute")
	}
	killed.Store(true)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	store, err = registry.OpenBolt(dbPath, time.Second)
	if err != nil {
		t.Fatalf("the registry after SIGKILL: %v", err)
	}
	defer store.Close()
	inFlight := 0
	err = store.View(context.Background(), func(tx registry.Tx) error {
		for g := range groups {
			for m, suffix := range []string{"a", "b"} {
				addr := benchMember(g, m)
				gu, err := registry.Get[registry.Guest](tx, fmt.Sprintf("bench-%d-%s", g, suffix))
				if err != nil {
					return err
				}
				rs, err := registry.Get[registry.RoleState](tx, registry.RoleKey(gu.Group, gu.ID))
				if err != nil {
					return fmt.Errorf("member %s: %w", addr, err)
				}
				if rs.Seq < answered[addr] {
					t.Errorf("member %s: seq %d recorded, but claim %d was answered", addr, rs.Seq, answered[addr])
				}
				if rs.Seq > sent[addr] {
					t.Errorf("member %s: seq %d recorded, but only %d were sent", addr, rs.Seq, sent[addr])
				}
				if sent[addr] > answered[addr] {
					inFlight++
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d claims answered before SIGKILL; %d members had a claim in flight", acked.Load(), inFlight)
}
