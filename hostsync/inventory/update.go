package inventory

import (
	"context"
	"errors"
	"net/netip"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// ErrRevisionChanged: an update named the revision it was computed from
// (api.GroupUpdate.Revision) and the group has changed since.
var ErrRevisionChanged = errors.New("hostsync: the group changed since it was read")

// UpdateGroup changes a group's VRRP settings: only the fields req sets,
// all in one new revision the members' agents apply live. The result is
// checked by vrrp's own rules (checkSettings) before it is stored; a
// refused update stores nothing.
//
// The VRRPv2 password follows the version as at create: switching to
// VRRPv3 drops it (v3 has no authentication), switching to VRRPv2 takes
// req.AuthPass or generates one.
func (s *Inventory) UpdateGroup(ctx context.Context, ref string, req api.GroupUpdate) (api.GroupView, error) {
	if req == (api.GroupUpdate{Revision: req.Revision}) {
		return api.GroupView{}, Invalid("", "nothing to change: set at least one of vrrp_version, advert_int, nopreempt, preempt_delay, auth_pass, checks")
	}
	if v := req.VRRPVersion; v != nil && *v != 2 && *v != 3 {
		return api.GroupView{}, Invalid("vrrp_version", "%d is not supported, allowed 2 or 3", *v)
	}
	if p := req.AuthPass; p != nil && *p == "" {
		return api.GroupView{}, Invalid("auth_pass", "is empty; leave it out to keep the password")
	}
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		if req.Revision != 0 && req.Revision != g.Revision {
			return refuse(ErrRevisionChanged, "group %s is at revision %d, the update was made from revision %d; read it again", g.Name, g.Revision, req.Revision)
		}
		old := g
		if err := applyUpdate(&g.Settings, req); err != nil {
			return err
		}
		if err := checkSettings(tx, g); err != nil {
			return err
		}
		if err := checkStepwise(old, req); err != nil {
			return err
		}
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("group updated", "op", "instancegroup-update", "group", g.Name, "revision", g.Revision)
	s.notify(ctx, Change{Op: "instancegroup-update", Group: g.ID})
	return s.ShowGroup(ctx, g.ID)
}

// checkStepwise refuses, for a group of two or more members, an update that
// changes the VRRP version and the advert interval at once. keepalived
// drops adverts of another version, so while the members apply the new
// revision one after the other (a few hundred milliseconds) a backup
// already on the new version hears no master; with the new, shorter advert
// interval its master-down timer (3 × advert_int + skew, 0.3 s at 0.1 s)
// can run out before the master has applied, and it takes the VIP beside
// the master. One change at a time keeps the members' timers long enough:
// the version first (at the old advert interval), then the interval (a
// VRRPv3 backup follows the master's).
func checkStepwise(g registry.Group, req api.GroupUpdate) error {
	if len(g.Members) < 2 || req.VRRPVersion == nil || req.AdvertInt == nil {
		return nil
	}
	oldVer := g.Settings.VRRPVersion
	if oldVer == 0 {
		oldVer = 2
	}
	if *req.VRRPVersion == oldVer || *req.AdvertInt == g.Settings.AdvertInt {
		return nil
	}
	return Invalid("advert_int", "change vrrp_version and advert_int in two updates (to VRRPv3 the version first, to VRRPv2 the advert first): changed together, a member already on VRRPv%d does not hear the others and may take the VIP beside the master before they apply", *req.VRRPVersion)
}

// applyUpdate sets the fields req sets.
func applyUpdate(set *registry.Settings, req api.GroupUpdate) error {
	if req.VRRPVersion != nil {
		set.VRRPVersion = *req.VRRPVersion
	}
	ver := set.VRRPVersion
	if ver == 0 {
		ver = 2
	}
	switch {
	case ver == 3 && req.AuthPass != nil:
		return Invalid("auth_pass", "authentication is only defined for VRRPv2")
	case ver == 3:
		set.AuthPass = ""
	case req.AuthPass != nil:
		set.AuthPass = *req.AuthPass
	case set.AuthPass == "":
		set.AuthPass = randomPass()
	}
	if req.AdvertInt != nil {
		set.AdvertInt = *req.AdvertInt
	}
	if req.NoPreempt != nil {
		set.NoPreempt = *req.NoPreempt
	}
	if req.PreemptDelay != nil {
		set.PreemptDelay = *req.PreemptDelay
	}
	if req.Checks != nil {
		set.Checks = *req.Checks
		if len(set.Checks) == 0 {
			set.Checks = nil
		}
	}
	return nil
}

// SetPriority sets the VRRP priority (1–254) of one member (guest id or
// name) of a group, in one new revision. Members may share a priority:
// VRRP breaks the tie by the higher address, and a symmetric group with
// nopreempt (whoever holds the VIP keeps it) needs equal priorities.
func (s *Inventory) SetPriority(ctx context.Context, ref, member string, priority int) (api.GroupView, error) {
	if member == "" {
		return api.GroupView{}, Invalid("member", "is required: the member's guest id or name")
	}
	if priority < 1 || priority > 254 {
		return api.GroupView{}, Invalid("priority", "%d is out of range, allowed 1–254", priority)
	}
	var g registry.Group
	var gu registry.Guest
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = FindGroup(tx, ref); err != nil {
			return err
		}
		if gu, err = findGuest(tx, member); err != nil {
			return err
		}
		i := memberIndex(g, gu.ID)
		if i < 0 {
			return refuse(ErrNotMember, "guest %s is not in group %s", gu.Name, g.Name)
		}
		g.Members[i].Priority = priority
		if err := checkSettings(tx, g); err != nil {
			return err
		}
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("member priority set", "op", "instancegroup-set-priority", "group", g.Name, "guest", gu.Name, "priority", priority, "revision", g.Revision)
	s.notify(ctx, Change{Op: "instancegroup-set-priority", Group: g.ID})
	return s.ShowGroup(ctx, g.ID)
}

func memberIndex(g registry.Group, guestID string) int {
	for i, m := range g.Members {
		if m.GuestID == guestID {
			return i
		}
	}
	return -1
}

// checkSettings checks group g as it would be stored by vrrp's own rules,
// so that no admin operation stores a group its members would be served
// metadata they refuse: the settings on the probe document (as at
// create), and for a group with a VIP the document its members are
// served, with its real members, network and EIP. The error names the
// field (the request's name where it differs from the document's).
func checkSettings(tx registry.Tx, g registry.Group) error {
	if err := fieldInvalid(probeMetadata(g).Validate()); err != nil {
		return err
	}
	if g.VIP == nil {
		return nil
	}
	n, err := getNetwork(tx, g.VIP.NetworkID)
	if err != nil {
		return err
	}
	guests, err := Members(tx, g)
	if err != nil {
		return err
	}
	var eip netip.Addr
	if g.EIP != nil {
		eip = g.EIP.Address
	}
	return fieldInvalid(buildMetadata(g, g.VIP, n, guests, g.Members, &eip).Validate())
}

// probeMetadata is g's settings on a document of one member with
// documentation addresses: what vrrp thinks of the settings alone.
func probeMetadata(g registry.Group) *vrrp.Metadata {
	return buildMetadata(g, &registry.VIPBinding{Address: netip.MustParseAddr("192.0.2.10"), VRID: 1},
		registry.Network{CIDR: netip.MustParsePrefix("192.0.2.0/24")}, []registry.Guest{{ID: "probe", Name: "probe", Address: netip.MustParseAddr("192.0.2.11")}},
		[]registry.Member{{GuestID: "probe", Priority: 100}}, nil)
}

// fieldInvalid turns vrrp's validation error into an *InvalidError naming
// the field as the admin API calls it (auth_pass for the document's
// auth.pass).
func fieldInvalid(err error) error {
	if err == nil {
		return nil
	}
	var fe *vrrp.FieldError
	if !errors.As(err, &fe) {
		return Invalid("", "%v", err)
	}
	path := fe.Path
	switch path {
	case "auth", "auth.pass", "auth.type":
		path = "auth_pass"
	}
	return Invalid(path, "%s", fe.Msg)
}
