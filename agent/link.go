package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
)

// Link is the interface the VIP lands on. The netlink implementation is
// the ground truth of who holds the VIP; tests use a fake.
// Implementations are safe for concurrent use.
type Link interface {
	// Name is the interface name.
	Name() string
	// Addrs lists the interface's addresses.
	Addrs() ([]netip.Prefix, error)
	// RemoveAddr removes addr, whatever its prefix length; removing an
	// address that is not there is not an error.
	RemoveAddr(addr netip.Addr) error
	// Watch sends on changed (without blocking: changed should have a
	// buffer of one) whenever the interface's addresses may have changed,
	// until ctx ends.
	Watch(ctx context.Context, changed chan<- struct{}) error
}

// hasAddr reports whether addr is one of l's addresses.
func hasAddr(l Link, addr netip.Addr) (bool, error) {
	ps, err := l.Addrs()
	if err != nil {
		return false, err
	}
	for _, p := range ps {
		if p.Addr() == addr {
			return true, nil
		}
	}
	return false, nil
}

// NetlinkLink is a Link on a real interface of the agent's network namespace.
type NetlinkLink struct {
	Iface string
	Log   *slog.Logger
}

// Name is the interface name.
func (l *NetlinkLink) Name() string { return l.Iface }

func (l *NetlinkLink) link() (netlink.Link, error) {
	lk, err := netlink.LinkByName(l.Iface)
	if err != nil {
		return nil, fmt.Errorf("agent: interface %s: %w", l.Iface, err)
	}
	return lk, nil
}

// Addrs lists the interface's IPv4 and IPv6 addresses.
func (l *NetlinkLink) Addrs() ([]netip.Prefix, error) {
	lk, err := l.link()
	if err != nil {
		return nil, err
	}
	as, err := netlink.AddrList(lk, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("agent: addresses of %s: %w", l.Iface, err)
	}
	out := make([]netip.Prefix, 0, len(as))
	for _, a := range as {
		if p, ok := ipNetPrefix(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// RemoveAddr deletes every address equal to addr from the interface.
func (l *NetlinkLink) RemoveAddr(addr netip.Addr) error {
	lk, err := l.link()
	if err != nil {
		return err
	}
	as, err := netlink.AddrList(lk, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("agent: addresses of %s: %w", l.Iface, err)
	}
	for _, a := range as {
		p, ok := ipNetPrefix(a.IPNet)
		if !ok || p.Addr() != addr {
			continue
		}
		if err := netlink.AddrDel(lk, &a); err != nil {
			return fmt.Errorf("agent: remove %s from %s: %w", p, l.Iface, err)
		}
	}
	return nil
}

// Watch subscribes to address changes through netlink; a broken
// subscription is renewed after a second.
func (l *NetlinkLink) Watch(ctx context.Context, changed chan<- struct{}) error {
	kick := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	for {
		ch := make(chan netlink.AddrUpdate, 64)
		done := make(chan struct{})
		err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
			ErrorCallback: func(err error) { l.Log.Debug("netlink subscription", "op", "watch", "iface", l.Iface, "err", err) },
		})
		if err == nil {
			kick() // re-check what may have changed while not subscribed
		loop:
			for {
				select {
				case <-ctx.Done():
					close(done)
					for range ch { // the subscription goroutine closes ch once its socket is closed
					}
					return nil
				case _, ok := <-ch:
					if !ok {
						break loop
					}
					kick()
				}
			}
			l.Log.Warn("netlink subscription ended, renewing", "op", "watch", "iface", l.Iface)
		} else {
			l.Log.Warn("netlink subscribe failed, retrying", "op", "watch", "iface", l.Iface, "err", err)
		}
		close(done)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// checkInterface verifies that the interface exists (the host check of
// the configuration).
func checkInterface(name string) error {
	if _, err := net.InterfaceByName(name); err != nil {
		return fmt.Errorf("agent: interface %s: %w", name, err)
	}
	return nil
}
