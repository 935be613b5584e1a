package garp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/socket"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// PortAddr is the source address a port-attributing conn (see
// OpenPortListener) returns from ReadFrom: the interface the frame came
// in on and its Ethernet source.
type PortAddr struct {
	Ifindex      int
	HardwareAddr net.HardwareAddr
}

// Network implements net.Addr.
func (a *PortAddr) Network() string { return "packet" }

// String implements net.Addr.
func (a *PortAddr) String() string { return fmt.Sprintf("%s@if%d", a.HardwareAddr, a.Ifindex) }

// ingressConn is a net.PacketConn over one AF_PACKET socket bound to every
// interface of the network namespace, whose ReadFrom names the interface a
// frame arrived on. Frames the kernel hands it are ARP frames and
// neighbour advertisements received by some interface (not ones it
// transmits): the filter below drops the rest in the kernel.
type ingressConn struct {
	c *socket.Conn
}

// ingressFilter accepts the frames a Listener decodes, ARP and ICMPv6
// neighbour advertisements, that an interface received, and drops
// everything else, including the copies of frames an interface transmits
// (PACKET_OUTGOING: the bridge flooding a frame out of its other ports,
// or this host's own announcements). An NA is recognised at fixed
// offsets (next header at 20, ICMPv6 type at 54): NDP messages carry no
// extension headers.
func ingressFilter() ([]bpf.RawInstruction, error) {
	const (
		offEtherType  = 12
		offNextHeader = 14 + 6
		offICMPType   = 14 + ipv6HeaderLen
	)
	return bpf.Assemble([]bpf.Instruction{
		/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
		/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 9}, // → drop
		/* 2 */ bpf.LoadAbsolute{Off: offEtherType, Size: 2},
		/* 3 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_ARP, SkipTrue: 6}, // → accept
		/* 4 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IPV6, SkipTrue: 6}, // → drop
		/* 5 */ bpf.LoadAbsolute{Off: offNextHeader, Size: 1},
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protoICMPv6, SkipTrue: 4}, // → drop
		/* 7 */ bpf.LoadAbsolute{Off: offICMPType, Size: 1},
		/* 8 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: icmpNA, SkipTrue: 2}, // → drop
		/* 9 */ bpf.RetConstant{Val: readBuffer}, // (reached from 8)
		/* 10 */ bpf.RetConstant{Val: readBuffer}, // accept (from 3)
		/* 11 */ bpf.RetConstant{Val: 0}, // drop
	})
}

func openIngressConn() (*ingressConn, error) {
	filter, err := ingressFilter()
	if err != nil {
		return nil, fmt.Errorf("garp: build ingress filter: %w", err)
	}
	// Protocol 0 at socket(2), the filter, then bind(2) to ETH_P_ALL on
	// every interface (ifindex 0): no frame is queued before the filter.
	c, err := socket.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0, "packet", nil)
	if err != nil {
		return nil, fmt.Errorf("garp: open packet socket: %w", err)
	}
	if err := c.SetBPF(filter); err != nil {
		c.Close()
		return nil, fmt.Errorf("garp: attach ingress filter: %w", err)
	}
	all := uint16(unix.ETH_P_ALL)
	if err := c.Bind(&unix.SockaddrLinklayer{Protocol: all<<8 | all>>8}); err != nil {
		c.Close()
		return nil, fmt.Errorf("garp: bind packet socket: %w", err)
	}
	return &ingressConn{c: c}, nil
}

func (c *ingressConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, sa, err := c.c.Recvfrom(context.Background(), b, 0)
	if err != nil {
		return n, nil, err
	}
	ll, ok := sa.(*unix.SockaddrLinklayer)
	if !ok {
		return n, nil, nil
	}
	return n, &PortAddr{Ifindex: ll.Ifindex, HardwareAddr: append(net.HardwareAddr(nil), ll.Addr[:min(int(ll.Halen), len(ll.Addr))]...)}, nil
}

func (c *ingressConn) WriteTo([]byte, net.Addr) (int, error) {
	return 0, fmt.Errorf("%w: the ingress conn only reads", ErrInvalidOptions)
}

func (c *ingressConn) Close() error                       { return c.c.Close() }
func (c *ingressConn) LocalAddr() net.Addr                { return &PortAddr{} }
func (c *ingressConn) SetDeadline(t time.Time) error      { return c.c.SetDeadline(t) }
func (c *ingressConn) SetReadDeadline(t time.Time) error  { return c.c.SetReadDeadline(t) }
func (c *ingressConn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// OpenPortListener is OpenListener for a Linux bridge that attributes each
// frame to the bridge port it came in on (Observation.Port): it reads ARP
// frames and neighbour advertisements as every interface receives them, before the bridge forwards
// them, and keeps those that port, called with the receiving interface's
// index, accepts (the bridge's ports) with the name it returns. The copy
// the bridge device itself delivers carries no port and is dropped, as
// are frames received by unrelated interfaces. Needs CAP_NET_RAW.
func OpenPortListener(bridge string, port func(ifindex int) (string, bool), watch func(netip.Addr) bool, opts ListenerOptions) (*Listener, io.Closer, error) {
	if port == nil {
		return nil, nil, fmt.Errorf("%w: port listener needs a port func", ErrInvalidOptions)
	}
	conn, err := openIngressConn()
	if err != nil {
		return nil, nil, err
	}
	l, err := NewListener(bridge, conn, watch, opts)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	l.port = port
	return l, conn, nil
}
