package lab

import (
	"fmt"
	"net/netip"
)

// The lab's addresses, all from the documentation ranges.
//
//	client 198.51.100.2 ── gw 198.51.100.1
//	                        gw t1 203.0.113.65/30 ── h1 t0 203.0.113.66/30
//	                        gw t2 203.0.113.69/30 ── h2 t0 203.0.113.70/30
//	h1 br0 192.0.2.1/24 ══ l12/l21 ══ h2 br0 192.0.2.2/24   (one L2 segment)
//	  └ vm-m ── nginx-master eth0 192.0.2.11        └ vm-s ── nginx-slave eth0 192.0.2.12
//
// The gateway DNATs the EIP 203.0.113.5 to the VIP 192.0.2.10 and routes the
// VIP toward the transit address of its owner's host.
var (
	GatewayOutside = netip.MustParseAddr("198.51.100.1")
	ClientAddr     = netip.MustParseAddr("198.51.100.2")
	VIP            = netip.MustParsePrefix("192.0.2.10/24")
	EIP            = netip.MustParseAddr("203.0.113.5")
	GuestNet       = netip.MustParsePrefix("192.0.2.0/24")
)

// Host is a hypervisor host namespace of the lab.
type Host struct {
	ID       string     // registry host id and namespace short name: "h1"
	Bridge   netip.Addr // address on br0, where its hostsync serves guests
	Transit  netip.Addr // its end of the link to the gateway
	GwSide   netip.Addr // the gateway's end of that link
	GwLink   string     // the gateway's interface toward it
	Metadata string     // guest API base URL
}

// Guest is a VM namespace of the lab.
type Guest struct {
	Name    string // member and namespace short name: "nginx-master"
	NS      string // namespace short name: "m"
	Host    *Host
	Addr    netip.Addr
	MAC     string
	HostEnd string // its veth end on the host's bridge
}

// Topology is the built network.
type Topology struct {
	Hosts  []*Host
	Guests []*Guest
}

// Guest returns the guest with the given member name.
func (t *Topology) Guest(name string) *Guest {
	for _, g := range t.Guests {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// Other returns the other guest of a two-member lab.
func (t *Topology) Other(g *Guest) *Guest {
	for _, o := range t.Guests {
		if o != g {
			return o
		}
	}
	return nil
}

// GuestAPIPort is where each hostsync serves its guests.
const GuestAPIPort = 8750

// BuildTopology creates the namespaces and links of the nginx lab.
func (l *Lab) BuildTopology() (*Topology, error) {
	h1 := &Host{ID: "h1", Bridge: netip.MustParseAddr("192.0.2.1"), Transit: netip.MustParseAddr("203.0.113.66"), GwSide: netip.MustParseAddr("203.0.113.65"), GwLink: "t1"}
	h2 := &Host{ID: "h2", Bridge: netip.MustParseAddr("192.0.2.2"), Transit: netip.MustParseAddr("203.0.113.70"), GwSide: netip.MustParseAddr("203.0.113.69"), GwLink: "t2"}
	for _, h := range []*Host{h1, h2} {
		h.Metadata = fmt.Sprintf("http://%s:%d", h.Bridge, GuestAPIPort)
	}
	topo := &Topology{
		Hosts: []*Host{h1, h2},
		Guests: []*Guest{
			{Name: "nginx-master", NS: "m", Host: h1, Addr: netip.MustParseAddr("192.0.2.11"), MAC: "52:54:00:00:02:0b", HostEnd: "vm-m"},
			{Name: "nginx-slave", NS: "s", Host: h2, Addr: netip.MustParseAddr("192.0.2.12"), MAC: "52:54:00:00:02:0c", HostEnd: "vm-s"},
		},
	}
	steps := []func() error{
		func() error { return l.AddNS("h1") },
		func() error { return l.AddNS("h2") },
		func() error { return l.AddNS("gw") },
		func() error { return l.AddNS("cl") },
	}
	for _, g := range topo.Guests {
		steps = append(steps, func() error { return l.AddNS(g.NS) })
	}
	// Hosts: a bridge each, joined into one L2 segment.
	for _, h := range topo.Hosts {
		steps = append(steps,
			func() error { return l.IP(h.ID, "link", "add", "br0", "type", "bridge") },
			func() error { return l.IP(h.ID, "link", "set", "br0", "up") },
			func() error { return l.IP(h.ID, "addr", "add", h.Bridge.String()+"/24", "dev", "br0") },
			func() error { return l.Sysctl(h.ID, "net.ipv4.ip_forward", "1") },
			func() error { return l.Sysctl(h.ID, "net.ipv4.conf.all.rp_filter", "0") },
		)
	}
	steps = append(steps,
		func() error { return l.Veth("h1", "l12", "h2", "l21") },
		func() error { return l.IP("h1", "link", "set", "l12", "master", "br0") },
		func() error { return l.IP("h2", "link", "set", "l21", "master", "br0") },
	)
	// Gateway: outside toward the client, a transit link to each host.
	steps = append(steps,
		func() error { return l.Sysctl("gw", "net.ipv4.ip_forward", "1") },
		func() error { return l.Sysctl("gw", "net.ipv4.conf.all.rp_filter", "0") },
		func() error { return l.Veth("gw", "out0", "cl", "eth0") },
		func() error { return l.IP("gw", "addr", "add", GatewayOutside.String()+"/24", "dev", "out0") },
		func() error { return l.IP("cl", "addr", "add", ClientAddr.String()+"/24", "dev", "eth0") },
		func() error {
			return l.IP("cl", "route", "add", "203.0.113.0/24", "via", GatewayOutside.String())
		},
	)
	for _, h := range topo.Hosts {
		steps = append(steps,
			func() error { return l.Veth("gw", h.GwLink, h.ID, "t0") },
			func() error { return l.IP("gw", "addr", "add", h.GwSide.String()+"/30", "dev", h.GwLink) },
			func() error { return l.IP(h.ID, "addr", "add", h.Transit.String()+"/30", "dev", "t0") },
			func() error {
				return l.IP(h.ID, "route", "add", "198.51.100.0/24", "via", h.GwSide.String())
			},
		)
	}
	// The guest subnet is reachable through h1 until the data plane routes
	// the VIP toward its owner's host.
	steps = append(steps, func() error {
		return l.IP("gw", "route", "add", GuestNet.String(), "via", h1.Transit.String())
	})
	// Guests: eth0 on their host's bridge, default route via their host.
	for _, g := range topo.Guests {
		steps = append(steps,
			func() error { return l.Veth(g.Host.ID, g.HostEnd, g.NS, "eth0") },
			func() error { return l.IP(g.Host.ID, "link", "set", g.HostEnd, "master", "br0") },
			func() error { return l.IP(g.NS, "link", "set", "eth0", "address", g.MAC) },
			func() error { return l.IP(g.NS, "addr", "add", g.Addr.String()+"/24", "dev", "eth0") },
			func() error { return l.IP(g.NS, "route", "add", "default", "via", g.Host.Bridge.String()) },
			func() error { return l.Sysctl(g.NS, "net.ipv4.conf.all.arp_notify", "1") },
		)
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return topo, nil
}
