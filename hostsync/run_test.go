package hostsync

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	berrors "go.etcd.io/bbolt/errors"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

type fakeNotifier struct {
	mu     sync.Mutex
	states []string
}

func (n *fakeNotifier) Notify(s string) error {
	n.mu.Lock()
	n.states = append(n.states, s)
	n.mu.Unlock()
	return nil
}

func (n *fakeNotifier) has(prefix string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.ContainsFunc(n.states, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

// TestRun starts the daemon on a registry that already has the seed's
// group with an owner, and checks: the data plane is re-applied from the
// registry at start, READY=1 and STATUS= are sent, the admin socket
// answers, a passive GARP observation moves the owner, and cancelling the
// context stops everything and removes the socket.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	cfg, err := ParseConfig("test.toml", []byte(`
state_dir = "`+dir+`"
admin_socket = "`+filepath.Join(dir, "run", "hostsync.sock")+`"
guest_listen = "127.0.0.1:0"
reapply_interval = "1h"
[dataplane]
backend = "none"
`))
	if err != nil {
		t.Fatal(err)
	}

	// Seed the registry, then close it: Run opens it itself.
	store, err := registry.OpenBolt(cfg.DBPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: context.Background(), store: store, clock: newClock(), rec: &recorder{}}
	// The seed happened an hour ago, so the owner's MASTER claim is well
	// outside the split-brain window when the GARP arrives.
	f.svc, err = New(f.ctx, store, Options{Logger: testLogger(t), Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	f.mustNetwork(api.NetworkCreate{ID: "net1", CIDR: vpcNet, VPCID: "vpc1"})
	f.mustNetwork(api.NetworkCreate{ID: "pub", CIDR: eipNet, Kind: "eip"})
	f.mustGuest("g1", "nginx-master", "net1", "192.0.2.11", "52:54:00:00:00:11", 1, "host-a")
	f.mustGuest("g2", "nginx-slave", "net1", "192.0.2.12", "52:54:00:00:00:12", 1, "host-b")
	f.nginx()
	if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
		t.Fatal(err)
	}
	f.svc.Close()
	store.Close()

	backend := &fakeBackend{}
	notifier := &fakeNotifier{}
	observe := make(chan garp.Observation)
	p := &Platform{
		Backend:  backend,
		Notifier: notifier,
		Watchdog: 200 * time.Millisecond,
		Listen: func(ctx context.Context, watch func(netip.Addr) bool, report func(garp.Observation)) error {
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case o := <-observe:
					if watch(o.VIP) {
						report(o)
					}
				}
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, cfg, testLogger(t), p) }()

	waitFor(t, "the data plane applied from the registry", func() bool {
		ms := backend.LastSet()
		return len(ms) == 1 && ms[0].Owner == "nginx-master" && ms[0].EIP == ip("203.0.113.5")
	})
	waitFor(t, "READY=1", func() bool { return notifier.has("READY=1") })
	waitFor(t, "STATUS=", func() bool { return notifier.has("STATUS=1 group, 1 VIP") })
	waitFor(t, "watchdog pings", func() bool { return notifier.has("WATCHDOG=1") })

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", cfg.AdminSocket)
	}}}
	show := func() api.GroupView {
		resp, err := client.Get("http://hostsync" + api.PathAdminGroup + "nginx")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v api.GroupView
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := show(); v.Owner == nil || v.Owner.Name != "nginx-master" {
		t.Fatalf("owner after start: %+v", v.Owner)
	}

	// keepalived on nginx-slave took the VIP while its agent is down; the
	// old owner's MASTER claim is older than the split-brain window.
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	observe <- garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, At: time.Now()}
	waitFor(t, "the owner learnt from GARP", func() bool {
		v := show()
		return v.Owner != nil && v.Owner.Name == "nginx-slave" && v.Owner.Source == ownership.SourceGARP
	})
	waitFor(t, "the mapping re-pointed", func() bool {
		ms := backend.LastSet()
		return len(ms) == 1 && ms[0].Owner == "nginx-slave"
	})

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop")
	}
	if !notifier.has("STOPPING=1") {
		t.Fatal("no STOPPING=1")
	}
	if _, err := os.Stat(cfg.AdminSocket); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind: %v", err)
	}
}

func TestRunFailsFastOnLockedDatabase(t *testing.T) {
	dir := t.TempDir()
	cfg, err := ParseConfig("test.toml", []byte(`
state_dir = "`+dir+`"
admin_socket = "`+filepath.Join(dir, "hostsync.sock")+`"
guest_listen = "127.0.0.1:0"
db_timeout = "100ms"
[dataplane]
backend = "none"
`))
	if err != nil {
		t.Fatal(err)
	}
	store, err := registry.OpenBolt(cfg.DBPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	start := time.Now()
	err = runWith(context.Background(), cfg, testLogger(t), nil)
	if !errors.Is(err, berrors.ErrTimeout) {
		t.Fatalf("Run on a locked database: %v, want bbolt's lock timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s: the lock wait is not bounded", d)
	}
}
