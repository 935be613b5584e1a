package garp

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// settableClock is a clock the test moves by hand.
type settableClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *settableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *settableClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestProbeAfterAnnounceDeadlinePassed is the regression test for issue 11
// defect 1: Announce set a write deadline on the shared packet socket and
// never cleared it, so once it had passed every later Probe (and every
// later burst) failed with "i/o timeout". The fake conn enforces write
// deadlines against the same settable clock the Sender uses.
func TestProbeAfterAnnounceDeadlinePassed(t *testing.T) {
	clock := &settableClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	conn := newFakeConn()
	conn.now = clock.Now
	ifi := &net.Interface{Name: "br0", HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}}
	s, err := NewSender(ifi, conn, Options{Logger: testLogger(t), Schedule: []time.Duration{0}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("192.0.2.10")
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x11}
	if sent, err := s.Announce(context.Background(), vip, mac); err != nil || sent != 2 {
		t.Fatalf("Announce = %d, %v; want 2 frames, no error", sent, err)
	}

	// Long after the burst: whatever deadline it used has passed.
	clock.Advance(time.Hour)
	if err := s.Probe(vip); err != nil {
		t.Fatalf("Probe after a burst: %v", err)
	}
	if sent, err := s.Announce(context.Background(), vip, mac); err != nil || sent != 2 {
		t.Fatalf("second Announce = %d, %v; want 2 frames, no error", sent, err)
	}
	clock.Advance(time.Hour)
	if err := s.Probe(vip); err != nil {
		t.Fatalf("Probe after the second burst: %v", err)
	}
	if got := len(conn.recorded()); got != 6 {
		t.Fatalf("%d frames written, want 6 (2 bursts of 2, 2 probes)", got)
	}
}
