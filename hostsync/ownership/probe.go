package ownership

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/internal/wait"
)

// Prober asks the guests' segment who holds a VIP (garp.Sender.Probe):
// every holder answers with an ARP reply (an IPv6 VIP: a solicited
// neighbour advertisement, garp.Families), which the passive listener
// reports as an Observation with Reply set.
type Prober interface {
	Probe(vip netip.Addr) error
}

// probeReplyWindow is how long after a probe its replies are counted as
// answers to it. Answers come within a millisecond on one segment; the
// margin covers a busy guest.
const probeReplyWindow = time.Second

// probeRound is one probe of a VIP and the member MACs that answered it.
type probeRound struct {
	sent time.Time
	macs []string
}

// DefaultProbeInterval is how often every VIP is probed.
const DefaultProbeInterval = 10 * time.Second

// A probe round is sent in chunks of probeChunk probes, probeChunkGap
// apart (3,200 probes a second: 10,000 VIPs in about 3 s). Sent as one
// burst, the answers outrun the listener: they queue in its socket,
// whose buffer holds a few hundred frames, while each is handled (an
// Observe, ~50 µs), and the rest are dropped, with any real GARP among
// them. Measured with the real sender, listener and kernel, 750 VIPs
// answered by one namespace (TestNetnsProbeRoundLosesNoAnswer): a burst
// lost 12–16 % of the answers with no work per answer (53 % when each
// answer cost 50 µs, as an Observe does); chunks of 32 every 10 ms lost
// none.
const (
	probeChunk    = 32
	probeChunkGap = 10 * time.Millisecond
)

// ProbeAll probes every known VIP once. The answers establish the owner
// from the wire (a hostsync that was down during a move catches up, an
// owner that left MASTER without another member's claim is replaced by
// whoever holds the VIP) and expose a split brain: two members answering
// the same probe both hold the VIP.
func (s *Engine) ProbeAll(ctx context.Context, p Prober) {
	if err := s.refreshVIPs(ctx); err != nil {
		s.log.Warn("probe: list VIPs", "err", err)
		return
	}
	s.mu.Lock()
	vips := make([]netip.Addr, 0, len(s.vips))
	for v := range s.vips {
		vips = append(vips, v)
	}
	s.mu.Unlock()
	s.probe(ctx, p, vips)
}

// probeKicked probes the VIPs KickProbe named since the last call.
func (s *Engine) probeKicked(ctx context.Context, p Prober) {
	s.mu.Lock()
	vips := make([]netip.Addr, 0, len(s.kicked))
	for v := range s.kicked {
		if _, known := s.vips[v]; known {
			vips = append(vips, v)
		}
	}
	clear(s.kicked)
	s.mu.Unlock()
	s.probe(ctx, p, vips)
}

// probe probes vips in chunks of probeChunk, probeChunkGap apart; each
// VIP's round starts when its probe is sent, so its answers count for
// probeReplyWindow from then. It returns early when ctx ends.
func (s *Engine) probe(ctx context.Context, p Prober, vips []netip.Addr) {
	slices.SortFunc(vips, netip.Addr.Compare)
	for start := 0; start < len(vips); start += probeChunk {
		if start > 0 && s.probePause(ctx, probeChunkGap) != nil {
			return
		}
		chunk := vips[start:min(len(vips), start+probeChunk)]
		s.startRounds(chunk)
		for _, v := range chunk {
			if err := p.Probe(v); err != nil {
				s.log.Warn("probe failed", "op", "probe", "vip", v, "err", err)
			}
		}
	}
}

// startRounds starts a probe round for each of vips, now.
func (s *Engine) startRounds(vips []netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, v := range vips {
		// A round that only one member answered ends a split brain.
		// (Holds are kept under the group's IPv4 VIP, which a probe of
		// its IPv6 VIP also ends.)
		if prev, key := s.rounds[v], s.primaryLocked(v); prev != nil && len(prev.macs) == 1 && s.holds[key] != nil {
			s.log.Info("split brain over: one member answered the probe", "op", "probe", "vip", v, "mac", prev.macs[0])
			delete(s.holds, key)
		}
		s.rounds[v] = &probeRound{sent: now}
	}
}

// KickProbe asks the probe loop to probe vip (and the other VIP of its
// dual-stack group) soon: its owner reported leaving MASTER, find out who
// holds it now. Only the kicked VIPs are probed, so a failover costs the
// same probe whatever the number of groups.
func (s *Engine) KickProbe(vip netip.Addr) {
	s.mu.Lock()
	s.kicked[vip.Unmap()] = true
	if other, ok := s.pairs[vip.Unmap()]; ok {
		s.kicked[other] = true
	}
	s.mu.Unlock()
	select {
	case s.probeKick <- struct{}{}:
	default:
	}
}

// ProbeLoop probes every VIP at start and every interval, and the kicked
// ones (KickProbe) when kicked. The rounds of every VIP run beside the
// kicked probes, so a failover's probe never waits behind a paced round
// (about 3 s at 10,000 VIPs).
func ProbeLoop(ctx context.Context, e *Engine, p Prober, interval time.Duration) {
	var rounds sync.WaitGroup
	defer rounds.Wait()
	rounds.Go(func() {
		// The first round waits a moment for the listener's socket, so
		// the answers are not missed; the next starts interval after the
		// end of the last.
		t := time.NewTimer(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				e.ProbeAll(ctx, p)
				t.Reset(interval)
			}
		}
	})
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.probeKick:
			// A kicked probe lets the new master's keepalived settle first.
			if wait.Sleep(ctx, 100*time.Millisecond) != nil {
				return
			}
			e.probeKicked(ctx, p)
		}
	}
}

// probeAnswer records a reply to the current probe round of vip and
// returns the member MACs that answered the round so far when there are
// two or more (a split brain), else nil.
func (s *Engine) probeAnswer(vip netip.Addr, mac string, at time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rounds[vip]
	if r == nil || at.Before(r.sent) || at.Sub(r.sent) > probeReplyWindow {
		return nil
	}
	if !slices.Contains(r.macs, mac) {
		r.macs = append(r.macs, mac)
	}
	if len(r.macs) < 2 {
		return nil
	}
	return slices.Clone(r.macs)
}

// splitHold is a split brain in progress on a VIP: until it is over (a
// probe answered by one member only, or a loser reporting it left MASTER),
// the losers' GARP and MASTER claims do not move the VIP, so the owner
// does not flap between two masters with every announcement.
type splitHold struct {
	winner string   // MAC
	losers []string // MACs
}

// heldAgainst reports whether mac is a loser of a split brain on vip.
func (s *Engine) heldAgainst(vip netip.Addr, mac string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.holds[vip]
	return h != nil && slices.Contains(h.losers, mac)
}

// releaseHold ends the hold on vip for mac (it left MASTER); the whole
// hold ends when the winner leaves MASTER or no loser is left.
func (s *Engine) releaseHold(vip netip.Addr, mac string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.holds[vip]
	if h == nil {
		return
	}
	h.losers = slices.DeleteFunc(h.losers, func(m string) bool { return m == mac })
	if len(h.losers) == 0 || h.winner == mac {
		// The last loser or the winner left MASTER: the split is over.
		delete(s.holds, vip)
	}
}

// probeSplit resolves members answering the same probe for vip: both hold
// the VIP. It records the split brain, holds the VIP for the winner while
// the split lasts, and returns the MAC of the member that keeps the
// ownership (higher priority, then lower address).
func (s *Engine) probeSplit(ctx context.Context, vip netip.Addr, macs []string) (string, error) {
	var g registry.Group
	var holders []registry.Guest
	err := s.store.View(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = inventory.GroupByVIP(tx, vip); err != nil {
			return err
		}
		for _, m := range g.Members {
			gu, err := registry.Get[registry.Guest](tx, m.GuestID)
			if err != nil {
				return err
			}
			if slices.Contains(macs, gu.MAC) {
				holders = append(holders, gu)
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if len(holders) < 2 {
		return "", fmt.Errorf("hostsync: probe of %s: fewer than two members among %v", vip, macs)
	}
	winner, reason := holders[0], ""
	names := []string{holders[0].Name}
	for _, h := range holders[1:] {
		winner, reason = resolveSplit(g, winner, h)
		names = append(names, h.Name)
	}
	probe := "ARP probe"
	if vip.Is6() {
		probe = "neighbour solicitation"
	}
	s.recordSplit(api.SplitBrain{Group: g.Name, Members: names, Winner: winner.Name,
		Reason: reason + "; both answered one " + probe + " for " + vip.String(), At: s.nowUTC()})
	h := &splitHold{winner: winner.MAC}
	for _, gu := range holders {
		if gu.MAC != winner.MAC {
			h.losers = append(h.losers, gu.MAC)
		}
	}
	// The hold is on the group (its IPv4 VIP, which claims check), so a
	// split brain seen on the IPv6 VIP holds the losers' claims as well.
	s.mu.Lock()
	s.holds[g.VIP.Address] = h
	s.mu.Unlock()
	return winner.MAC, nil
}

// isMemberMAC reports whether mac is the MAC of a member of vip's group.
func (s *Engine) isMemberMAC(ctx context.Context, vip netip.Addr, mac string) (bool, error) {
	found := false
	err := s.store.View(ctx, func(tx registry.Tx) error {
		g, err := inventory.GroupByVIP(tx, vip)
		if err != nil {
			return err
		}
		for _, m := range g.Members {
			gu, err := registry.Get[registry.Guest](tx, m.GuestID)
			if err != nil {
				return err
			}
			if gu.MAC == mac {
				found = true
				return nil
			}
		}
		return nil
	})
	return found, err
}
