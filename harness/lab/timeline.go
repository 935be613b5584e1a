package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Watch records, from the moment it starts, the gratuitous ARP seen on a
// host's bridge, the VIP's holders (netlink address events in every
// guest) and the answers the client gets through the EIP, so a failover's
// timeline can be measured from the outside.
type Watch struct {
	s      *Stack
	cancel context.CancelFunc
	wg     sync.WaitGroup

	holderLog *HolderLog // the VIP's holders from address events

	mu      sync.Mutex // guards the fields below
	garps   []garpSeen
	answers []answer
}

type garpSeen struct {
	at  time.Time
	mac string
}

type answer struct {
	at   time.Time // when the request was sent
	name string    // who answered; "" on failure
}

// StartWatch listens for GARP on host h's bridge, records the VIP's
// holders and polls the client through the EIP every interval.
func (s *Stack) StartWatch(h *Host, interval time.Duration) (*Watch, error) {
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watch{s: s, cancel: cancel}
	var (
		l      *garp.Listener
		closer io.Closer
	)
	err := s.InNS(h.ID, func() error {
		var err error
		l, closer, err = garp.OpenListener("br0", func(a netip.Addr) bool { return a == VIP.Addr() }, garp.ListenerOptions{})
		return err
	})
	if err != nil {
		cancel()
		return nil, err
	}
	hl, err := s.RecordHolders()
	if err != nil {
		closer.Close()
		cancel()
		return nil, err
	}
	w.holderLog = hl
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		defer closer.Close()
		_ = l.Run(ctx, func(o garp.Observation) {
			w.mu.Lock()
			w.garps = append(w.garps, garpSeen{at: o.At, mac: o.MAC.String()})
			w.mu.Unlock()
		})
	}()
	go func() {
		defer w.wg.Done()
		// One request every interval, each on its own connection and
		// goroutine, so a request lost in the move (it waits for its
		// timeout) does not delay the next: the first success is known to
		// within one interval. At most 64 are in flight.
		t := time.NewTicker(interval)
		defer t.Stop()
		var inflight sync.WaitGroup
		defer inflight.Wait()
		slots := make(chan struct{}, 64)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			select {
			case slots <- struct{}{}:
			default:
				continue // too many in flight: skip this tick
			}
			inflight.Add(1)
			go func(sent time.Time) {
				defer inflight.Done()
				defer func() { <-slots }()
				name, _ := s.ClientGet(ctx, 300*time.Millisecond)
				w.mu.Lock()
				w.answers = append(w.answers, answer{at: sent, name: name})
				w.mu.Unlock()
			}(time.Now())
		}
	}()
	return w, nil
}

// Stop ends the watch and waits for its goroutines.
func (w *Watch) Stop() {
	w.cancel()
	w.wg.Wait()
	w.holderLog.Stop()
}

// FirstGARP is the first GARP for the VIP with mac seen at or after t.
func (w *Watch) FirstGARP(mac string, t time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, g := range w.garps {
		if g.mac == mac && !g.at.Before(t) {
			return g.at, true
		}
	}
	return time.Time{}, false
}

// GARPs lists when each GARP for the VIP with mac was seen at or after
// t, in the order seen.
func (w *Watch) GARPs(mac string, t time.Time) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var at []time.Time
	for _, g := range w.garps {
		if g.mac == mac && !g.at.Before(t) {
			at = append(at, g.at)
		}
	}
	return at
}

// FirstSoleHolder is when name was first the only guest with the VIP on
// its NIC at or after t (from netlink address events).
func (w *Watch) FirstSoleHolder(name string, t time.Time) (time.Time, bool) {
	spans, err := w.holderLog.Spans(t, time.Now())
	if err != nil {
		return time.Time{}, false
	}
	for _, sp := range spans {
		if len(sp.Holders) == 1 && sp.Holders[0] == name {
			return sp.From, true
		}
	}
	return time.Time{}, false
}

// Holders is the watch's HolderLog.
func (w *Watch) Holders() *HolderLog { return w.holderLog }

// FirstAnswer is when the earliest request sent at or after t that was
// answered by name was sent (its answer came within the request timeout
// after that).
func (w *Watch) FirstAnswer(name string, t time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first time.Time
	for _, a := range w.answers {
		if a.name == name && !a.at.Before(t) && (first.IsZero() || a.at.Before(first)) {
			first = a.at
		}
	}
	return first, !first.IsZero()
}

// Failed counts the client requests sent after t that got no answer.
func (w *Watch) Failed(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.answers {
		if a.name == "" && !a.at.Before(t) {
			n++
		}
	}
	return n
}

// Step is one point of a failover timeline.
type Step struct {
	What string
	At   time.Time // zero when not observed
}

// Timeline is a measured failover.
type Timeline struct {
	From, To string
	Fault    time.Time
	Steps    []Step
	// Notes are what the agents said about the steps (the failing check
	// and its reason) and how the gateway host learnt the move, printed
	// under the table.
	Notes []string
	// Move is the gateway host's move that applied the EIP (zero when
	// none was seen).
	Move api.Move
}

// Offset is the step's time after the fault; ok is false when unobserved.
func (tl Timeline) Offset(what string) (time.Duration, bool) {
	for _, s := range tl.Steps {
		if s.What == what && !s.At.IsZero() {
			return s.At.Sub(tl.Fault), true
		}
	}
	return 0, false
}

// The steps of a timeline.
const (
	StepCheck      = "check failing on the old master (its agent's status)"
	StepResign     = "old master left MASTER, FAULT when its check resigns (keepalived's notify, recorded by its agent)"
	StepTransition = "keepalived transition (notify hook on the new master)"
	StepVIP        = "VIP only on the new master's NIC (netlink address events)"
	StepRecorded   = "agent recorded the transition"
	StepClaim      = "hostsync received the claim"
	StepGARP       = "GARP for the VIP seen on the bridge"
	StepApplied    = "EIP mapping applied on the gateway"
	StepClient     = "first client success through the EIP"
)

// MeasureFailover collects the timeline of the move from one guest to
// another that a fault at t0 started. Call it once the move is complete.
// The steps only an agent sees (its records of keepalived's transitions)
// are left out for a guest without an agent (the hand-written profile);
// hostsync then learns the move from keepalived's GARP and "claim" is that
// observation.
func (s *Stack) MeasureFailover(ctx context.Context, w *Watch, from, to *Guest, t0 time.Time) (Timeline, error) {
	tl := Timeline{From: from.Name, To: to.Name, Fault: t0}
	var agentSteps []Step
	if s.Agent(to) != nil {
		// keepalived runs the notify hook a moment after it moved the VIP
		// (a process start, longer on a busy machine): wait for the record.
		var tr vrrp.Transition
		err := s.poll(ctx, 10*time.Second, "the new master's agent recording MASTER", func() (bool, error) {
			hist, err := s.AgentHistory(ctx, to)
			if err != nil {
				return false, nil
			}
			for _, h := range hist {
				if h.To == vrrp.RoleMaster && h.At.After(t0) {
					tr = h
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return tl, err
		}
		agentSteps = append(agentSteps, Step{StepTransition, tr.At}, Step{StepRecorded, tr.Recorded})
	}
	if s.Agent(from) != nil {
		steps, notes := s.oldMasterSteps(ctx, from, t0)
		agentSteps = append(agentSteps, steps...)
		tl.Notes = append(tl.Notes, notes...)
	}
	// The gateway's hostsync may learn the move from the claim a moment
	// after the GARP: wait until it has applied it.
	_ = s.poll(ctx, 5*time.Second, "the gateway host's move applied", func() (bool, error) {
		st, err := s.HostsyncStatus(ctx, s.GatewayHost)
		if err != nil {
			return false, nil
		}
		for _, mv := range st.RecentMoves {
			if mv.To == to.Name && !mv.Received.Before(t0) && !mv.Applied.IsZero() {
				return true, nil
			}
		}
		return false, nil
	})
	vipAt, _ := w.FirstSoleHolder(to.Name, t0)
	var claimAt, appliedAt time.Time
	for _, h := range s.Topo.Hosts {
		st, err := s.HostsyncStatus(ctx, h)
		if err != nil {
			continue
		}
		for _, mv := range st.RecentMoves {
			if mv.To != to.Name || mv.Received.Before(t0) {
				continue
			}
			if claimAt.IsZero() || mv.Received.Before(claimAt) {
				claimAt = mv.Received
			}
			if h == s.GatewayHost && !mv.Applied.IsZero() && (appliedAt.IsZero() || mv.Applied.Before(appliedAt)) {
				appliedAt = mv.Applied
				tl.Move = mv
			}
		}
	}
	if mv := tl.Move; !mv.Applied.IsZero() {
		tl.Notes = append(tl.Notes, fmt.Sprintf("%s (gateway): move %s -> %s learnt from %s: received +%s, recorded +%s, GARP sent +%s, applied +%s",
			s.GatewayHost.ID, mv.From, mv.To, mv.Source, fmtMS(mv.Received.Sub(t0)), fmtMS(mv.Recorded.Sub(t0)), fmtMS(mv.Announced.Sub(t0)), fmtMS(mv.Applied.Sub(t0))))
	}
	garpAt, _ := w.FirstGARP(to.MAC, t0)
	clientAt, _ := w.FirstAnswer(to.Name, t0)
	tl.Steps = append(agentSteps,
		Step{StepVIP, vipAt},
		Step{StepClaim, claimAt},
		Step{StepGARP, garpAt},
		Step{StepApplied, appliedAt},
		Step{StepClient, clientAt},
	)
	return tl, nil
}

// oldMasterSteps are what the old master's agent saw after the fault at
// t0: its check failing (a check the agent runs: resign policy) and
// keepalived leaving MASTER (FAULT when the failing check resigned,
// BACKUP when it lowered the priority), with the note naming the check.
func (s *Stack) oldMasterSteps(ctx context.Context, from *Guest, t0 time.Time) ([]Step, []string) {
	var (
		steps []Step
		notes []string
	)
	if st, err := s.AgentStatus(ctx, from); err == nil && len(st.Checks) > 0 {
		var failing api.CheckStatus
		_ = s.poll(ctx, 5*time.Second, "the old master's check failing", func() (bool, error) {
			st, err := s.AgentStatus(ctx, from)
			if err != nil {
				return false, nil
			}
			for _, c := range st.Checks {
				if c.State == api.CheckFailing && !c.Since.Before(t0) {
					failing = c
					return true, nil
				}
			}
			return false, nil
		})
		steps = append(steps, Step{StepCheck, failing.Since})
		if !failing.Since.IsZero() {
			notes = append(notes, fmt.Sprintf("%s: check %s (%s, on_failure %s) failing: %s", from.Name, failing.Name, failing.Kind, failing.OnFailure, failing.Reason))
		}
	}
	var left vrrp.Transition
	_ = s.poll(ctx, 5*time.Second, "the old master's agent recording its leaving MASTER", func() (bool, error) {
		hist, err := s.AgentHistory(ctx, from)
		if err != nil {
			return false, nil
		}
		for _, h := range hist {
			if h.From == vrrp.RoleMaster && h.At.After(t0) {
				left = h
				return true, nil
			}
		}
		return false, nil
	})
	steps = append(steps, Step{StepResign, left.At})
	if left.At.IsZero() {
		return steps, notes
	}
	n := fmt.Sprintf("%s: MASTER -> %s (%s)", from.Name, left.To, left.Source)
	if left.Note != "" {
		n += ": " + left.Note
	}
	notes = append(notes, n)
	return steps, notes
}

// Print writes the timeline as a table of offsets from the fault.
func (tl Timeline) Print(w io.Writer) {
	fmt.Fprintf(w, "failover %s -> %s, fault at %s\n", tl.From, tl.To, tl.Fault.Format("15:04:05.000"))
	steps := slices.Clone(tl.Steps)
	slices.SortStableFunc(steps, func(a, b Step) int {
		switch {
		case a.At.IsZero() && b.At.IsZero():
			return 0
		case a.At.IsZero():
			return 1
		case b.At.IsZero():
			return -1
		}
		return a.At.Compare(b.At)
	})
	fmt.Fprintf(w, "  %-12s %-9s  %s\n", "at", "+fault", "step")
	fmt.Fprintf(w, "  %-12s %-9s  %s\n", tl.Fault.Format("15:04:05.000"), "0 ms", "fault injected")
	for _, s := range steps {
		if s.At.IsZero() {
			fmt.Fprintf(w, "  %-12s %-9s  %s\n", "-", "-", s.What+" (not observed)")
			continue
		}
		fmt.Fprintf(w, "  %-12s %-9s  %s\n", s.At.Format("15:04:05.000"), fmtMS(s.At.Sub(tl.Fault)), s.What)
	}
	for _, n := range tl.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

func fmtMS(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}
