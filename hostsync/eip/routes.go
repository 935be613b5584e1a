package eip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	mainTable = unix.RT_TABLE_MAIN
	// listAttempts bounds retries of a route dump the kernel interrupted
	// because the table changed while it was read.
	listAttempts = 3
)

// syncRoutes makes the backend's routes (those of its protocol in its
// table) exactly want: `VIP/32 via NextHop` for each, replaced in place,
// and every other route of its protocol removed, including the old route
// of a VIP whose new route could not be installed (a stale next hop would
// send the VIP's traffic to its previous owner). Routes of other protocols
// are never touched. It returns how many routes it replaced and removed.
func (n *NFT) syncRoutes(want []route) (replaced, removed int, err error) {
	var errs []error
	installed := make(map[netip.Addr]netip.Addr, len(want))
	for _, r := range want {
		nr := &netlink.Route{
			Dst:      &net.IPNet{IP: r.vip.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Gw:       r.via.AsSlice(),
			Protocol: n.proto,
			Table:    n.rtable,
		}
		if err := n.routes.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("eip: route %s/32 via %s: %w", r.vip, r.via, err))
			continue
		}
		installed[r.vip] = r.via
		replaced++
	}

	owned, err := n.ownedRoutes()
	if err != nil {
		errs = append(errs, err)
		return replaced, removed, errors.Join(errs...)
	}
	for _, r := range owned {
		if dst, via, ok := vipRoute(r); ok && installed[dst] == via {
			continue
		}
		if err := n.routes.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("eip: remove route %s: %w", r.Dst, err))
			continue
		}
		removed++
	}
	return replaced, removed, errors.Join(errs...)
}

// ownedRoutes lists the IPv4 routes of the backend's protocol in its
// table, retrying a dump the kernel interrupted.
func (n *NFT) ownedRoutes() ([]netlink.Route, error) {
	filter := &netlink.Route{Protocol: n.proto, Table: n.rtable}
	var err error
	for range listAttempts {
		var rs []netlink.Route
		rs, err = n.routes.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err == nil {
			return rs, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("eip: list routes of protocol %d: %w", n.proto, err)
}

// vipRoute reads a route as `VIP/32 via NextHop`; ok is false for any
// other shape.
func vipRoute(r netlink.Route) (dst, via netip.Addr, ok bool) {
	if r.Dst == nil || len(r.MultiPath) > 0 {
		return netip.Addr{}, netip.Addr{}, false
	}
	if ones, bits := r.Dst.Mask.Size(); ones != 32 || bits != 32 {
		return netip.Addr{}, netip.Addr{}, false
	}
	dst, ok1 := netip.AddrFromSlice(r.Dst.IP)
	via, ok2 := netip.AddrFromSlice(r.Gw)
	if !ok1 || !ok2 {
		return netip.Addr{}, netip.Addr{}, false
	}
	return dst.Unmap(), via.Unmap(), true
}
