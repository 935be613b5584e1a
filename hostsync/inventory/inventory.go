// Package inventory owns the platform's records in the registry and the
// rules they obey: networks, guests, EIPs and instance groups, address
// allocation, the admin operations that change them and the VRRP metadata
// built from them, with the lookups (by id, name, address, VIP) the rest
// of hostsync reads them through.
//
// It does not move VIPs and knows nothing of the ownership engine: an
// admin operation commits and returns, and tells whoever follows the
// registry what it changed through Options.Changed (the engine stops a
// burst, re-reads its VIP list, re-applies the data plane). A failure
// there is logged, never the operation's: the change is committed.
package inventory

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// Change is what a committed admin operation changed, for whoever keeps
// state derived from the registry (Options.Changed).
type Change struct {
	// Op is the admin operation ("instancegroup-delete", ...).
	Op string
	// Group is the id of the group changed.
	Group string
	// OwnerGone: the group lost its VIP or its owner (deleted, detached,
	// the owner left); an announcement for it must stop.
	OwnerGone bool
	// VIPs: the set of VIPs changed.
	VIPs bool
	// DataPlane: the desired EIP mappings changed.
	DataPlane bool
}

// Options configures an Inventory. Zero values are the defaults.
type Options struct {
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Intn returns a uniform int in [0, n) for random allocation
	// (default math/rand/v2.IntN).
	Intn func(n int) int
	// Changed is told of each committed change that state derived from
	// the registry must follow; nil tells no one. Its error is logged and
	// does not fail the operation, which has committed.
	Changed func(ctx context.Context, c Change) error
}

// Inventory runs the admin operations on a registry. Its methods are safe
// for concurrent use; it holds no mutable state (the registry does).
type Inventory struct {
	// Immutable after New.
	store   registry.Store
	log     *slog.Logger
	now     func() time.Time
	intn    func(int) int
	changed func(context.Context, Change) error
}

// New returns an Inventory on store.
func New(store registry.Store, opts Options) *Inventory {
	inv := &Inventory{store: store, log: opts.Logger, now: opts.Now, intn: opts.Intn, changed: opts.Changed}
	if inv.log == nil {
		inv.log = slog.New(slog.DiscardHandler)
	}
	if inv.now == nil {
		inv.now = time.Now
	}
	if inv.intn == nil {
		inv.intn = rand.IntN
	}
	return inv
}

func (s *Inventory) nowUTC() time.Time { return s.now().UTC() }

// notify tells Options.Changed of a committed change; its failure is
// logged, not returned (the change stands and is followed again by the
// next change, the periodic reconcile or the registry's watch).
func (s *Inventory) notify(ctx context.Context, c Change) {
	if s.changed == nil {
		return
	}
	if err := s.changed(ctx, c); err != nil {
		s.log.Warn("change committed; following it failed, it is retried by the reconcile loop", "op", c.Op, "group", c.Group, "err", err)
	}
}
