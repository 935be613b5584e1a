// Package netns is the test harnesses' one way to use named network
// namespaces (the ones under /run/netns): create and delete them, wire
// them with veth pairs and bridges, run ip(8) or any command inside one,
// and run Go code inside one (a listener, a dialer, an HTTP client, a
// netlink handle). The namespace lab (harness/lab), the systemd lab
// (harness/sdlab), testutil's per-test namespaces and the packages'
// privileged tests all build on it.
//
// Namespaces are made and removed with ip(8), as an administrator would:
// `ip netns add` also makes /run/netns a shared mount, which
// systemd-nspawn's --network-namespace-path relies on. Names are the
// caller's: each harness adds its own random prefix so that concurrent
// runs do not collide, and deletes what it made.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// IP runs ip(8) with args in the current namespace and returns its
// output; the error carries the command and what ip printed.
func IP(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netns: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// IPIn runs `ip -n ns ARGS`.
func IPIn(ns string, args ...string) (string, error) {
	return IP(append([]string{"-n", ns}, args...)...)
}

// Add creates namespace name with its loopback up.
func Add(name string) error {
	if _, err := IP("netns", "add", name); err != nil {
		return err
	}
	_, err := IPIn(name, "link", "set", "lo", "up")
	return err
}

// Delete removes namespace name; processes still inside keep it alive
// until they end, as with `ip netns del`.
func Delete(name string) error {
	_, err := IP("netns", "del", name)
	return err
}

// List returns the names under /run/netns that start with prefix.
func List(prefix string) []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var names []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, f[0])
		}
	}
	return names
}

// Veth creates a veth pair, end an in namespace na and end bn in nb,
// both up.
func Veth(na, an, nb, bn string) error {
	if _, err := IPIn(na, "link", "add", an, "type", "veth", "peer", "name", bn, "netns", nb); err != nil {
		return err
	}
	if _, err := IPIn(na, "link", "set", an, "up"); err != nil {
		return err
	}
	_, err := IPIn(nb, "link", "set", bn, "up")
	return err
}

// Bridge creates bridge br in namespace ns, up, with the addresses given
// (CIDR form).
func Bridge(ns, br string, addrs ...string) error {
	if _, err := IPIn(ns, "link", "add", br, "type", "bridge"); err != nil {
		return err
	}
	if _, err := IPIn(ns, "link", "set", br, "up"); err != nil {
		return err
	}
	for _, a := range addrs {
		if _, err := IPIn(ns, "addr", "add", a, "dev", br); err != nil {
			return err
		}
	}
	return nil
}

// Command is argv run inside namespace ns (through `ip netns exec`); the
// caller sets its output and environment and starts it.
func Command(ns string, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
}

// Exec runs a command inside namespace ns and returns its combined output.
func Exec(ctx context.Context, ns, name string, args ...string) ([]byte, error) {
	full := append([]string{"netns", "exec", ns, name}, args...)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netns: %s %s in %s: %w: %s", name, strings.Join(args, " "), ns, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Sysctl sets a sysctl of namespace ns (the net.* ones are per namespace).
func Sysctl(ns, key, value string) error {
	_, err := Exec(context.Background(), ns, "sysctl", "-qw", key+"="+value)
	return err
}

// Run runs fn on the calling goroutine, locked to an OS thread that is
// switched into namespace ns for the call. Sockets fn opens and processes
// it starts belong to ns; a socket keeps its namespace, so it can be used
// from any goroutine after. The thread is switched back before it is
// released; if that fails it stays locked, and the Go runtime ends it
// with its goroutine instead of reusing it in the wrong namespace.
func Run(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: current namespace: %w", err)
	}
	defer orig.Close()
	target, err := vnetns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: %s: %w", ns, err)
	}
	defer target.Close()
	if err := vnetns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter %s: %w", ns, err)
	}
	ferr := fn()
	if err := vnetns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("netns: leave %s: %w", ns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Listen opens a listener on addr inside namespace ns.
func Listen(ns, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Run(ns, func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: listen on %s in %s: %w", addr, ns, err)
	}
	return l, nil
}

// Dial connects to addr over network from inside namespace ns.
func Dial(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Run(ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns: dial %s in %s: %w", addr, ns, err)
	}
	return c, nil
}

// HTTPClient is an HTTP client whose connections start in namespace ns.
// Keep-alives are off: every request is a new connection, as a fresh
// client outside would make after a failover, so a test sees where the
// network sends it now, not where an old connection goes.
func HTTPClient(ns string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			Proxy:             nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return Dial(ctx, ns, network, addr)
			},
		},
	}
}

// Handle is a netlink handle inside namespace ns; the caller closes it.
func Handle(ns string) (*netlink.Handle, error) {
	h, err := vnetns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("netns: %s: %w", ns, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netns: netlink in %s: %w", ns, err)
	}
	return nh, nil
}
