package ownership

import (
	"context"
	"errors"
	"fmt"

	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// The owner gauge (vipkeeper_hostsync_group_owner) follows the owner
// records: a move of this engine publishes its new owner from what it
// committed (claim), a move of another host (FollowWatch) or an admin
// change that ended an owner (Changed) reads that one group again
// (refreshOwner); only the start and FollowWatch's complete re-reads (the
// watch (re-)established, another host's change of a group, guest or EIP)
// read every group (refreshOwners). Each update carries the owner
// record's revision, so a read that raced with a move never brings an
// older owner back. Without metrics nothing is read.

// ownerName is the name of the guest that owns a group by o (""
// without owner).
func ownerName(tx registry.Tx, g registry.Group, o registry.Owner) (string, error) {
	if o.GuestID == "" {
		return "", nil
	}
	gu, err := registry.Get[registry.Guest](tx, o.GuestID)
	if err != nil {
		return "", fmt.Errorf("hostsync: owner %s of group %s: %w", o.GuestID, g.Name, err)
	}
	return gu.Name, nil
}

// refreshOwner reads the owner of the group with id and publishes it:
// the group, its owner record and the owner's guest, whatever the number
// of groups.
func (s *Engine) refreshOwner(ctx context.Context, id string) error {
	if s.metrics == nil {
		return nil
	}
	var (
		g      registry.Group
		o      registry.Owner
		member string
		gone   bool
	)
	err := s.store.View(ctx, func(tx registry.Tx) error {
		var err error
		g, err = registry.Get[registry.Group](tx, id)
		if errors.Is(err, registry.ErrNotFound) {
			gone = true
			return nil
		}
		if err != nil {
			return err
		}
		if o, err = inventory.Owner(tx, id); err != nil {
			return err
		}
		member, err = ownerName(tx, g, o)
		return err
	})
	if err != nil {
		return fmt.Errorf("hostsync: owner of group %s: %w", id, err)
	}
	if gone {
		s.metrics.ownerGone(id)
		return nil
	}
	s.metrics.owner(id, g.Name, member, o.Revision)
	return nil
}

// refreshOwners reads every group's owner and publishes the set: the
// groups no longer in the registry lose their series. Three range reads
// (groups, owners, guests), whatever the number of groups, each record
// decoded for its id and name only.
func (s *Engine) refreshOwners(ctx context.Context) error {
	if s.metrics == nil {
		return nil
	}
	var (
		groups []named
		owners []registry.Owner
		guests = map[string]string{} // id → name
	)
	mark := s.metrics.ownersMark()
	err := s.store.View(ctx, func(tx registry.Tx) error {
		var err error
		if groups, err = registry.List[named](tx, ""); err != nil {
			return err
		}
		if owners, err = registry.List[registry.Owner](tx, ""); err != nil {
			return err
		}
		gs, err := registry.List[namedGuest](tx, "")
		for _, gu := range gs {
			guests[gu.ID] = gu.Name
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("hostsync: owners: %w", err)
	}
	owner := make(map[string]registry.Owner, len(owners))
	for _, o := range owners {
		owner[o.Group] = o
	}
	seen := make(map[string]bool, len(groups))
	for _, g := range groups {
		o := owner[g.ID]
		member := ""
		if o.GuestID != "" {
			var ok bool
			if member, ok = guests[o.GuestID]; !ok {
				return fmt.Errorf("hostsync: owner %s of group %s: %w", o.GuestID, g.Name, registry.ErrNotFound)
			}
		}
		seen[g.ID] = true
		s.metrics.owner(g.ID, g.Name, member, o.Revision)
	}
	s.metrics.ownersRead(mark, seen)
	return nil
}

// named is a group record decoded for its id and name only.
type named struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (named) Bucket() registry.Bucket { return registry.BucketGroups }
func (n named) Key() string           { return n.ID }

// namedGuest is a guest record decoded for its id and name only.
type namedGuest named

func (namedGuest) Bucket() registry.Bucket { return registry.BucketGuests }
func (n namedGuest) Key() string           { return n.ID }
