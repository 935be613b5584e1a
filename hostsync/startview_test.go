package hostsync

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/etcdtest"
)

// TestRunStartsWithoutQuorum is defect 9 of issue 11 through Run: a host
// started while etcd does not answer stays up (guest API, admin socket;
// metadata from its last view, claims queued — see
// TestEtcdClusterLeaderKillAndQuorumLoss) instead of exiting; a gateway,
// which has no queue and no view, still refuses to start and leaves its
// data plane alone (nothing applied).
func TestRunStartsWithoutQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: starts an etcd server")
	}
	srv, err := etcdtest.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	srv.Pause()

	t.Run("host", func(t *testing.T) {
		cfg := etcdConfig(t, RoleHost, srv.Endpoints(), "/startview/")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- runWith(ctx, cfg, testLogger(t), &Platform{Backend: &fakeBackend{}}) }()
		deadline := time.After(30 * time.Second)
		for {
			if _, err := os.Stat(cfg.AdminSocket); err == nil {
				break
			}
			select {
			case err := <-done:
				t.Fatalf("Run returned %v while etcd was unreachable, want it serving from its last view", err)
			case <-deadline:
				t.Fatal("Run did not open its admin socket")
			case <-time.After(20 * time.Millisecond):
			}
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	})
	t.Run("gateway", func(t *testing.T) {
		cfg := etcdConfig(t, RoleGateway, srv.Endpoints(), "/startview/")
		backend := &fakeBackend{}
		err := runWith(context.Background(), cfg, testLogger(t), &Platform{Backend: backend})
		if err == nil {
			t.Fatal("the gateway started without the registry")
		}
		n := backend.Applies()
		if n != 0 {
			t.Fatalf("the gateway applied its data plane %d times without the registry, want its mapping left alone", n)
		}
	})
}
