package garp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/packet"
)

var (
	testVIP = netip.MustParseAddr("192.0.2.10")
	testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x02, 0x0a}
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// rawARP builds an Ethernet II + ARP (Ethernet/IPv4) frame byte by byte,
// independently of the libraries the code under test uses, padded to the
// 60-byte Ethernet minimum.
func rawARP(op uint16, ethSrc, sha net.HardwareAddr, spa [4]byte, tha net.HardwareAddr, tpa [4]byte) []byte {
	b := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} // destination: broadcast
	b = append(b, ethSrc...)                        // source
	b = append(b, 0x08, 0x06)                       // EtherType ARP
	b = append(b, 0x00, 0x01)                       // hardware type Ethernet
	b = append(b, 0x08, 0x00)                       // protocol type IPv4
	b = append(b, 6, 4)                             // address lengths
	b = append(b, byte(op>>8), byte(op))            // operation
	b = append(b, sha...)
	b = append(b, spa[:]...)
	b = append(b, tha...)
	b = append(b, tpa[:]...)
	return append(b, make([]byte, 60-len(b))...)
}

var (
	zeroMAC  = net.HardwareAddr{0, 0, 0, 0, 0, 0}
	otherMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x02, 0x01}
)

func TestFramesExactBytes(t *testing.T) {
	// The request, written out in full.
	wantRequest := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
		0x52, 0x54, 0x00, 0x00, 0x02, 0x0a, // Ethernet source: owner MAC
		0x08, 0x06, // EtherType ARP
		0x00, 0x01, // HTYPE Ethernet
		0x08, 0x00, // PTYPE IPv4
		0x06,       // HLEN
		0x04,       // PLEN
		0x00, 0x01, // OPER request
		0x52, 0x54, 0x00, 0x00, 0x02, 0x0a, // SHA owner MAC
		192, 0, 2, 10, // SPA VIP
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // THA zero
		192, 0, 2, 10, // TPA VIP
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding to 60 bytes
	}
	wantReply := rawARP(2, testMAC, testMAC, [4]byte{192, 0, 2, 10}, testMAC, [4]byte{192, 0, 2, 10})
	if !bytes.Equal(wantRequest, rawARP(1, testMAC, testMAC, [4]byte{192, 0, 2, 10}, zeroMAC, [4]byte{192, 0, 2, 10})) {
		t.Fatal("test helper rawARP disagrees with the hand-written request")
	}

	got, err := Frames(testVIP, testMAC)
	if err != nil {
		t.Fatalf("Frames: %v", err)
	}
	if diff := cmp.Diff([][]byte{wantRequest, wantReply}, got); diff != "" {
		t.Errorf("Frames (-want +got):\n%s", diff)
	}

	// An IPv4-mapped IPv6 VIP is the same IPv4 address on the wire.
	mapped, err := Frames(netip.MustParseAddr("::ffff:192.0.2.10"), testMAC)
	if err != nil {
		t.Fatalf("Frames(mapped): %v", err)
	}
	if diff := cmp.Diff(got, mapped); diff != "" {
		t.Errorf("Frames(mapped) (-want +got):\n%s", diff)
	}
}

func TestFramesInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		vip  netip.Addr
		mac  net.HardwareAddr
	}{
		{"zero VIP", netip.Addr{}, testMAC},
		{"IPv6 VIP", netip.MustParseAddr("2001:db8::10"), testMAC},
		{"unspecified VIP", netip.MustParseAddr("0.0.0.0"), testMAC},
		{"broadcast VIP", netip.MustParseAddr("255.255.255.255"), testMAC},
		{"multicast VIP", netip.MustParseAddr("224.0.0.18"), testMAC},
		{"nil MAC", testVIP, nil},
		{"short MAC", testVIP, net.HardwareAddr{1, 2, 3}},
		{"zero MAC", testVIP, zeroMAC},
		{"multicast MAC", testVIP, net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 1}},
		{"broadcast MAC", testVIP, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"EUI-64 MAC", testVIP, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0, 2, 0x0a}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Frames(tc.vip, tc.mac); !errors.Is(err, ErrInvalidAddress) {
				t.Errorf("Frames error = %v, want ErrInvalidAddress", err)
			}
			conn := newFakeConn()
			s, err := NewSender(&net.Interface{Name: "br0", Index: 3}, conn, Options{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := s.Announce(t.Context(), tc.vip, tc.mac); n != 0 || !errors.Is(err, ErrInvalidAddress) {
				t.Errorf("Announce = %d, %v; want 0, ErrInvalidAddress", n, err)
			}
			if w := conn.recorded(); len(w) != 0 {
				t.Errorf("Announce wrote %d frames for an invalid address", len(w))
			}
		})
	}
}

func TestNewSenderOptions(t *testing.T) {
	ifi := &net.Interface{Name: "br0", Index: 3}
	ms := time.Millisecond
	for _, tc := range []struct {
		name     string
		ifi      *net.Interface
		conn     net.PacketConn
		schedule []time.Duration
		ok       bool
	}{
		{"default", ifi, newFakeConn(), nil, true},
		{"single round", ifi, newFakeConn(), []time.Duration{0}, true},
		{"equal offsets", ifi, newFakeConn(), []time.Duration{0, 0, 10 * ms}, true},
		{"no interface", nil, newFakeConn(), nil, false},
		{"no conn", ifi, nil, nil, false},
		{"empty schedule", ifi, newFakeConn(), []time.Duration{}, false},
		{"delayed first round", ifi, newFakeConn(), []time.Duration{10 * ms}, false},
		{"decreasing", ifi, newFakeConn(), []time.Duration{0, 200 * ms, 100 * ms}, false},
		{"too long", ifi, newFakeConn(), []time.Duration{0, MaxBurst + ms}, false},
		{"too many rounds", ifi, newFakeConn(), make([]time.Duration, MaxRounds+1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSender(tc.ifi, tc.conn, Options{Schedule: tc.schedule})
			if tc.ok && err != nil {
				t.Errorf("NewSender: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("NewSender error = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

// burstRecorder collects what OnBurst receives.
type burstRecorder struct {
	mu     sync.Mutex
	bursts []Burst
}

func (r *burstRecorder) record(b Burst) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bursts = append(r.bursts, b)
}

func (r *burstRecorder) all() []Burst {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Burst(nil), r.bursts...)
}

func TestAnnounceBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn := newFakeConn()
		var rec burstRecorder
		s, err := NewSender(&net.Interface{Name: "br0", Index: 3}, conn, Options{Logger: testLogger(t), OnBurst: rec.record})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		sent, err := s.Announce(t.Context(), testVIP, testMAC)
		if err != nil || sent != 6 {
			t.Fatalf("Announce = %d, %v; want 6, nil", sent, err)
		}

		frames, _ := Frames(testVIP, testMAC)
		request, reply := frames[0], frames[1]
		writes := conn.recorded()
		want := []struct {
			frame  []byte
			offset time.Duration
		}{
			{request, 0}, {reply, 0},
			{request, DefaultSecondRound}, {reply, DefaultSecondRound},
			{request, DefaultThirdRound}, {reply, DefaultThirdRound},
		}
		if len(writes) != len(want) {
			t.Fatalf("wrote %d frames, want %d", len(writes), len(want))
		}
		for i, w := range want {
			if !bytes.Equal(writes[i].frame, w.frame) {
				t.Errorf("frame %d = % x, want % x", i, writes[i].frame, w.frame)
			}
			if got := writes[i].at.Sub(start); got != w.offset {
				t.Errorf("frame %d written at +%s, want +%s", i, got, w.offset)
			}
			dst, ok := writes[i].dst.(*packet.Addr)
			if !ok || !bytes.Equal(dst.HardwareAddr, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
				t.Errorf("frame %d sent to %v, want the broadcast address", i, writes[i].dst)
			}
		}

		wantBurst := []Burst{{Interface: "br0", VIP: testVIP, MAC: testMAC, Rounds: 3, Sent: 6}}
		if diff := cmp.Diff(wantBurst, rec.all(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("OnBurst (-want +got):\n%s", diff)
		}
	})
}

func TestAnnounceCancelStopsBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn := newFakeConn()
		var rec burstRecorder
		s, err := NewSender(&net.Interface{Name: "br0", Index: 3}, conn, Options{Logger: testLogger(t), OnBurst: rec.record})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		type result struct {
			sent int
			err  error
		}
		done := make(chan result, 1)
		go func() {
			n, err := s.Announce(ctx, testVIP, testMAC)
			done <- result{n, err}
		}()
		synctest.Wait() // the first round is out, the burst waits for the second
		if n := len(conn.recorded()); n != 2 {
			t.Fatalf("before cancel: %d frames written, want 2 (first round)", n)
		}
		cancel()
		r := <-done
		if r.sent != 2 || !errors.Is(r.err, context.Canceled) {
			t.Errorf("Announce = %d, %v; want 2, context.Canceled", r.sent, r.err)
		}
		// Let the rest of the schedule pass: nothing more goes out.
		time.Sleep(2 * DefaultThirdRound)
		if n := len(conn.recorded()); n != 2 {
			t.Errorf("after cancel: %d frames written, want 2", n)
		}
		if b := rec.all(); len(b) != 1 || !b[0].Cancelled || b[0].Rounds != 1 || b[0].Sent != 2 {
			t.Errorf("OnBurst = %+v, want one cancelled burst of 1 round, 2 frames", b)
		}
	})
}

// TestStartSendsFirstRoundThenOwnsTheRest checks the split between caller
// and burst: the first round is written before Start returns, the later
// rounds follow at their offsets without the caller, and Done reports the
// whole burst once.
func TestStartSendsFirstRoundThenOwnsTheRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn := newFakeConn()
		var rec burstRecorder
		s, err := NewSender(&net.Interface{Name: "br0", Index: 3}, conn, Options{Logger: testLogger(t), OnBurst: rec.record})
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Start(t.Context(), testVIP, testMAC)
		if err != nil || p.Sent != 2 {
			t.Fatalf("Start = %+v, %v; want 2 frames of the first round, nil", p, err)
		}
		if n := len(conn.recorded()); n != 2 {
			t.Fatalf("when Start returned: %d frames written, want 2 (first round)", n)
		}
		if len(rec.all()) != 0 {
			t.Fatal("OnBurst ran before the burst ended")
		}
		b, ok := <-p.Done
		if !ok || b.Sent != 6 || b.Rounds != 3 || b.Err != nil || b.Cancelled {
			t.Fatalf("Done = %+v, %v; want 3 rounds, 6 frames", b, ok)
		}
		if _, ok := <-p.Done; ok {
			t.Error("Done delivered twice")
		}
		if n := len(conn.recorded()); n != 6 {
			t.Errorf("%d frames written, want 6", n)
		}
		if len(rec.all()) != 1 {
			t.Errorf("OnBurst ran %d times, want once", len(rec.all()))
		}
	})

	t.Run("invalid address starts nothing", func(t *testing.T) {
		s, err := NewSender(&net.Interface{Name: "br0", Index: 3}, newFakeConn(), Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Start(t.Context(), netip.MustParseAddr("2001:db8::1"), testMAC)
		if !errors.Is(err, ErrInvalidAddress) || p.Done != nil {
			t.Errorf("Start = %+v, %v; want no burst, ErrInvalidAddress", p, err)
		}
	})
}

func TestAnnounceCancelledBeforeStart(t *testing.T) {
	conn := newFakeConn()
	s, err := NewSender(&net.Interface{Name: "br0", Index: 3}, conn, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if n, err := s.Announce(ctx, testVIP, testMAC); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("Announce = %d, %v; want 0, context.Canceled", n, err)
	}
	if n := len(conn.recorded()); n != 0 {
		t.Errorf("%d frames written for a superseded claim", n)
	}
}

func TestAnnounceWriteErrorKeepsBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn := newFakeConn()
		conn.writeErr = syscall.ENOBUFS
		var rec burstRecorder
		s, err := NewSender(&net.Interface{Name: "br0", Index: 3}, conn, Options{Logger: testLogger(t), OnBurst: rec.record})
		if err != nil {
			t.Fatal(err)
		}
		n, err := s.Announce(t.Context(), testVIP, testMAC)
		if n != 0 || !errors.Is(err, syscall.ENOBUFS) {
			t.Errorf("Announce = %d, %v; want 0, ENOBUFS", n, err)
		}
		if b := rec.all(); len(b) != 1 || b[0].Rounds != 3 || b[0].Failed != 6 || b[0].Cancelled {
			t.Errorf("OnBurst = %+v, want 3 rounds, 6 failed writes", b)
		}
	})
}

func TestParseGratuitous(t *testing.T) {
	vip := [4]byte{192, 0, 2, 10}
	other := [4]byte{192, 0, 2, 11}
	garp := rawARP(1, testMAC, testMAC, vip, zeroMAC, vip)
	vlan := append(append(append([]byte(nil), garp[:12]...), 0x81, 0x00, 0x00, 0x64), garp[12:]...)
	ipv4 := append([]byte(nil), garp...)
	ipv4[12], ipv4[13] = 0x08, 0x00
	longHW := append([]byte(nil), garp...)
	longHW[18] = 8
	rarp := rawARP(3, testMAC, testMAC, vip, zeroMAC, vip)

	for _, tc := range []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"gratuitous request", garp, true},
		{"gratuitous reply", rawARP(2, testMAC, testMAC, vip, testMAC, vip), true},
		{"gratuitous reply to broadcast THA", rawARP(2, testMAC, testMAC, vip, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, vip), true},
		{"802.1Q tagged", vlan, true},
		{"unpadded", garp[:42], true},
		{"ordinary request", rawARP(1, testMAC, testMAC, other, zeroMAC, vip), false},
		{"Ethernet source is not the announced MAC", rawARP(1, otherMAC, testMAC, vip, zeroMAC, vip), false},
		{"ordinary reply", rawARP(2, testMAC, testMAC, vip, testMAC, other), false},
		{"probe", rawARP(1, testMAC, testMAC, [4]byte{}, zeroMAC, vip), false},
		{"broadcast address", rawARP(1, testMAC, testMAC, [4]byte{255, 255, 255, 255}, zeroMAC, [4]byte{255, 255, 255, 255}), false},
		{"multicast sender MAC", rawARP(1, testMAC, net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, vip, zeroMAC, vip), false},
		{"zero sender MAC", rawARP(1, testMAC, zeroMAC, vip, zeroMAC, vip), false},
		{"operation 3", rarp, false},
		{"hardware length 8", longHW, false},
		{"IPv4 EtherType", ipv4, false},
		{"truncated ARP", garp[:30], false},
		{"truncated Ethernet", garp[:10], false},
		{"empty", nil, false},
		{"garbage", bytes.Repeat([]byte{0xa5}, 60), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotVIP, gotMAC, ok := parseGratuitous(tc.frame)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok && (gotVIP != testVIP || !bytes.Equal(gotMAC, testMAC)) {
				t.Errorf("got %s %s, want %s %s", gotVIP, gotMAC, testVIP, testMAC)
			}
		})
	}
}

func TestParseARPReplies(t *testing.T) {
	vip := [4]byte{192, 0, 2, 10}
	other := [4]byte{192, 0, 2, 11}
	for _, tc := range []struct {
		name      string
		frame     []byte
		ok, reply bool
	}{
		{"gratuitous request", rawARP(1, testMAC, testMAC, vip, zeroMAC, vip), true, false},
		{"reply to a probe", rawARP(2, testMAC, testMAC, vip, otherMAC, [4]byte{}), true, true},
		{"ordinary reply", rawARP(2, testMAC, testMAC, vip, otherMAC, other), true, true},
		{"ordinary request", rawARP(1, testMAC, testMAC, vip, zeroMAC, other), false, false},
		{"probe", rawARP(1, testMAC, testMAC, [4]byte{}, zeroMAC, vip), false, false},
		{"reply from 0.0.0.0", rawARP(2, testMAC, testMAC, [4]byte{}, otherMAC, vip), false, false},
		{"reply naming another MAC", rawARP(2, otherMAC, testMAC, vip, otherMAC, [4]byte{}), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotVIP, gotMAC, reply, ok := parseARP(tc.frame)
			if ok != tc.ok || reply != tc.reply {
				t.Fatalf("ok, reply = %v, %v; want %v, %v", ok, reply, tc.ok, tc.reply)
			}
			if ok && (gotVIP != testVIP || !bytes.Equal(gotMAC, testMAC)) {
				t.Errorf("got %s %s, want %s %s", gotVIP, gotMAC, testVIP, testMAC)
			}
		})
	}
}

func TestProbeFrame(t *testing.T) {
	got, err := ProbeFrame(otherMAC, testVIP)
	if err != nil {
		t.Fatal(err)
	}
	// Broadcast, from src, ARP request: sender src/0.0.0.0, target 0/VIP.
	want := rawARP(1, otherMAC, otherMAC, [4]byte{}, zeroMAC, [4]byte{192, 0, 2, 10})
	if !bytes.Equal(got[:42], want[:42]) {
		t.Fatalf("probe frame\n got % x\nwant % x", got, want)
	}
	if _, _, _, ok := parseARP(got); ok {
		t.Error("a probe is itself taken for an observation")
	}
}

// collector gathers observations delivered to a Run callback.
type collector struct {
	mu  sync.Mutex
	obs []Observation
	ch  chan Observation
}

func newCollector() *collector { return &collector{ch: make(chan Observation, 256)} }

// add never blocks Run: all keeps every observation, ch the first 256
// not yet taken.
func (c *collector) add(o Observation) {
	c.mu.Lock()
	c.obs = append(c.obs, o)
	c.mu.Unlock()
	select {
	case c.ch <- o:
	default:
	}
}

func (c *collector) all() []Observation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Observation(nil), c.obs...)
}

func watchOnly(addrs ...netip.Addr) func(netip.Addr) bool {
	return func(a netip.Addr) bool {
		for _, w := range addrs {
			if a == w {
				return true
			}
		}
		return false
	}
}

// runListener starts l.Run with c's callback and returns a cancel func that
// stops it and returns Run's error; it fails the test if Run does not stop.
func runListener(t *testing.T, l *Listener, c *collector) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, c.add) }()
	stopped := false
	var runErr error
	stop := func() error {
		if stopped {
			return runErr
		}
		stopped = true
		cancel()
		select {
		case runErr = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Listener.Run did not return after cancel")
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	return stop
}

func TestListenerRun(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	conn := newFakeConn()
	l, err := NewListener("br0", conn, watchOnly(testVIP), ListenerOptions{Logger: testLogger(t), Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	stop := runListener(t, l, c)

	vip := [4]byte{192, 0, 2, 10}
	otherMAC := net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x02, 0x0b}
	feed := [][]byte{
		bytes.Repeat([]byte{0xff}, 7),                                                        // truncated garbage
		rawARP(1, testMAC, testMAC, [4]byte{192, 0, 2, 11}, zeroMAC, vip),                    // ordinary request
		rawARP(1, testMAC, testMAC, [4]byte{192, 0, 2, 20}, zeroMAC, [4]byte{192, 0, 2, 20}), // GARP, unwatched VIP
		rawARP(1, testMAC, testMAC, vip, zeroMAC, vip),                                       // GARP request, watched
		rawARP(2, otherMAC, otherMAC, vip, otherMAC, vip),                                    // GARP reply, watched, new owner
		rawARP(1, testMAC, testMAC, vip, zeroMAC, vip)[:25],                                  // truncated GARP
	}
	for i, f := range feed {
		select {
		case conn.in <- f:
		case <-time.After(30 * time.Second):
			t.Fatalf("listener did not read frame %d", i)
		}
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	want := []Observation{
		{VIP: testVIP, MAC: testMAC, Interface: "br0", At: at},
		{VIP: testVIP, MAC: otherMAC, Interface: "br0", At: at},
	}
	if diff := cmp.Diff(want, c.all(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("observations (-want +got):\n%s", diff)
	}
}

func TestListenerStops(t *testing.T) {
	t.Run("ctx while blocked", func(t *testing.T) {
		conn := newFakeConn()
		l, err := NewListener("br0", conn, watchOnly(testVIP), ListenerOptions{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		stop := runListener(t, l, newCollector())
		if err := stop(); !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
		// The conn stays usable for the next Run.
		c := newCollector()
		stop = runListener(t, l, c)
		select {
		case conn.in <- rawARP(1, testMAC, testMAC, [4]byte{192, 0, 2, 10}, zeroMAC, [4]byte{192, 0, 2, 10}):
		case <-time.After(30 * time.Second):
			t.Fatal("second Run does not read")
		}
		select {
		case <-c.ch:
		case <-time.After(30 * time.Second):
			t.Fatal("second Run gave no observation")
		}
		stop()
	})
	t.Run("conn closed", func(t *testing.T) {
		conn := newFakeConn()
		l, err := NewListener("br0", conn, watchOnly(testVIP), ListenerOptions{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- l.Run(t.Context(), func(Observation) {}) }()
		conn.Close()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("Run = %v, want net.ErrClosed", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after Close")
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		l, err := NewListener("br0", newFakeConn(), watchOnly(testVIP), ListenerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := l.Run(ctx, func(Observation) { t.Error("callback called") }); !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
}

func TestListenerRetriesReadErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn := newFakeConn()
		conn.readErrs = []error{syscall.ENETDOWN, syscall.ENETDOWN}
		l, err := NewListener("br0", conn, watchOnly(testVIP), ListenerOptions{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		var got []Observation
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx, func(o Observation) { got = append(got, o) }) }()
		conn.in <- rawARP(1, testMAC, testMAC, [4]byte{192, 0, 2, 10}, zeroMAC, [4]byte{192, 0, 2, 10})
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
		if len(got) != 1 || got[0].VIP != testVIP {
			t.Errorf("observations = %+v, want one for %s", got, testVIP)
		}
	})
}

func TestNewListenerOptions(t *testing.T) {
	if _, err := NewListener("br0", nil, watchOnly(testVIP), ListenerOptions{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("nil conn: %v, want ErrInvalidOptions", err)
	}
	if _, err := NewListener("br0", newFakeConn(), nil, ListenerOptions{}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("nil watch: %v, want ErrInvalidOptions", err)
	}
}

func FuzzListenerDecode(f *testing.F) {
	vip := [4]byte{192, 0, 2, 10}
	frames, err := Frames(testVIP, testMAC)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][]byte{
		frames[0], frames[1], frames[0][:42], frames[0][:25], nil,
		rawARP(1, testMAC, testMAC, [4]byte{192, 0, 2, 11}, zeroMAC, vip),
		rawARP(1, testMAC, testMAC, [4]byte{}, zeroMAC, vip),
		append(append(append([]byte(nil), frames[0][:12]...), 0x81, 0x00, 0x00, 0x64), frames[0][12:]...),
	} {
		f.Add(s)
	}
	fuzzListener(f, func(t *testing.T, o Observation) {
		if o.VIP.Is6() {
			return // a neighbour advertisement: FuzzListenerDecodeNA's part
		}
		if !usableVIP(o.VIP) || !o.VIP.Is4() || !unicastMAC(o.MAC) || o.Interface != "br0" {
			t.Fatalf("accepted a frame giving %+v", o)
		}
		// What was learnt can be announced, and announcing it is learnt back.
		again, err := Frames(o.VIP, o.MAC)
		if err != nil {
			t.Fatalf("Frames(%s, %s): %v", o.VIP, o.MAC, err)
		}
		for _, fr := range again {
			v, m, ok := parseGratuitous(fr)
			if !ok || v != o.VIP || !bytes.Equal(m, o.MAC) {
				t.Fatalf("round trip of %s %s gave %s %s %v", o.VIP, o.MAC, v, m, ok)
			}
		}
	})
}

// fuzzListener runs the listener's frame handling on fuzzed frames: a
// rejected frame must not call back, an accepted one exactly once, with a
// unicast MAC and the listener's interface; check judges the observation.
func fuzzListener(f *testing.F, check func(t *testing.T, o Observation)) {
	l, err := NewListener("br0", newFakeConn(), func(netip.Addr) bool { return true }, ListenerOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got []Observation
		called := l.handle(b, nil, func(o Observation) { got = append(got, o) })
		if !called {
			if len(got) != 0 {
				t.Fatal("callback called for a rejected frame")
			}
			return
		}
		if len(got) != 1 {
			t.Fatalf("%d observations for one frame", len(got))
		}
		if o := got[0]; !unicastMAC(o.MAC) || o.Interface != "br0" {
			t.Fatalf("accepted a frame giving %+v", o)
		}
		check(t, got[0])
	})
}

// BenchmarkAnnounceFirstFrame measures the time from the call to Announce
// to the first frame handed to the conn (claim → GARP latency inside
// hostsync), reported as ns/first-frame.
func BenchmarkAnnounceFirstFrame(b *testing.B) {
	conn := newFakeConn()
	var first time.Time
	conn.onWrite = func(w write) {
		if first.IsZero() {
			first = w.at
		}
	}
	s, err := NewSender(&net.Interface{Name: "br0", Index: 3}, conn, Options{Schedule: []time.Duration{0}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	var total time.Duration
	n := 0
	for b.Loop() {
		first = time.Time{}
		start := time.Now()
		if _, err := s.Announce(ctx, testVIP, testMAC); err != nil {
			b.Fatal(err)
		}
		total += first.Sub(start)
		n++
		conn.mu.Lock()
		conn.writes = conn.writes[:0]
		conn.mu.Unlock()
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(n), "ns/first-frame")
}
