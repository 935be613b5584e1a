package ownership

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/internal/boltutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// ClaimQueueFile is the claim queue's file under state_dir.
const ClaimQueueFile = "claims-queue.db"

// Kinds of queued claims.
const (
	queuedClaimKind       = "claim"
	queuedObservationKind = "observation"
)

// queuedClaim is a claim (guest API) or a passive observation (GARP, ARP
// reply) that could not be written while the registry was unreachable.
type queuedClaim struct {
	Kind string `json:"kind"`
	// Claim: the caller as seen on the wire and its transition.
	Addr       netip.Addr       `json:"addr,omitzero"`
	MAC        string           `json:"mac,omitempty"`
	Transition *vrrp.Transition `json:"transition,omitempty"`
	Epoch      string           `json:"epoch,omitempty"` // api.Claim.Epoch
	// Observation.
	VIP   netip.Addr `json:"vip,omitzero"`
	Reply bool       `json:"reply,omitempty"`
	At    time.Time  `json:"at,omitzero"`
	// Queued is when hostsync stored it.
	Queued time.Time `json:"queued"`
}

var queueBucket = []byte("claims")

// viewBucket keeps the last view of the registry beside the queue: per
// guest address (key) the last metadata document served to it and the
// MAC registered for it then (JSON viewEntry). A host restarted while the
// registry is unreachable starts from it (see New).
var viewBucket = []byte("view")

// viewEntry is one guest's last metadata on disk.
type viewEntry struct {
	MAC      string         `json:"mac,omitempty"`
	Metadata *vrrp.Metadata `json:"metadata"`
}

// ClaimQueue is the durable, ordered queue of claims waiting for the
// registry: one bbolt file, keys are bbolt's bucket sequence (big endian),
// so iteration order is arrival order. Its methods are safe for
// concurrent use.
type ClaimQueue struct {
	db *bolt.DB // immutable after OpenClaimQueue

	mu  sync.Mutex // guards len
	len int
}

// OpenClaimQueue opens (creating) the queue file at path; timeout bounds
// the wait for its lock.
func OpenClaimQueue(path string, timeout time.Duration) (*ClaimQueue, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("hostsync: claim queue: %w", err)
	}
	db, err := boltutil.Open(path, 0o600, timeout)
	if err != nil {
		return nil, fmt.Errorf("hostsync: claim queue: %w", err)
	}
	q := &ClaimQueue{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(queueBucket)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(viewBucket); err != nil {
			return err
		}
		q.len = b.Stats().KeyN
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("hostsync: claim queue %s: %w", path, err)
	}
	return q, nil
}

// Close closes the file.
func (q *ClaimQueue) Close() error {
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("hostsync: claim queue: %w", err)
	}
	return nil
}

// Len is how many claims wait.
func (q *ClaimQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.len
}

// push appends e, durably (bbolt syncs on commit).
func (q *ClaimQueue) push(e queuedClaim) error {
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("hostsync: claim queue: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	err = q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(queueBucket)
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		return b.Put(binary.BigEndian.AppendUint64(nil, n), data)
	})
	if err != nil {
		return fmt.Errorf("hostsync: claim queue: %w", err)
	}
	q.len++
	return nil
}

// saveView stores the last metadata served to addr (durably); nil md
// removes it.
func (q *ClaimQueue) saveView(addr netip.Addr, md *vrrp.Metadata, mac string) error {
	var data []byte
	if md != nil {
		var err error
		if data, err = json.Marshal(viewEntry{MAC: mac, Metadata: md}); err != nil {
			return fmt.Errorf("hostsync: last view: %w", err)
		}
	}
	err := q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(viewBucket)
		if data == nil {
			return b.Delete([]byte(addr.String()))
		}
		return b.Put([]byte(addr.String()), data)
	})
	if err != nil {
		return fmt.Errorf("hostsync: last view: %w", err)
	}
	return nil
}

// loadView reads the last view: the metadata per guest address. An
// entry that does not decode is skipped and named in skipped.
func (q *ClaimQueue) loadView() (view map[netip.Addr]cachedMetadata, skipped []string, err error) {
	view = map[netip.Addr]cachedMetadata{}
	err = q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(viewBucket).ForEach(func(k, v []byte) error {
			addr, err := netip.ParseAddr(string(k))
			var e viewEntry
			if err == nil {
				err = json.Unmarshal(v, &e)
			}
			if err == nil && e.Metadata == nil {
				err = errors.New("no metadata")
			}
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("%q: %v", k, err))
				return nil
			}
			view[addr] = cachedMetadata{md: e.Metadata, mac: e.MAC}
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("hostsync: last view: %w", err)
	}
	return view, skipped, nil
}

// rememberMetadata keeps md as the last document served to addr, in
// memory and, when it changed, on disk (so a restart while the registry
// is unreachable starts from it); nil md forgets addr.
func (s *Engine) rememberMetadata(addr netip.Addr, md *vrrp.Metadata, mac string) {
	s.mu.Lock()
	last, had := s.lastMetadata[addr]
	if md == nil {
		delete(s.lastMetadata, addr)
	} else {
		s.lastMetadata[addr] = cachedMetadata{md: md, mac: mac}
	}
	s.mu.Unlock()
	if md == nil && !had || md != nil && had && last.mac == mac && last.md.Group.ID == md.Group.ID && last.md.Revision == md.Revision {
		return
	}
	if err := s.queue.saveView(addr, md, mac); err != nil {
		s.log.Warn("last view not saved: a restart while the registry is away serves older metadata", "op", "metadata", "addr", addr, "err", err)
	}
}

// startFromView is New's start while the registry is unreachable: the
// last view on disk becomes the metadata served per guest and the VIPs
// watched, so the host serves its guests and queues their claims exactly
// as a running host does until the registry answers (follow and the
// replay loop catch up then).
func (s *Engine) startFromView(cause error) error {
	view, skipped, err := s.queue.loadView()
	if err != nil {
		return fmt.Errorf("%w (and %w)", cause, err)
	}
	for _, k := range skipped {
		s.log.Warn("last view: entry skipped", "op", "start", "entry", k)
	}
	vips := map[netip.Addr]string{}
	for _, c := range view {
		vips[c.md.VIP.Addr()] = c.md.Group.ID
	}
	s.mu.Lock()
	s.lastMetadata = view
	s.vips = vips
	s.mu.Unlock()
	s.log.Warn("registry unreachable at start: serving the last view and queuing claims until it answers", "op", "start",
		"guests", len(view), "vips", len(vips), "queued", s.queue.Len(), "err", cause)
	return nil
}

// errQueueEmpty is returned by first when nothing waits.
var errQueueEmpty = errors.New("hostsync: claim queue empty")

// first returns the oldest entry and its key. An entry that does not
// decode is returned with its error (the caller drops it).
func (q *ClaimQueue) first() (uint64, queuedClaim, error) {
	var key uint64
	var e queuedClaim
	var decodeErr error
	err := q.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(queueBucket).Cursor().First()
		if k == nil {
			return errQueueEmpty
		}
		key = binary.BigEndian.Uint64(k)
		if err := json.Unmarshal(v, &e); err != nil {
			decodeErr = fmt.Errorf("hostsync: claim queue entry %d: %w", key, err)
		}
		return nil
	})
	if err != nil {
		return 0, e, err
	}
	return key, e, decodeErr
}

// remove deletes the entry at key.
func (q *ClaimQueue) remove(key uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var existed bool
	err := q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(queueBucket)
		k := binary.BigEndian.AppendUint64(nil, key)
		existed = b.Get(k) != nil
		return b.Delete(k)
	})
	if err != nil {
		return fmt.Errorf("hostsync: claim queue: %w", err)
	}
	if existed {
		q.len--
	}
	return nil
}

// DefaultUnreachableAfter: see Options.UnreachableAfter.
const DefaultUnreachableAfter = 2 * time.Second

// bounded runs fn with ctx bounded by Options.UnreachableAfter when the
// Engine has a claim queue; a registry that did not answer in that time
// is reported as registry.ErrUnavailable (wrapped), so that the guest is
// answered (queued) well within its own request timeout.
func (s *Engine) bounded(ctx context.Context, fn func(context.Context) error) error {
	if s.queue == nil {
		return fn(ctx)
	}
	cctx, cancel := context.WithTimeout(ctx, s.unreachableAfter)
	defer cancel()
	err := fn(cctx)
	if err != nil && ctx.Err() == nil && cctx.Err() != nil && !errors.Is(err, registry.ErrUnavailable) {
		err = fmt.Errorf("%w: no answer in %s: %w", registry.ErrUnavailable, s.unreachableAfter, err)
	}
	return err
}

// maxQueued bounds the queue: beyond it a claim is refused (the guest API
// answers 503 and the agent keeps the claim in its own outbox).
const maxQueued = 10000

// ErrQueueFull is returned (wrapped) by Claim and Observe when the
// registry is unreachable and the claim queue holds maxQueued claims.
var ErrQueueFull = errors.New("hostsync: registry unreachable and claim queue full")

// enqueue stores e for the replayer and answers the caller; cause is the
// store's error that made it necessary (nil: older claims wait).
func (s *Engine) enqueue(e queuedClaim, cause error) (api.ClaimResult, error) {
	// Without the registry the caller cannot be identified there: only a
	// member as of the last view may queue, so a stranger cannot fill the
	// queue or push real claims behind its own. Others get the registry's
	// unavailability (503; an agent keeps the claim in its outbox).
	if !s.knownToQueue(e) {
		if cause == nil {
			cause = registry.ErrUnavailable
		}
		return api.ClaimResult{}, fmt.Errorf("%w: not queued, %s was no member of a group at the last view", cause, e.who())
	}
	if s.queue.Len() >= maxQueued {
		return api.ClaimResult{}, fmt.Errorf("%w (%d claims): %w", ErrQueueFull, maxQueued, cause)
	}
	e.Queued = s.nowUTC()
	if err := s.queue.push(e); err != nil {
		if cause != nil {
			return api.ClaimResult{}, fmt.Errorf("%w (and %w)", cause, err)
		}
		return api.ClaimResult{}, err
	}
	switch {
	case errors.Is(cause, registry.ErrLeaseLost):
		s.log.Warn("no host lease; claim queued", "op", "queue", "kind", e.Kind, "queued", s.queue.Len(), "err", cause)
	case cause != nil:
		s.log.Warn("registry unreachable; claim queued", "op", "queue", "kind", e.Kind, "queued", s.queue.Len(), "err", cause)
	}
	select {
	case s.queueKick <- struct{}{}:
	default:
	}
	return api.ClaimResult{Accepted: true, Queued: true,
		Message: "registry unreachable: claim stored and replayed in order when it is back"}, nil
}

// ReplayQueue runs the queued claims, oldest first, through the normal
// claim path (so (member, seq) dedupe, the stale-claim and split-brain
// rules and the owner compare-and-swap all apply; a replayed claim
// stamped before the current owner was recorded does not move the VIP).
// It stops at the first claim that finds the registry unreachable again,
// leaving it queued, and returns registry.ErrUnavailable (wrapped); a
// claim refused for any other reason is logged and dropped. It returns
// how many claims were replayed.
func (s *Engine) ReplayQueue(ctx context.Context) (int, error) {
	if s.queue == nil {
		return 0, nil
	}
	s.replayMu.Lock()
	defer s.replayMu.Unlock()
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		key, e, err := s.queue.first()
		if errors.Is(err, errQueueEmpty) {
			return n, nil
		}
		if err == nil {
			var res api.ClaimResult
			res, err = s.replay(ctx, e)
			if errors.Is(err, registry.ErrUnavailable) || ctx.Err() != nil {
				return n, err
			}
			if err == nil {
				n++
				s.log.Info("queued claim replayed", "op", "replay", "kind", e.Kind, "queued_at", e.Queued,
					"accepted", res.Accepted, "duplicate", res.Duplicate, "owner", res.Owner, "message", res.Message)
			}
		}
		if err != nil {
			s.log.Warn("queued claim dropped", "op", "replay", "kind", e.Kind, "err", err)
		}
		if err := s.queue.remove(key); err != nil {
			return n, err
		}
	}
}

func (s *Engine) replay(ctx context.Context, e queuedClaim) (api.ClaimResult, error) {
	// When it was queued bounds its stamp (see MaxClockSkew); a zero
	// time would make it a live claim.
	queued := e.Queued
	if queued.IsZero() {
		queued = s.nowUTC()
	}
	var mac net.HardwareAddr
	if e.MAC != "" {
		m, err := net.ParseMAC(e.MAC)
		if err != nil {
			return api.ClaimResult{}, fmt.Errorf("hostsync: queued claim: %w", err)
		}
		mac = m
	}
	switch e.Kind {
	case queuedClaimKind:
		if e.Transition == nil {
			return api.ClaimResult{}, errors.New("hostsync: queued claim without a transition")
		}
		return s.claimNow(ctx, inventory.Caller{Addr: e.Addr, MAC: mac}, e.Epoch, *e.Transition, queued)
	case queuedObservationKind:
		return s.observeNow(ctx, garp.Observation{VIP: e.VIP, MAC: mac, At: e.At, Reply: e.Reply}, queued)
	}
	return api.ClaimResult{}, fmt.Errorf("hostsync: queued claim of unknown kind %q", e.Kind)
}

// queueKicked is signalled whenever a claim is queued.
func (s *Engine) queueKicked() <-chan struct{} { return s.queueKick }

// ReplayLoop replays the claim queue whenever a claim was queued and then
// every interval while claims wait (the registry may be back). It returns
// when ctx ends.
func ReplayLoop(ctx context.Context, e *Engine, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.queueKicked():
		case <-t.C:
		}
		if e.queue.Len() == 0 {
			continue
		}
		n, err := e.ReplayQueue(ctx)
		if err != nil && ctx.Err() == nil {
			log.Debug("claim queue waits for the registry", "op", "replay", "replayed", n, "queued", e.queue.Len(), "err", err)
		}
	}
}

// knownToQueue reports whether e comes from a member as of the last view:
// a claim from an address that was last served metadata (with the same
// MAC when both are known), an observation of a member's MAC for its
// group's VIP.
func (s *Engine) knownToQueue(e queuedClaim) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Kind == queuedClaimKind {
		last, ok := s.lastMetadata[e.Addr]
		return ok && (e.MAC == "" || last.mac == "" || e.MAC == last.mac)
	}
	for _, c := range s.lastMetadata {
		if c.md.VIP.Addr() != e.VIP {
			continue
		}
		for _, m := range c.md.Members {
			if m.MAC == e.MAC {
				return true
			}
		}
	}
	return false
}

// who names the source of e for messages.
func (e queuedClaim) who() string {
	if e.Kind == queuedClaimKind {
		return e.Addr.String()
	}
	return "MAC " + e.MAC
}
