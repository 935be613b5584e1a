package agent

import (
	"fmt"
	"net/netip"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// A dual-stack group's IPv6 VIP (vrrp.Metadata.VIP6) rides on the IPv4
// VRRP instance (keepalived's virtual_ipaddress_excluded): keepalived adds
// and removes both together. The agent watches each family on its own
// through the same netlink subscription (IPv4 and IPv6 address events):
// the IPv4 VIP decides the role checks as before, and the IPv6 VIP's
// presence is recorded beside it in every transition (VIP6Present), shown
// in the status, and a stale one is removed with the IPv4 VIP when
// keepalived is gone.

// prefixText is p as text, "" when p is not set.
func prefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// vip6PresenceLocked reads whether the IPv6 VIP is on the interface: nil
// without an IPv6 VIP, or when the interface's addresses cannot be read
// (the last known presence then stands). a.mu is held.
func (a *Agent) vip6PresenceLocked() *bool {
	if !a.vip6.IsValid() {
		return nil
	}
	p, err := hasAddr(a.d.link, a.vip6.Addr())
	if err != nil {
		a.log.Warn("cannot read the interface's addresses", "op", "reconcile", "iface", a.cfg.Interface, "err", err)
		last := a.vip6Present
		return &last
	}
	return &p
}

// vip6NoteLocked adds the IPv6 VIP's state to a note about the IPv4 VIP
// when the two disagree. a.mu is held.
func (a *Agent) vip6NoteLocked(present6 *bool) string {
	if present6 == nil {
		return ""
	}
	if *present6 {
		return fmt.Sprintf("; the IPv6 VIP %s is on %s", a.vip6, a.cfg.Interface)
	}
	return fmt.Sprintf("; the IPv6 VIP %s is not on %s", a.vip6, a.cfg.Interface)
}

// removeStaleVIP6Locked removes the IPv6 VIP a keepalived that is gone
// left on the interface. a.mu is held.
func (a *Agent) removeStaleVIP6Locked(exited int) {
	addr := a.vip6.Addr()
	err := a.d.link.RemoveAddr(addr)
	still, herr := hasAddr(a.d.link, addr)
	if herr == nil {
		a.vip6Present = still
	}
	if err != nil && (herr != nil || still) {
		a.log.Error("remove stale IPv6 VIP", "op", "reconcile", "vip", a.vip6.String(), "iface", a.cfg.Interface, "pid", exited, "err", err)
		return
	}
	a.log.Warn("keepalived is gone: removed the stale IPv6 VIP", "op", "reconcile", "vip", a.vip6.String(), "iface", a.cfg.Interface, "pid", exited)
}

// vip6Sentence is the status sentence's part about the IPv6 VIP, said
// for the role as the IPv4 VIP's part is: "" without one.
func vip6Sentence(st api.AgentStatus) string {
	switch {
	case st.VIP6 == "":
		return ""
	case st.Role == vrrp.RoleMaster && st.VIP6Present:
		return ", IPv6 VIP " + st.VIP6 + " on " + st.Interface
	case st.Role == vrrp.RoleMaster:
		return ", IPv6 VIP " + st.VIP6 + " missing from " + st.Interface
	case st.VIP6Present:
		return ", IPv6 VIP " + st.VIP6 + " still on " + st.Interface
	}
	return ", IPv6 VIP " + st.VIP6 + " not on " + st.Interface
}
