package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

func TestNetlinkLinkLoopback(t *testing.T) {
	l := &NetlinkLink{Iface: "lo", Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
	ok, err := hasAddr(l, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		testutil.SkipUnprivileged(t, "netlink not usable here: %v", err)
	}
	if !ok {
		t.Error("127.0.0.1 not found on lo")
	}
	if ok, _ := hasAddr(l, netip.MustParseAddr("192.0.2.10")); ok {
		t.Error("192.0.2.10 found on lo")
	}
	// Watch kicks once subscribed and returns when ctx ends.
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- l.Watch(ctx, changed) }()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no kick after subscribing")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
	if err := checkInterface("lo"); err != nil {
		t.Error(err)
	}
	if err := checkInterface("vknonexist0"); err == nil {
		t.Error("a missing interface passed the host check")
	}
}
