package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// InNS runs fn on a thread that has entered namespace n, then returns the
// thread to the original namespace. Sockets fn creates stay in namespace n
// and can be used from any goroutine afterwards.
func (l *Lab) InNS(n string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("lab: current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(l.NS(n))
	if err != nil {
		return fmt.Errorf("lab: netns %s: %w", l.NS(n), err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("lab: enter netns %s: %w", l.NS(n), err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is in the wrong namespace: keep it locked so the
		// runtime destroys it instead of reusing it.
		runtime.LockOSThread()
		return fmt.Errorf("lab: return from netns %s: %w", l.NS(n), err)
	}
	return fnErr
}

// HTTPClient is an HTTP client whose connections originate in namespace n.
// Every request opens a new connection (no keep-alive), as a fresh client
// outside would after a failover.
func (l *Lab) HTTPClient(n string, timeout time.Duration) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := l.InNS(n, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       dial,
			DisableKeepAlives: true,
		},
	}
}

// Listen opens a listener inside namespace n.
func (l *Lab) Listen(n, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := l.InNS(n, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}
