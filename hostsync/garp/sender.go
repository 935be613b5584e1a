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
// offsets from the call to Start.
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

// Burst is the outcome of one burst (Start), handed to Options.OnBurst
// and to Progress.Done.
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
	// FirstFrame is the time from the call to Start to the first frame
	// written (zero when none was).
	FirstFrame time.Duration
	// Err is the context's error when the burst was cancelled, else the
	// first failed write's (nil when every frame was written).
	Err error
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
	// OnBurst, when set, is called at the end of every burst with its
	// outcome (for metrics). It runs on the burst's goroutine (on Start's
	// caller's for a burst of one round).
	OnBurst func(Burst)
	// Now is the clock write deadlines are computed from; nil means
	// time.Now (tests pass a settable clock).
	Now func() time.Time
}

// Sender announces VIPs on one interface. Start and Announce may be
// called from several goroutines at once (different VIPs); a Sender holds
// no mutable state (each burst's state is its own).
type Sender struct {
	// Immutable after NewSender.
	proto    protocol
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
	return newSender(arpProtocol, ifi, conn, opts)
}

// protocol is what a Sender writes: gratuitous ARP for IPv4 VIPs
// (arpProtocol) or unsolicited neighbour advertisements for IPv6 VIPs
// (ndpProtocol, ndp.go). The burst policy is the same for both.
type protocol struct {
	// name prefixes logs and errors: "garp" or "ndp".
	name string
	// usable reports whether a VIP of this family may be announced.
	usable func(netip.Addr) bool
	// round builds the frames of one round, Ethernet source src, the
	// VIP's owner mac.
	round func(src net.HardwareAddr, vip netip.Addr, mac net.HardwareAddr) ([][]byte, error)
	// probe builds the frame asking who holds vip, from src.
	probe func(src net.HardwareAddr, vip netip.Addr) ([]byte, error)
	// dst is the link-layer destination handed to the conn.
	dst net.HardwareAddr
}

var arpProtocol = protocol{name: "garp", usable: usableVIP, round: FramesFrom, probe: ProbeFrame, dst: ethernet.Broadcast}

func newSender(proto protocol, ifi *net.Interface, conn net.PacketConn, opts Options) (*Sender, error) {
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
		proto:    proto,
		now:      now,
		ifname:   ifi.Name,
		src:      src,
		conn:     conn,
		dst:      &packet.Addr{HardwareAddr: proto.dst},
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

// Progress is a burst under way, returned by Start.
type Progress struct {
	// Sent counts the frames the first round wrote (before Start
	// returned).
	Sent int
	// Done receives the outcome of the whole burst once, when it has
	// ended (after its last round, or when its context ended), and is
	// then closed. OnBurst has run by then.
	Done <-chan Burst
}

// Start starts the burst for vip owned by mac: the first round is written
// before Start returns (claim to first frame in the low milliseconds, and
// on the wire before the caller re-points anything else), the later
// rounds follow at the schedule's offsets on a goroutine of the burst's
// own, which ends after the last round or as soon as ctx ends (the caller
// cancels it when ownership changes again; a burst never outlives
// MaxBurst). The error is the first round's: ErrInvalidAddress when vip
// or mac cannot be announced (nothing started, Done nil), ctx's error
// when it had already ended (nothing written), or a failed write, which
// does not stop the burst (later rounds exist for exactly that).
func (s *Sender) Start(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) (Progress, error) {
	src := s.src
	if src == nil {
		src = mac
	}
	frames, err := s.proto.round(src, vip, mac)
	if err != nil {
		return Progress{}, err
	}
	b := &burst{s: s, ctx: ctx, start: time.Now(), frames: frames,
		b: Burst{Interface: s.ifname, VIP: vip.Unmap(), MAC: append(net.HardwareAddr(nil), mac...)}}
	done := make(chan Burst, 1)
	more := b.round()
	p := Progress{Sent: b.b.Sent, Done: done}
	err = b.b.Err
	if !more || len(s.schedule) == 1 {
		b.finish(done)
		return p, err
	}
	go func() {
		defer b.finish(done)
		timer := time.NewTimer(time.Until(b.start.Add(s.schedule[1])))
		defer timer.Stop()
		for i, offset := range s.schedule[1:] {
			if i > 0 {
				timer.Reset(time.Until(b.start.Add(offset)))
			}
			select {
			case <-ctx.Done():
				b.cancelled()
				return
			case <-timer.C:
			}
			if !b.round() {
				return
			}
		}
	}()
	return p, err
}

// Announce is Start followed by waiting for the whole burst: it returns
// how many frames were written and the burst's error (Burst.Err); a
// cancelled burst returns ctx's error (errors.Is context.Canceled).
func (s *Sender) Announce(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) (sent int, err error) {
	p, err := s.Start(ctx, vip, mac)
	if p.Done == nil {
		return 0, err
	}
	b := <-p.Done
	return b.Sent, b.Err
}

// burst is the state of one burst, owned by Start's caller for the first
// round and by the burst's goroutine after it.
type burst struct {
	s      *Sender
	ctx    context.Context
	start  time.Time
	frames [][]byte
	b      Burst
}

// round writes one round; false when ctx has ended (the burst stops).
// Checked before every round, the first included: a claim already
// superseded must not announce a stale owner.
func (b *burst) round() bool {
	if b.ctx.Err() != nil {
		b.cancelled()
		return false
	}
	b.b.Rounds++
	for _, f := range b.frames {
		if werr := b.s.write(f); werr != nil {
			b.b.Failed++
			if b.b.Err == nil {
				b.b.Err = fmt.Errorf("%s: write to %s: %w", b.s.proto.name, b.s.ifname, werr)
			}
			continue
		}
		if b.b.Sent == 0 {
			b.b.FirstFrame = time.Since(b.start)
		}
		b.b.Sent++
	}
	return true
}

func (b *burst) cancelled() {
	b.b.Cancelled = true
	b.b.Err = fmt.Errorf("%s: announce %s on %s: %w", b.s.proto.name, b.b.VIP, b.s.ifname, b.ctx.Err())
}

// finish reports the burst (OnBurst, the log) and hands it to done.
func (b *burst) finish(done chan<- Burst) {
	s := b.s
	if s.onBurst != nil {
		s.onBurst(b.b)
	}
	log := s.log.With("vip", b.b.VIP, "mac", b.b.MAC.String(), "sent", b.b.Sent, "failed", b.b.Failed,
		"rounds", b.b.Rounds, "first_frame", b.b.FirstFrame)
	switch name := s.proto.name; {
	case b.b.Cancelled:
		log.Info(name + ": burst stopped early, ownership changed")
	case b.b.Err != nil:
		log.Warn(name+": burst incomplete", "err", b.b.Err)
	default:
		log.Debug(name + ": burst sent")
	}
	done <- b.b
	close(done)
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
//
// A Sender of neighbour advertisements (NewNDPSender) probes with a
// neighbour solicitation instead (NSProbeFrame): the holder answers with
// a solicited advertisement, reported with Reply set as well.
func (s *Sender) Probe(vip netip.Addr) error {
	if s.src == nil {
		return fmt.Errorf("%w: interface %s has no MAC to probe from", ErrInvalidOptions, s.ifname)
	}
	if !s.proto.usable(vip) {
		return fmt.Errorf("%w: vip %s", ErrInvalidAddress, vip)
	}
	b, err := s.proto.probe(s.src, vip)
	if err != nil {
		return err
	}
	if err := s.write(b); err != nil {
		return fmt.Errorf("%s: probe %s on %s: %w", s.proto.name, vip, s.ifname, err)
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
