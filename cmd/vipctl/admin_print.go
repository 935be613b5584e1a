package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// printHuman prints an admin answer for people; --json prints it as is.
func printHuman(w io.Writer, v any) {
	switch x := v.(type) {
	case *api.GroupView:
		printGroup(w, *x)
	case *[]api.GroupView:
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tID\tMEMBERS\tVIP\tEIP\tOWNER\tREVISION")
		for _, g := range *x {
			vip, eip, owner := "-", "-", "-"
			if g.VIP != nil {
				vip = g.VIP.Address.String()
				if g.VIP.Address6.IsValid() {
					vip += "," + g.VIP.Address6.String()
				}
			}
			if g.EIP != nil {
				eip = g.EIP.Address.String()
			}
			if g.Owner != nil {
				owner = g.Owner.Name
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d\n", g.Name, g.ID, len(g.Members), vip, eip, owner, g.Revision)
		}
		tw.Flush()
	case *api.NetworkInfo:
		kind := x.Kind
		switch {
		case x.VPCID != "":
			kind += ", vpc " + x.VPCID
		case x.Kind != "eip":
			kind += ", classic"
		}
		fmt.Fprintf(w, "network %s %s (%s) gateway %s range %s-%s", x.ID, x.CIDR, kind, x.Gateway, x.RangeStart, x.RangeEnd)
		if len(x.Reserved) > 0 {
			r := make([]string, len(x.Reserved))
			for i, a := range x.Reserved {
				r[i] = a.String()
			}
			fmt.Fprintf(w, " reserved %s", strings.Join(r, ","))
		}
		if x.CIDR6.IsValid() {
			fmt.Fprintf(w, " ipv6 %s range %s-%s", x.CIDR6, x.Range6Start, x.Range6End)
		}
		fmt.Fprintln(w)
	case *api.GuestInfo:
		fmt.Fprintf(w, "guest %s (%s) %s %s in %s, %d NIC(s)", x.Name, x.ID, x.Address, x.MAC, x.NetworkID, x.NICs)
		if x.Host != "" {
			fmt.Fprintf(w, " on host %s", x.Host)
		}
		fmt.Fprintln(w)
	case *api.EIPInfo:
		fmt.Fprintf(w, "eip %s %s from %s", x.ID, x.Address, x.NetworkID)
		if x.Group != "" {
			fmt.Fprintf(w, " bound to %s", x.Group)
		}
		fmt.Fprintln(w)
	case *api.HostsyncStatus:
		fmt.Fprintln(w, x.Sentence)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "networks\t%d\n", x.Networks)
		fmt.Fprintf(tw, "guests\t%d\n", x.Guests)
		fmt.Fprintf(tw, "groups\t%d\n", x.Groups)
		fmt.Fprintf(tw, "VIPs\t%d (%d with a known owner)\n", x.VIPs, x.Owned)
		fmt.Fprintf(tw, "EIPs\t%d\n", x.EIPs)
		fmt.Fprintf(tw, "claims\t%d (%d rejected)\n", x.Claims, x.Rejected)
		fmt.Fprintf(tw, "moves\t%d\n", x.Moves)
		fmt.Fprintf(tw, "split brains\t%d\n", x.SplitBrains)
		if sb := x.LastSplitBrain; sb != nil {
			fmt.Fprintf(tw, "last split brain\t%s: %s, %s kept the VIP (%s) at %s\n", sb.Group, strings.Join(sb.Members, " and "), sb.Winner, sb.Reason, sb.At.Format(time.RFC3339))
		}
		if !x.LastApply.IsZero() {
			res := "ok"
			if x.LastApplyError != "" {
				res = "failed: " + x.LastApplyError
			}
			fmt.Fprintf(tw, "data plane\t%s at %s\n", res, x.LastApply.Format(time.RFC3339))
		}
		tw.Flush()
	default:
		fmt.Fprintf(w, "%+v\n", v)
	}
}

func printGroup(w io.Writer, g api.GroupView) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "group\t%s (%s)\n", g.Name, g.ID)
	fmt.Fprintf(tw, "revision\t%d\n", g.Revision)
	if g.VIP != nil {
		extra := ""
		if g.VIP.Reserved {
			extra = ", reserved"
		}
		fmt.Fprintf(tw, "vip\t%s in %s (virtual_router_id %d%s)\n", g.VIP.Address, g.VIP.NetworkID, g.VIP.VRID, extra)
		if g.VIP.Address6.IsValid() {
			fmt.Fprintf(tw, "vip6\t%s in %s (on the same VRRP instance)\n", g.VIP.Address6, g.VIP.NetworkID)
		}
	} else {
		fmt.Fprintf(tw, "vip\t-\n")
	}
	if g.EIP != nil {
		bw := "unlimited"
		if g.EIP.Bandwidth > 0 {
			bw = fmt.Sprintf("%d Mbit/s", g.EIP.Bandwidth)
		}
		fmt.Fprintf(tw, "eip\t%s (%s), bandwidth %s\n", g.EIP.Address, g.EIP.ID, bw)
	} else {
		fmt.Fprintf(tw, "eip\t-\n")
	}
	if g.Owner != nil {
		fmt.Fprintf(tw, "owner\t%s since %s via %s (revision %d)\n", g.Owner.Name, g.Owner.Since.Format(time.RFC3339), g.Owner.Source, g.Owner.Revision)
	} else {
		fmt.Fprintf(tw, "owner\t-\n")
	}
	s := g.Settings
	vrrpLine := fmt.Sprintf("v%d, advert %s s", s.VRRPVersion, s.AdvertInt)
	if s.Unicast {
		vrrpLine += ", unicast"
	}
	if !s.Preempt {
		vrrpLine += ", nopreempt"
	}
	if s.PreemptDelay != 0 {
		vrrpLine += fmt.Sprintf(", preempt delay %s s", s.PreemptDelay)
	}
	if s.Auth {
		vrrpLine += ", auth PASS"
	}
	fmt.Fprintf(tw, "vrrp\t%s\n", vrrpLine)
	for _, c := range s.Checks {
		fmt.Fprintf(tw, "check\t%s\n", checkLine(c))
	}
	tw.Flush()
	if len(g.Members) == 0 {
		fmt.Fprintln(w, "members: none")
		return
	}
	fmt.Fprintln(w, "members:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tGUEST\tADDRESS\tMAC\tPRIORITY\tROLE\tOWNER")
	for _, m := range g.Members {
		role, owner := string(m.Role), ""
		if role == "" {
			role = "-"
		}
		if g.Owner != nil && g.Owner.GuestID == m.GuestID {
			owner = "*"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\n", m.Name, m.GuestID, m.Address, m.MAC, m.Priority, role, owner)
	}
	tw.Flush()
	for _, warn := range g.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

// checkLine says what a check probes, how often, and what its failure
// does (its on_failure policy).
func checkLine(c vrrp.Check) string {
	var what string
	switch c.Kind {
	case vrrp.CheckProcess:
		what = "process " + c.Process
	case vrrp.CheckHTTP:
		what = "http " + c.URL
		if c.ExpectStatus != 0 {
			what += fmt.Sprintf(" (status %d)", c.ExpectStatus)
		}
	case vrrp.CheckTCP:
		what = "tcp " + c.Address
	case vrrp.CheckExec:
		what = "exec " + strings.Join(c.Command, " ")
	default:
		what = string(c.Kind)
	}
	parts := []string{what}
	if c.RestartUnit != "" {
		parts = append(parts, "restart "+c.RestartUnit)
	}
	parts = append(parts, fmt.Sprintf("every %s s", c.EffectiveInterval()))
	if c.Timeout != 0 {
		parts = append(parts, fmt.Sprintf("timeout %s s", c.Timeout))
	}
	if c.Fall > 1 {
		parts = append(parts, fmt.Sprintf("fall %d", c.Fall))
	}
	if c.Rise > 1 {
		parts = append(parts, fmt.Sprintf("rise %d", c.Rise))
	}
	policy := "on failure " + c.EffectiveOnFailure()
	if c.EffectiveOnFailure() == vrrp.OnFailureLowerPriority {
		policy += fmt.Sprintf(" (weight %d)", c.Weight)
	}
	return c.Name + ": " + strings.Join(append(parts, policy), ", ")
}
