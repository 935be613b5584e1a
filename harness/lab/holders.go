package lab

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// HolderLog records when each guest's eth0 gained or lost the VIP, from
// netlink address events (RTM_NEWADDR/RTM_DELADDR) in every guest's
// namespace, timestamped on receipt: no sampling interval, so a two-holder
// or no-holder span of a millisecond shows.
type HolderLog struct {
	start  time.Time
	done   chan struct{}
	wg     sync.WaitGroup
	guests []string

	mu     sync.Mutex // guards the fields below
	events []holderEvent
	errs   []error
}

type holderEvent struct {
	at      time.Time
	guest   string
	present bool
}

// RecordHolders starts a HolderLog; Stop ends it.
func (s *Stack) RecordHolders() (*HolderLog, error) {
	r := &HolderLog{done: make(chan struct{})}
	for _, g := range s.Topo.Guests {
		ch := make(chan netlink.AddrUpdate, 64)
		err := s.InNS(g.NS, func() error {
			// The socket is made in g's namespace (this thread's) and
			// keeps it; it is read from any goroutine.
			return netlink.AddrSubscribeWithOptions(ch, r.done, netlink.AddrSubscribeOptions{
				ErrorCallback: func(err error) { r.fail(fmt.Errorf("lab: address events of %s: %w", g.Name, err)) },
			})
		})
		if err != nil {
			r.Stop()
			return nil, fmt.Errorf("lab: address events of %s: %w", g.Name, err)
		}
		r.guests = append(r.guests, g.Name)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for u := range ch {
				ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
				if !ok || ip.Unmap() != VIP.Addr() {
					continue
				}
				r.mu.Lock()
				r.events = append(r.events, holderEvent{at: time.Now(), guest: g.Name, present: u.NewAddr})
				r.mu.Unlock()
			}
		}()
	}
	// The state at the start, once the subscriptions are open: nothing
	// that changes from here on is missed.
	r.start = time.Now()
	holders, err := s.VIPHolders()
	if err != nil {
		r.Stop()
		return nil, err
	}
	r.mu.Lock()
	for _, g := range holders {
		r.events = append([]holderEvent{{at: r.start, guest: g.Name, present: true}}, r.events...)
	}
	r.mu.Unlock()
	return r, nil
}

func (r *HolderLog) fail(err error) {
	select {
	case <-r.done:
		return // the subscription's socket was closed by Stop
	default:
	}
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// Stop ends the subscriptions and waits for their readers.
func (r *HolderLog) Stop() {
	select {
	case <-r.done:
	default:
		close(r.done)
	}
	r.wg.Wait()
}

// HolderSpan is a stretch of time with the same set of holders.
type HolderSpan struct {
	From, To time.Time
	Holders  []string
}

// Spans replays the events into the stretches between from and to (the
// log's start when from is earlier) with their holders.
func (r *HolderLog) Spans(from, to time.Time) ([]HolderSpan, error) {
	r.mu.Lock()
	events := slices.Clone(r.events)
	errs := slices.Clone(r.errs)
	r.mu.Unlock()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	slices.SortStableFunc(events, func(a, b holderEvent) int { return a.at.Compare(b.at) })
	if from.Before(r.start) {
		from = r.start
	}
	held := map[string]bool{}
	names := func() []string {
		var out []string
		for _, g := range r.guests {
			if held[g] {
				out = append(out, g)
			}
		}
		return out
	}
	var spans []HolderSpan
	cur := HolderSpan{From: from}
	i := 0
	for ; i < len(events) && !events[i].at.After(from); i++ {
		held[events[i].guest] = events[i].present
	}
	cur.Holders = names()
	for ; i < len(events) && events[i].at.Before(to); i++ {
		held[events[i].guest] = events[i].present
		if n := names(); !slices.Equal(n, cur.Holders) {
			cur.To = events[i].at
			spans = append(spans, cur)
			cur = HolderSpan{From: events[i].at, Holders: n}
		}
	}
	cur.To = to
	return append(spans, cur), nil
}

// HolderTimes sums the spans between from and to with two or more
// holders and with none.
func (r *HolderLog) HolderTimes(from, to time.Time) (two, none time.Duration, err error) {
	spans, err := r.Spans(from, to)
	if err != nil {
		return 0, 0, err
	}
	for _, sp := range spans {
		switch {
		case len(sp.Holders) >= 2:
			two += sp.To.Sub(sp.From)
		case len(sp.Holders) == 0:
			none += sp.To.Sub(sp.From)
		}
	}
	return two, none, nil
}

// FormatSpans is spans as text relative to t0 ("+0 ms..+312 ms [nginx-master]").
func FormatSpans(spans []HolderSpan, t0 time.Time) string {
	var out string
	for _, sp := range spans {
		out += fmt.Sprintf("\n  %s..%s %v", fmtMS(sp.From.Sub(t0)), fmtMS(sp.To.Sub(t0)), sp.Holders)
	}
	return out
}
