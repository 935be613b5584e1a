package sdlab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on an OS thread switched into the named namespace (a
// name under /run/netns). A socket keeps the namespace it was created in,
// so listeners and connections made by fn work from any goroutine after.
// The thread is switched back before it is released; if that fails it is
// never released, and the Go runtime ends it with its goroutine.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("sdlab: current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("sdlab: netns %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("sdlab: enter netns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("sdlab: leave netns %s: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ListenIn opens a TCP listener on addr inside namespace ns (a full name
// under /run/netns, e.g. from Lab.NS).
func ListenIn(ns, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetns(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sdlab: listen on %s in %s: %w", addr, ns, err)
	}
	return l, nil
}

// DialIn connects to addr over network from inside namespace ns.
func DialIn(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sdlab: dial %s in %s: %w", addr, ns, err)
	}
	return c, nil
}

// HTTPClientIn is an HTTP client whose connections start in namespace ns.
// Keep-alives are off: every request is a new connection, so a test sees
// where the network sends it now, not where an old connection goes.
func HTTPClientIn(ns string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			Proxy:             nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return DialIn(ctx, ns, network, addr)
			},
		},
	}
}
