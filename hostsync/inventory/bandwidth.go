package inventory

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// ChangeEIPBandwidth sets the bandwidth (Mbit/s, 0 unlimited) of the EIP
// of the group ref names (id or name; or the id or address of the EIP,
// which must be bound to a group), as climc's eip-change-bandwidth: the
// EIP record and the group's revision change in one registry update,
// and the data plane is applied again, which limits the EIP to the new
// rate. The same bandwidth again changes nothing.
func (s *Inventory) ChangeEIPBandwidth(ctx context.Context, ref string, bandwidth int) (api.GroupView, error) {
	if err := checkEIPAttrs(bandwidth, "", ""); err != nil {
		return api.GroupView{}, err
	}
	var g registry.Group
	var old int
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = groupOfEIPRef(tx, ref); err != nil {
			return err
		}
		if g.EIP == nil {
			return refuse(ErrNoEIP, "group %s", g.Name)
		}
		e, err := registry.Get[registry.EIP](tx, g.EIP.EIPID)
		if errors.Is(err, registry.ErrNotFound) {
			return fmt.Errorf("%w: EIP %s of group %s has no record", ErrNotFound, g.EIP.EIPID, g.Name)
		}
		if err != nil {
			return err
		}
		if old = e.Bandwidth; old == bandwidth {
			return nil
		}
		e.Bandwidth = bandwidth
		g.Revision++
		if err := registry.Put(tx, e); err != nil {
			return err
		}
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	if old != bandwidth {
		s.log.Info("eip bandwidth changed", "op", "instancegroup-change-eip-bandwidth", "group", g.Name,
			"eip", g.EIP.Address, "from", old, "to", bandwidth)
		s.notify(ctx, Change{Op: "instancegroup-change-eip-bandwidth", Group: g.ID, DataPlane: true})
	}
	return s.ShowGroup(ctx, g.ID)
}

// groupOfEIPRef finds the group ref names: a group's id or name, else an
// EIP's id or address, whose group it returns.
func groupOfEIPRef(tx registry.Tx, ref string) (registry.Group, error) {
	g, err := FindGroup(tx, ref)
	if !errors.Is(err, ErrNotFound) {
		return g, err
	}
	e, err := registry.Get[registry.EIP](tx, ref)
	if errors.Is(err, registry.ErrNotFound) {
		a, perr := netip.ParseAddr(ref)
		if perr != nil {
			return registry.Group{}, fmt.Errorf("%w: no group or EIP with id or name %q", ErrNotFound, ref)
		}
		if e, err = findEIP(tx, api.AssociateEIP{IPAddr: a}); err != nil {
			return registry.Group{}, err
		}
	} else if err != nil {
		return registry.Group{}, err
	}
	if e.Group == "" {
		return registry.Group{}, refuse(ErrNoEIP, "EIP %s (%s) is not bound to a group", e.Address, e.ID)
	}
	return registry.Get[registry.Group](tx, e.Group)
}
