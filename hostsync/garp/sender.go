package garp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The default burst: three rounds, each a request and a reply, at these
// offsets from the call to Announce.
//
// Why a burst: a single broadcast frame is easily lost at exactly the moment
// it matters. During a failover a bridge or switch port queue may be full,
// an upstream switch may still be flushing its forwarding table, and a
// neighbour may be busy; one lost frame would leave the old MAC in every
// cache until it expires (tens of seconds). Losses at such moments are
// correlated, so the rounds are spread out instead of sent back to back:
// the first round goes out at once (claim to first frame in the low
// milliseconds), the second after 100 ms, past a momentarily full queue, the
// third at 500 ms, past a port or neighbour still settling. Request and reply
// go together because some stacks only honour one of them.
//
// Why bounded: each frame is a broadcast to the whole segment. Repeating
// forever is a storm, and an announcement that outlives the ownership it
// stands for poisons every cache with a stale MAC, which is why the burst
// also stops as soon as the caller cancels its context (ownership moved
// again). Six frames in half a second is noise next to VRRP adverts, and
// keepalived on the new master sends its own GARPs as well.
const (
	DefaultSecondRound = 100 * time.Millisecond
	DefaultThirdRound  = 500 * time.Millisecond

	// MaxRounds and MaxBurst bound any schedule a caller configures.
	MaxRounds = 10
	MaxBurst  = 10 * time.Second

	// defaultWriteTimeout bounds each write (set afresh per frame), so a
	// stuck device queue cannot hold a burst past its cancellation for
	// long.
	defaultWriteTimeout = time.Second
)

// DefaultSchedule returns the round offsets of the default burst:
// 0, DefaultSecondRound, DefaultThirdRound.
func DefaultSchedule() []time.Duration {
	return []time.Duration{0, DefaultSecondRound, DefaultThirdRound}
}

// Burst is the outcome of one Announce, handed to Options.OnBurst.
type Burst struct {
	Interface string
	VIP       netip.Addr
	MAC       net.HardwareAddr
	// Rounds is how many rounds were started.
	Rounds int
	// Sent counts frames written; Failed counts frames whose write failed.
	Sent   int
	Failed int
	// Cancelled is true when the context ended the burst before its last
	// round.
	Cancelled bool
	// FirstFrame is the time from the call to Announce to the first frame
	// written (zero when none was).
	FirstFrame time.Duration
}

// Options tunes a Sender. The zero value is the production default.
type Options struct {
	// Logger receives burst logs; nil discards them.
	Logger *slog.Logger
	// Schedule holds the offset of each round from the start of the burst.
	// It must start at 0 (the first round is immediate), be non-decreasing,
	// have at most MaxRounds entries and end within MaxBurst. Nil means
	// DefaultSchedule.
	Schedule []time.Duration
	// OnBurst, when set, is called at the end of every Announce with its
	// outcome (for metrics). It runs on the caller's goroutine.
	OnBurst func(Burst)
	// Now is the clock write deadlines are computed from; nil means
	// time.Now (tests pass a settable clock).
	Now func() time.Time
}

// Sender announces VIPs on one interface. Announce may be called from
// several goroutines at once (different VIPs); a Sender holds no mutable
// state.
type Sender struct {
	// Immutable after NewSender.
	ifname   string
	src      net.HardwareAddr // Ethernet source; nil means the owner's MAC
	conn     net.PacketConn
	dst      net.Addr
	log      *slog.Logger
	schedule []time.Duration
	onBurst  func(Burst)
	now      func() time.Time
}

// NewSender returns a Sender writing frames for interface ifi through conn
// (in production a raw AF_PACKET socket bound to ifi). The caller keeps
// ownership of conn.
func NewSender(ifi *net.Interface, conn net.PacketConn, opts Options) (*Sender, error) {
	if ifi == nil || conn == nil {
		return nil, fmt.Errorf("%w: sender needs an interface and a conn", ErrInvalidOptions)
	}
	schedule := opts.Schedule
	if schedule == nil {
		schedule = DefaultSchedule()
	}
	if err := checkSchedule(schedule); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The Ethernet source is the sending interface's own MAC, while the ARP
	// payload carries the owner's MAC: neighbour caches learn the owner
	// from the payload, and switches and bridges downstream do not learn
	// the owner's MAC on the host's uplink port (which would divert the
	// owner's traffic until it sends again).
	var src net.HardwareAddr
	if unicastMAC(ifi.HardwareAddr) {
		src = append(net.HardwareAddr(nil), ifi.HardwareAddr...)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Sender{
		now:      now,
		ifname:   ifi.Name,
		src:      src,
		conn:     conn,
		dst:      &packet.Addr{HardwareAddr: ethernet.Broadcast},
		log:      log.With("iface", ifi.Name),
		schedule: append([]time.Duration(nil), schedule...),
		onBurst:  opts.OnBurst,
	}, nil
}

func checkSchedule(s []time.Duration) error {
	switch {
	case len(s) == 0 || len(s) > MaxRounds:
		return fmt.Errorf("%w: schedule needs 1 to %d rounds, got %d", ErrInvalidOptions, MaxRounds, len(s))
	case s[0] != 0:
		return fmt.Errorf("%w: schedule must start at 0 (first round immediate), got %s", ErrInvalidOptions, s[0])
	case s[len(s)-1] > MaxBurst:
		return fmt.Errorf("%w: schedule must end within %s, got %s", ErrInvalidOptions, MaxBurst, s[len(s)-1])
	}
	for i := 1; i < len(s); i++ {
		if s[i] < s[i-1] {
			return fmt.Errorf("%w: schedule must not decrease (%s after %s)", ErrInvalidOptions, s[i], s[i-1])
		}
	}
	return nil
}

// Frames returns the two frames of one round for vip and mac, in the order
// they are sent: the gratuitous request (sender = target = vip, target MAC
// zero) and the gratuitous reply (sender = target = vip, target MAC = mac),
// both from mac to the Ethernet broadcast address.
func Frames(vip netip.Addr, mac net.HardwareAddr) ([][]byte, error) {
	return FramesFrom(mac, vip, mac)
}

// FramesFrom is Frames with the Ethernet source src instead of mac (the
// ARP payload still names mac as the VIP's owner).
func FramesFrom(src net.HardwareAddr, vip netip.Addr, mac net.HardwareAddr) ([][]byte, error) {
	if !usableVIP(vip) || !unicastMAC(mac) || !unicastMAC(src) {
		return nil, fmt.Errorf("%w: vip %s mac %s", ErrInvalidAddress, vip, mac)
	}
	vip = vip.Unmap()
	zero := make(net.HardwareAddr, 6)
	ops := []struct {
		op    arp.Operation
		dstHW net.HardwareAddr
	}{
		{arp.OperationRequest, zero},
		{arp.OperationReply, mac},
	}
	frames := make([][]byte, 0, len(ops))
	for _, o := range ops {
		p, err := arp.NewPacket(o.op, mac, vip, o.dstHW, vip)
		if err != nil {
			return nil, fmt.Errorf("garp: build %s: %w", o.op, err)
		}
		payload, err := p.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("garp: marshal %s: %w", o.op, err)
		}
		f := ethernet.Frame{
			Destination: ethernet.Broadcast,
			Source:      src,
			EtherType:   ethernet.EtherTypeARP,
			Payload:     payload,
		}
		b, err := f.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("garp: marshal frame: %w", err)
		}
		frames = append(frames, b)
	}
	return frames, nil
}

// Announce sends the burst for vip owned by mac: the first round at once,
// the others at the schedule's offsets, stopping early when ctx ends (the
// caller cancels it when ownership changes again). It returns how many
// frames were written. A cancelled burst returns ctx's error (errors.Is
// context.Canceled); a failed write does not stop the burst (later rounds
// exist for exactly that) but its first error is returned at the end;
// ErrInvalidAddress when vip or mac cannot be announced.
func (s *Sender) Announce(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) (sent int, err error) {
	start := time.Now()
	src := s.src
	if src == nil {
		src = mac
	}
	frames, err := FramesFrom(src, vip, mac)
	if err != nil {
		return 0, err
	}
	vip = vip.Unmap()
	b := Burst{Interface: s.ifname, VIP: vip, MAC: append(net.HardwareAddr(nil), mac...)}
	defer func() {
		b.Sent = sent
		if s.onBurst != nil {
			s.onBurst(b)
		}
		log := s.log.With("vip", vip, "mac", mac.String(), "sent", b.Sent, "failed", b.Failed,
			"rounds", b.Rounds, "first_frame", b.FirstFrame)
		switch {
		case b.Cancelled:
			log.Info("garp: burst stopped early, ownership changed")
		case err != nil:
			log.Warn("garp: burst incomplete", "err", err)
		default:
			log.Debug("garp: burst sent")
		}
	}()

	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var firstErr error
	for i, offset := range s.schedule {
		if i > 0 {
			if timer == nil {
				timer = time.NewTimer(time.Until(start.Add(offset)))
			} else {
				timer.Reset(time.Until(start.Add(offset)))
			}
			select {
			case <-ctx.Done():
				b.Cancelled = true
				return sent, fmt.Errorf("garp: announce %s on %s: %w", vip, s.ifname, ctx.Err())
			case <-timer.C:
			}
		}
		// Checked before every round, the first included: a claim already
		// superseded must not announce a stale owner.
		if ctx.Err() != nil {
			b.Cancelled = true
			return sent, fmt.Errorf("garp: announce %s on %s: %w", vip, s.ifname, ctx.Err())
		}
		b.Rounds++
		for _, f := range frames {
			if werr := s.write(f); werr != nil {
				b.Failed++
				if firstErr == nil {
					firstErr = fmt.Errorf("garp: write to %s: %w", s.ifname, werr)
				}
				continue
			}
			if sent == 0 {
				b.FirstFrame = time.Since(start)
			}
			sent++
		}
	}
	return sent, firstErr
}

// write sends one frame with a write deadline of its own. Announce and
// Probe share the conn (OpenPlatform uses one Sender for both), so a
// deadline set once for a burst would outlive it and fail every later
// write with "i/o timeout" once it passed; a fresh deadline per write
// bounds each write and leaves nothing stale behind for the next one.
func (s *Sender) write(frame []byte) error {
	// A conn without deadlines returns an error here: harmless, the write
	// is then simply unbounded.
	_ = s.conn.SetWriteDeadline(s.now().Add(defaultWriteTimeout))
	_, err := s.conn.WriteTo(frame, s.dst)
	return err
}

// OpenSender opens a raw AF_PACKET socket on the named interface and
// returns a Sender writing through it and the socket to close when done.
// The socket carries a filter that drops every incoming frame: a sender
// has nothing to read, and an unread queue only wastes kernel memory.
// Needs CAP_NET_RAW.
func OpenSender(ifname string, opts Options) (*Sender, io.Closer, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, nil, fmt.Errorf("garp: interface %q: %w", ifname, err)
	}
	conn, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), &packet.Config{Filter: dropAllFilter()})
	if err != nil {
		return nil, nil, fmt.Errorf("garp: open packet socket on %s: %w", ifname, err)
	}
	s, err := NewSender(ifi, conn, opts)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return s, conn, nil
}

// dropAllFilter is the classic BPF program "return 0": accept no frame.
func dropAllFilter() []bpf.RawInstruction {
	return []bpf.RawInstruction{{Op: unix.BPF_RET | unix.BPF_K, K: 0}}
}

// Probe asks who holds vip now: one ARP request from this interface's MAC
// with sender address 0.0.0.0 (an RFC 5227 probe, so no neighbour cache
// learns anything from it), broadcast. Every holder of vip answers with a
// reply to this interface, which a Listener on it reports with Reply set:
// one answer names the owner, two are a split brain.
func (s *Sender) Probe(vip netip.Addr) error {
	if s.src == nil {
		return fmt.Errorf("%w: interface %s has no MAC to probe from", ErrInvalidOptions, s.ifname)
	}
	if !usableVIP(vip) {
		return fmt.Errorf("%w: vip %s", ErrInvalidAddress, vip)
	}
	b, err := ProbeFrame(s.src, vip)
	if err != nil {
		return err
	}
	if err := s.write(b); err != nil {
		return fmt.Errorf("garp: probe %s on %s: %w", vip, s.ifname, err)
	}
	return nil
}

// ProbeFrame is the frame Probe sends.
func ProbeFrame(src net.HardwareAddr, vip netip.Addr) ([]byte, error) {
	p, err := arp.NewPacket(arp.OperationRequest, src, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), vip.Unmap())
	if err != nil {
		return nil, fmt.Errorf("garp: build probe: %w", err)
	}
	payload, err := p.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("garp: marshal probe: %w", err)
	}
	f := ethernet.Frame{Destination: ethernet.Broadcast, Source: src, EtherType: ethernet.EtherTypeARP, Payload: payload}
	b, err := f.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("garp: marshal frame: %w", err)
	}
	return b, nil
}
