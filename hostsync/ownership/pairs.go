package ownership

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/vipkeeper/vipkeeper/hostsync/garp"
)

// A dual-stack group has two VIPs, an IPv4 one (the group's primary: its
// keepalived instance, its EIP, its owner record) and an IPv6 one that
// keepalived moves with it. The engine decides ownership per group, so an
// observation or probe answer for either address is a claim on the
// group; a move announces both (pairAnnouncer) and a split brain seen on
// either holds the group (holds are keyed by the IPv4 VIP).

// Claim sources of passive IPv6 evidence, the counterparts of SourceGARP
// and SourceARP.
const (
	// SourceNA is the claim source of an unsolicited neighbour
	// advertisement (Override set) for an IPv6 VIP, keepalived's
	// announcement, attributed to the member by its MAC.
	SourceNA = "na"
	// SourceNDP is the claim source of a solicited neighbour
	// advertisement for an IPv6 VIP: the answer to a probe.
	SourceNDP = "ndp"
)

// observationSource is the claim source of an observation.
func observationSource(o garp.Observation) string {
	switch {
	case o.VIP.Is6() && o.Reply:
		return SourceNDP
	case o.VIP.Is6():
		return SourceNA
	case o.Reply:
		return SourceARP
	}
	return SourceGARP
}

// observationKind names an observation's frame for logs and errors.
func observationKind(o garp.Observation) string {
	switch {
	case o.VIP.Is6() && o.Reply:
		return "solicited neighbour advertisement"
	case o.VIP.Is6():
		return "neighbour advertisement"
	case o.Reply:
		return "ARP reply"
	}
	return "gratuitous ARP"
}

// pairOf returns the other VIP of vip's dual-stack group.
func (s *Engine) pairOf(vip netip.Addr) (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pairs[vip.Unmap()]
	return p, ok
}

// primaryLocked is the group's IPv4 VIP for the IPv6 VIP of a dual-stack
// group, else vip itself. s.mu is held.
func (s *Engine) primaryLocked(vip netip.Addr) netip.Addr {
	if p, ok := s.pairs[vip]; ok && vip.Is6() {
		return p
	}
	return vip
}

// pairAnnouncer is the Engine's Announcer around the configured one: the
// burst for a VIP and, for a dual-stack group, the burst for its other
// VIP (the IPv6 VIP's unsolicited neighbour advertisements), started
// together, first rounds back to back, under the same context. Both are
// stopped by the same cancel when ownership moves again, and Done reports
// once both have ended, so the Engine's one burst per group (announce)
// covers both addresses.
type pairAnnouncer struct {
	a    Announcer
	pair func(netip.Addr) (netip.Addr, bool)
}

// Start implements Announcer.
func (p pairAnnouncer) Start(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) (garp.Progress, error) {
	first, err := p.a.Start(ctx, vip, mac)
	other, ok := p.pair(vip)
	if !ok {
		return first, err
	}
	second, err2 := p.a.Start(ctx, other, mac)
	merged := garp.Progress{Sent: first.Sent + second.Sent}
	err = errors.Join(err, err2)
	if first.Done == nil && second.Done == nil {
		return merged, err
	}
	done := make(chan garp.Burst, 1)
	merged.Done = done
	go func() {
		defer close(done)
		b := <-orDone(first.Done)
		b2 := <-orDone(second.Done)
		b.Sent += b2.Sent
		b.Failed += b2.Failed
		b.Rounds = max(b.Rounds, b2.Rounds)
		b.Cancelled = b.Cancelled || b2.Cancelled
		b.Err = errors.Join(b.Err, b2.Err)
		done <- b
	}()
	return merged, err
}

// orDone is ch, or a closed channel for a burst that never started.
func orDone(ch <-chan garp.Burst) <-chan garp.Burst {
	if ch != nil {
		return ch
	}
	c := make(chan garp.Burst)
	close(c)
	return c
}
