package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vipkeeper/vipkeeper/harness/netns"
)

// handle opens a netlink handle inside namespace n.
func (l *Lab) handle(n string) (*netlink.Handle, error) {
	h, err := netns.Handle(l.NS(n))
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	return h, nil
}

// HasAddr reports whether dev in namespace n carries addr.
func (l *Lab) HasAddr(n, dev string, addr netip.Addr) (bool, error) {
	h, err := l.handle(n)
	if err != nil {
		return false, err
	}
	defer h.Close()
	link, err := h.LinkByName(dev)
	if err != nil {
		return false, fmt.Errorf("lab: %s in %s: %w", dev, n, err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return false, fmt.Errorf("lab: addresses of %s in %s: %w", dev, n, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
			return true, nil
		}
	}
	return false, nil
}

// VIPHolders are the guests whose eth0 carries the VIP.
func (s *Stack) VIPHolders() ([]*Guest, error) {
	var out []*Guest
	for _, g := range s.Topo.Guests {
		ok, err := s.HasAddr(g.NS, "eth0", VIP.Addr())
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, g)
		}
	}
	return out, nil
}

// GatewayNextHop is the gateway's next hop for the VIP's /32 route (the
// data plane's route toward the owner's host); invalid when there is none.
func (s *Stack) GatewayNextHop() (netip.Addr, error) {
	h, err := s.handle("gw")
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lab: routes in gw: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		dst, ok := netip.AddrFromSlice(r.Dst.IP)
		if ok && ones == 32 && dst.Unmap() == VIP.Addr() {
			gw, _ := netip.AddrFromSlice(r.Gw)
			return gw.Unmap(), nil
		}
	}
	return netip.Addr{}, nil
}

// HostOf returns the host whose transit address is a (the gateway's next
// hop), or nil.
func (s *Stack) HostOf(a netip.Addr) *Host {
	for _, h := range s.Topo.Hosts {
		if h.Transit == a {
			return h
		}
	}
	return nil
}

// ErrUnexpectedAnswer is returned by ClientGet for an answer that is not
// the web service's.
var ErrUnexpectedAnswer = errors.New("lab: unexpected answer")

// ClientGet fetches http://EIP/ from the client namespace and returns the
// name of the guest that answered ("nginx-master").
func (s *Stack) ClientGet(ctx context.Context, timeout time.Duration) (string, error) {
	return s.nginxGet(ctx, "cl", EIP.String(), timeout)
}

// nginxGet fetches http://host/ from namespace ns and returns the name of
// the guest whose nginx answered.
func (s *Stack) nginxGet(ctx context.Context, ns, host string, timeout time.Duration) (string, error) {
	c := s.HTTPClient(ns, timeout)
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	name, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "nginx on ")
	if resp.StatusCode != http.StatusOK || !ok {
		return "", fmt.Errorf("%w: %s %q", ErrUnexpectedAnswer, resp.Status, b)
	}
	return name, nil
}

// Ownership is what every part of the system says about the VIP's owner.
type Ownership struct {
	Holders   []string // guests with the VIP on eth0
	Owner     string   // the gateway host's hostsync registry
	NextHop   string   // the host the gateway routes the VIP to
	Answerer  string   // who answered the client through the EIP
	ClientErr error
}

func (o Ownership) String() string {
	return fmt.Sprintf("vip on %v, registry owner %q, gateway route via %s, client answered by %q (err %v)",
		o.Holders, o.Owner, o.NextHop, o.Answerer, o.ClientErr)
}

// Observe collects the current Ownership.
func (s *Stack) Observe(ctx context.Context) (Ownership, error) {
	var o Ownership
	holders, err := s.VIPHolders()
	if err != nil {
		return o, err
	}
	for _, g := range holders {
		o.Holders = append(o.Holders, g.Name)
	}
	if v, err := s.GroupView(ctx, s.GatewayHost); err == nil && v.Owner != nil {
		o.Owner = v.Owner.Name
	}
	nh, err := s.GatewayNextHop()
	if err != nil {
		return o, err
	}
	if h := s.HostOf(nh); h != nil {
		o.NextHop = h.ID
	}
	o.Answerer, o.ClientErr = s.ClientGet(ctx, 500*time.Millisecond)
	return o, nil
}

// Consistent reports whether g alone holds the VIP, the registry names it
// the owner, the gateway routes toward its host and the client reaches it.
func (o Ownership) Consistent(g *Guest) bool {
	return len(o.Holders) == 1 && o.Holders[0] == g.Name && o.Owner == g.Name &&
		o.NextHop == g.Host.ID && o.Answerer == g.Name
}

// WaitOwner waits until the whole system agrees that g owns the VIP.
func (s *Stack) WaitOwner(ctx context.Context, g *Guest, timeout time.Duration) error {
	var last Ownership
	err := s.poll(ctx, timeout, g.Name+" owning the VIP", func() (bool, error) {
		o, err := s.Observe(ctx)
		if err != nil {
			return false, err
		}
		last = o
		return o.Consistent(g), nil
	})
	if err != nil {
		return fmt.Errorf("%w; last seen: %s", err, last)
	}
	return nil
}

// DumpLogs writes the tail of every process log to w (for failed tests).
func (l *Lab) DumpLogs(w io.Writer) {
	l.mu.Lock()
	procs := append([]*Proc(nil), l.procs...)
	l.mu.Unlock()
	for _, p := range procs {
		b, err := os.ReadFile(p.Log)
		if err != nil {
			continue
		}
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		fmt.Fprintf(w, "----- %s (%s) -----\n%s\n", p.Name, p.Log, b)
	}
}
