// Package ownership is hostsync's ownership engine: the claims of the
// guests' agents and the ARP seen on the wire (observations, probe
// answers) decide, by a pure policy (decide, resolveSplit), which member
// owns each group's VIP; the owner is moved with a compare-and-swap in the
// registry, announced with a GARP burst (one cancel per group) and the
// data plane re-pointed. It also keeps split-brain holds, probes, the
// claim queue for a registry that is away and the metadata served from
// the last view then.
//
// It reads the platform's records through package inventory and learns
// of their changes through Changed (admin operations on this host) and
// FollowWatch (a registry shared with other hosts).
package ownership

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/internal/wait"
)

// Announcer starts the GARP burst for vip with mac as the sender: the
// first round is written before Start returns (the Engine calls it
// before the data plane is re-pointed), the later rounds follow on the
// burst's own goroutine until the schedule ends or ctx is cancelled (the
// Engine cancels it when ownership moves again). garp.Sender implements
// it; garp.Families as well, for the IPv6 VIPs of dual-stack groups
// (neighbour advertisements), which the Engine announces together with
// their group's IPv4 VIP (pairs.go).
type Announcer interface {
	Start(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) (garp.Progress, error)
}

// Options configures a Engine. Zero values are the defaults.
type Options struct {
	Logger *slog.Logger
	// Announcer sends GARP for a new owner; nil sends none.
	Announcer Announcer
	// Backend programs the EIP mappings; nil programs nothing.
	Backend eip.Backend
	// AllowEmptyDataPlane lets an empty set from a registry holding no
	// group reach a data plane that holds mappings (see dpguard.go);
	// false holds that apply.
	AllowEmptyDataPlane bool
	// Hosts maps a guest's host id to the address the VIP is routed
	// through when that guest owns it (eip.Mapping.NextHop).
	Hosts map[string]netip.Addr
	// Metrics records counters; nil records none.
	Metrics *Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
	// SplitBrainWindow: a MASTER claim from one member while another
	// member's MASTER claim is younger than this, and that member has not
	// reported leaving MASTER, is a split brain (default 10 s). The window
	// used is at most two advertisement intervals of the group (see
	// splitWindow), so an ordinary failover is never taken for one.
	SplitBrainWindow time.Duration
	// StaleClaimAge: a MASTER claim stamped (by the guest) longer ago than
	// this is recorded but does not move the VIP, since a newer event may
	// already have moved it (default 2 min).
	StaleClaimAge time.Duration
	// AnnounceTimeout bounds one GARP burst (default 10 s).
	AnnounceTimeout time.Duration
	// ApplyTimeout bounds one data-plane apply (default 30 s).
	ApplyTimeout time.Duration
	// Queue, when set, keeps claims and observations that find the
	// registry unreachable (see Claim, ReplayQueue), and metadata is then
	// served from the last document read per guest. The caller closes it
	// after the Engine.
	Queue *ClaimQueue
	// UnreachableAfter is how long a claim, observation or metadata read
	// waits for the registry before it counts as unreachable (with a
	// Queue only; default DefaultUnreachableAfter, below the agent's
	// report timeout).
	UnreachableAfter time.Duration
}

// Engine decides and records who owns each group's VIP, announces the
// owner (GARP) and keeps the data plane pointed at it. Its methods are
// safe for concurrent use.
type Engine struct {
	// Immutable after New.
	store            registry.Store
	log              *slog.Logger
	announcer        Announcer
	backend          eip.Backend
	allowEmpty       bool
	hosts            map[string]netip.Addr
	metrics          *Metrics
	now              func() time.Time
	window           time.Duration
	staleAge         time.Duration
	announceLimit    time.Duration
	applyLimit       time.Duration
	queue            *ClaimQueue
	unreachableAfter time.Duration
	queueKick        chan struct{} // buffered 1: a claim was queued

	// changes wakes the waiters of Changes.
	changes *changeBroadcast

	// replayMu serializes ReplayQueue.
	replayMu sync.Mutex

	// applyMu serializes data-plane applies, each of the complete set read
	// fresh from the registry, so the last apply always reflects the
	// latest state.
	applyMu sync.Mutex
	// reconcileDue asks the next data-plane apply to be followed by the
	// backend's Reconcile (eip.Reconciler): set at start and when the
	// registry watch is re-established (FollowWatch).
	reconcileDue atomic.Bool

	// announces tracks running GARP bursts.
	announces sync.WaitGroup
	// probePause waits between the chunks of a probe round (probe.go);
	// tests replace it.
	probePause func(ctx context.Context, d time.Duration) error

	mu sync.Mutex // guards the fields below
	// announcing holds the cancel func of the running burst per group.
	announcing map[string]*announcement
	vips       map[netip.Addr]string     // VIP → group id, for WatchVIP (both VIPs of a dual-stack group)
	pairs      map[netip.Addr]netip.Addr // a dual-stack group's IPv4 VIP → its IPv6 VIP and back (pairs.go)
	rounds     map[netip.Addr]*probeRound
	holds      map[netip.Addr]*splitHold // VIPs in a split brain
	probeKick  chan struct{}             // buffered 1: a probe is wanted soon
	kicked     map[netip.Addr]bool       // VIPs to probe at the kick
	// lastMetadata is the last metadata document served to each guest
	// address, served again while the registry is unreachable.
	lastMetadata map[netip.Addr]cachedMetadata
	stats        stats
	closed       bool
}

type announcement struct {
	cancel context.CancelFunc
}

type stats struct {
	claims, rejected, moves, splitBrains uint64
	lastMove                             time.Time
	lastSplit                            *api.SplitBrain
	lastApply                            time.Time
	lastApplyErr                         string
	dataPlaneHeld                        string     // why the last apply was held (dpguard.go)
	moveLog                              []api.Move // bounded by maxMoveLog
}

// maxMoveLog bounds the in-memory log of recent moves.
const maxMoveLog = 64

// logMove appends m to the bounded move log.
func (s *Engine) logMove(m api.Move) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.moveLog = append(s.stats.moveLog, m)
	if n := len(s.stats.moveLog); n > maxMoveLog {
		s.stats.moveLog = append([]api.Move(nil), s.stats.moveLog[n-maxMoveLog:]...)
	}
}

// New returns a Engine on store. Call Close when done (it stops GARP
// bursts in flight; the store is the caller's to close).
func New(ctx context.Context, store registry.Store, opts Options) (*Engine, error) {
	s := &Engine{
		store:            store,
		log:              opts.Logger,
		announcer:        opts.Announcer,
		backend:          opts.Backend,
		allowEmpty:       opts.AllowEmptyDataPlane,
		hosts:            opts.Hosts,
		metrics:          opts.Metrics,
		now:              opts.Now,
		window:           opts.SplitBrainWindow,
		staleAge:         opts.StaleClaimAge,
		announceLimit:    opts.AnnounceTimeout,
		applyLimit:       opts.ApplyTimeout,
		announcing:       map[string]*announcement{},
		rounds:           map[netip.Addr]*probeRound{},
		holds:            map[netip.Addr]*splitHold{},
		probeKick:        make(chan struct{}, 1),
		kicked:           map[netip.Addr]bool{},
		queue:            opts.Queue,
		unreachableAfter: opts.UnreachableAfter,
		queueKick:        make(chan struct{}, 1),
		changes:          newChangeBroadcast(),
		lastMetadata:     map[netip.Addr]cachedMetadata{},
		probePause:       wait.Sleep,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.announcer != nil {
		s.announcer = pairAnnouncer{a: s.announcer, pair: s.pairOf}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.window <= 0 {
		s.window = 10 * time.Second
	}
	if s.staleAge <= 0 {
		s.staleAge = 2 * time.Minute
	}
	if s.announceLimit <= 0 {
		s.announceLimit = 10 * time.Second
	}
	if s.unreachableAfter <= 0 {
		s.unreachableAfter = DefaultUnreachableAfter
	}
	if s.applyLimit <= 0 {
		s.applyLimit = 30 * time.Second
	}
	// The first apply reads back and repairs what the data plane holds.
	s.reconcileDue.Store(true)
	err := s.bounded(ctx, s.refreshVIPs)
	if err == nil {
		// The owner gauge; from the last view (below) it waits for the
		// registry (FollowWatch's first complete read).
		if err := s.bounded(ctx, s.refreshOwners); err != nil {
			s.log.Warn("metrics: owners not read at start", "op", "start", "err", err)
		}
	}
	if err != nil && s.queue != nil && errors.Is(err, registry.ErrUnavailable) {
		err = s.startFromView(err)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Changed brings what the engine derives from the registry in step with
// a change an admin operation committed (inventory.Options.Changed): when
// the group's VIP or owner went away its burst stops and its owner gauge
// is read again, the VIP list is re-read, the data plane re-applied. An
// error leaves the change to the reconcile loop.
func (s *Engine) Changed(ctx context.Context, c inventory.Change) error {
	s.noteChange() // committed: waiting guests read their documents again
	var errs []error
	if c.OwnerGone {
		s.stopAnnounce(c.Group)
		errs = append(errs, s.refreshOwner(ctx, c.Group))
	}
	if c.VIPs {
		errs = append(errs, s.refreshVIPs(ctx))
	}
	if c.DataPlane {
		errs = append(errs, s.applyDataPlane(ctx))
	}
	return errors.Join(errs...)
}

// Close cancels GARP bursts in flight and waits for them.
func (s *Engine) Close() error {
	s.mu.Lock()
	s.closed = true
	for g, a := range s.announcing {
		a.cancel()
		delete(s.announcing, g)
	}
	s.mu.Unlock()
	s.announces.Wait()
	return nil
}

func (s *Engine) nowUTC() time.Time { return s.now().UTC() }
