package garp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Observation is one gratuitous ARP (IPv4 VIP) or unsolicited neighbour
// advertisement with Override set (IPv6 VIP) seen for a watched VIP: the
// VIP is now announced by MAC on Interface.
type Observation struct {
	VIP       netip.Addr
	MAC       net.HardwareAddr
	Interface string
	At        time.Time
	// Reply is set for an ARP reply, or a solicited neighbour
	// advertisement, from the VIP's holder (an answer to a Probe) rather
	// than an announcement.
	Reply bool
	// Port is the bridge port the frame came in on and Ifindex its
	// interface index, from a port listener (OpenPortListener); empty and
	// 0 from a plain Listener, which cannot tell.
	Port    string
	Ifindex int
	// Pinned is the port the bridge first learnt MAC on (neigh.Bridge),
	// filled in by the caller that keeps the pins, not by the Listener;
	// empty when the bridge never learnt MAC before the frame. An
	// observation whose Port is set but is not Pinned is refused by
	// hostsync (a guest sending another guest's MAC).
	Pinned string
}

// ListenerOptions tunes a Listener. The zero value is the production default.
type ListenerOptions struct {
	// Logger receives read errors; nil discards them.
	Logger *slog.Logger
	// Now stamps observations; nil means time.Now.
	Now func() time.Time
}

const (
	// readBuffer holds any Ethernet frame; ARP frames are 60 bytes.
	readBuffer = 2048
	// Back-off between retries after a read error that is not the end of
	// the conn (an interface going down makes reads fail until it is up).
	minReadBackoff = 50 * time.Millisecond
	maxReadBackoff = 2 * time.Second
)

// Listener reads ARP frames and neighbour advertisements from a conn and
// reports the announcements (and the answers to probes) for watched VIPs.
type Listener struct {
	// Immutable after NewListener.
	ifname string
	conn   net.PacketConn
	watch  func(netip.Addr) bool
	log    *slog.Logger
	now    func() time.Time
	// port names the bridge port of an interface index (set by
	// OpenPortListener; nil: frames are not attributed to ports).
	port func(ifindex int) (string, bool)
}

// NewListener returns a Listener reading frames of interface ifname from
// conn. watch decides which VIPs are of interest; it is called from Run's
// goroutine and must be safe to call while the caller changes its set. The
// caller keeps ownership of conn.
func NewListener(ifname string, conn net.PacketConn, watch func(netip.Addr) bool, opts ListenerOptions) (*Listener, error) {
	if conn == nil || watch == nil {
		return nil, fmt.Errorf("%w: listener needs a conn and a watch func", ErrInvalidOptions)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Listener{ifname: ifname, conn: conn, watch: watch, log: log.With("iface", ifname), now: now}, nil
}

// Run reads frames until ctx ends and calls fn, on Run's goroutine, for each
// gratuitous ARP of a watched VIP, in arrival order; a slow fn delays reads
// (the socket buffer absorbs the difference). Run returns ctx's error once
// ctx ends, after the goroutine that unblocks the read has finished; it
// returns early with an error wrapping net.ErrClosed when the conn is
// closed under it. Other read errors are logged and retried with back-off.
func (l *Listener) Run(ctx context.Context, fn func(Observation)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// A past deadline from an earlier Run must not end this one.
	_ = l.conn.SetReadDeadline(time.Time{})

	// Unblock a pending read when ctx ends: a past deadline wakes ReadFrom
	// without closing the conn, which the caller owns.
	unblocked := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(unblocked)
		_ = l.conn.SetReadDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-unblocked
		}
	}()

	buf := make([]byte, readBuffer)
	backoff := minReadBackoff
	for {
		n, from, err := l.conn.ReadFrom(buf)
		if n > 0 {
			l.handle(buf[:n], from, fn)
		}
		if err == nil {
			backoff = minReadBackoff
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("garp: listen on %s: %w", l.ifname, err)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Someone else set a deadline on the conn: clear it and go on.
			// ctx is checked after clearing, so a cancellation that raced
			// with the clear is seen here or re-arms the deadline later.
			_ = l.conn.SetReadDeadline(time.Time{})
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		l.log.Warn("garp: read failed, retrying", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, maxReadBackoff)
	}
}

// handle decodes one frame and reports it when it is a gratuitous ARP, an
// ARP reply, or a neighbour advertisement (parseNA), for a watched VIP. A port listener reports only frames
// that came in on a port of its bridge, with the port. It reports whether
// fn was called.
func (l *Listener) handle(frame []byte, from net.Addr, fn func(Observation)) bool {
	vip, mac, reply, ok := parseFrame(frame)
	if !ok || !l.watch(vip) {
		return false
	}
	o := Observation{VIP: vip, MAC: mac, Interface: l.ifname, At: l.now(), Reply: reply}
	if l.port != nil {
		pa, ok := from.(*PortAddr)
		if !ok {
			return false
		}
		if o.Port, ok = l.port(pa.Ifindex); !ok {
			return false
		}
		o.Ifindex = pa.Ifindex
	}
	fn(o)
	return true
}

// OpenListener opens a raw AF_PACKET socket for ARP and neighbour
// advertisements on the named interface (a bridge without an IP address
// works) and returns a Listener reading from it and the socket to close
// once Run has returned. Its kernel filter (ingressFilter) keeps only the
// frames that arrive on the interface, not those it transmits, so this
// host's own announcements are never learnt back. Needs CAP_NET_RAW.
func OpenListener(ifname string, watch func(netip.Addr) bool, opts ListenerOptions) (*Listener, io.Closer, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, nil, fmt.Errorf("garp: interface %q: %w", ifname, err)
	}
	filter, err := ingressFilter()
	if err != nil {
		return nil, nil, fmt.Errorf("garp: build ingress filter: %w", err)
	}
	conn, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: filter})
	if err != nil {
		return nil, nil, fmt.Errorf("garp: open packet socket on %s: %w", ifname, err)
	}
	l, err := NewListener(ifi.Name, conn, watch, opts)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return l, conn, nil
}
