package hostsync

import (
	"context"

	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// Options configures a Service: the engine's options (the inventory
// takes its logger and clock).
type Options = ownership.Options

// Service is hostsync's core as Run wires it: the inventory (the
// platform's records and rules, the admin operations) and the ownership
// engine, which follows every change the inventory commits
// (inventory.Options.Changed). Its methods are safe for concurrent use.
type Service struct {
	*inventory.Inventory
	*ownership.Engine
}

// New returns a Service on store. Call Close when done (it stops GARP
// bursts in flight; the store is the caller's to close).
func New(ctx context.Context, store registry.Store, opts Options) (*Service, error) {
	e, err := ownership.New(ctx, store, opts)
	if err != nil {
		return nil, err
	}
	inv := inventory.New(store, inventory.Options{Logger: opts.Logger, Now: opts.Now, Changed: e.Changed})
	return &Service{Inventory: inv, Engine: e}, nil
}
