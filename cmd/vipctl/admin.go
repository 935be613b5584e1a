package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// adminCmd is one admin command: its flags, how many positionals it takes,
// and what it does with them.
type adminCmd struct {
	usage string // after the command name
	help  string
	// min and max positional arguments (max -1: unlimited).
	min, max int
	// flags registers the command's flags; the returned func runs it.
	flags func(fs *flag.FlagSet) func(ctx context.Context, c *adminClient, args []string) (any, error)
}

var adminCmds = map[string]adminCmd{
	"network-create": {
		usage: "--cidr CIDR [--gateway IP] [--range-start IP] [--range-end IP] [--cidr6 PREFIX [--range6-start IP] [--range6-end IP]] [--vpc-id VPC] [--kind guest|eip] [--reserved IP,...] [--name NAME] <network-id>",
		help:  "register an IP subnet (kind guest for guests and VIPs, kind eip for public addresses)",
		min:   1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			var req api.NetworkCreate
			prefixVar(fs, &req.CIDR, "cidr", "the subnet, e.g. 192.0.2.0/24")
			addrVar(fs, &req.Gateway, "gateway", "gateway address (default: the first address)")
			addrVar(fs, &req.RangeStart, "range-start", "first usable address (default: after the gateway)")
			addrVar(fs, &req.RangeEnd, "range-end", "last usable address (default: before broadcast)")
			fs.StringVar(&req.VPCID, "vpc-id", "", "VPC of the network (empty: classic network)")
			fs.StringVar(&req.Kind, "kind", "guest", "guest or eip")
			fs.StringVar(&req.Name, "name", "", "display name")
			addrListVar(fs, &req.Reserved, "reserved", "reserved addresses, comma separated or repeated")
			prefixVar(fs, &req.CIDR6, "cidr6", "the IPv6 prefix of a dual-stack guest network, e.g. 2001:db8::/64")
			addrVar(fs, &req.Range6Start, "range6-start", "first IPv6 address for VIPs (default: prefix::2)")
			addrVar(fs, &req.Range6End, "range6-end", "last IPv6 address for VIPs (default: the prefix's last)")
			return func(ctx context.Context, c *adminClient, args []string) (any, error) {
				req.ID = args[0]
				var out api.NetworkInfo
				return &out, c.do(ctx, http.MethodPost, api.PathAdminNetworks, req, &out)
			}
		},
	},
	"guest-register": {
		usage: "--network-id NET --address IP --mac MAC [--nics N] [--host HOST] [--id ID] <name>",
		help:  "register a VM",
		min:   1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			var req api.GuestRegister
			fs.StringVar(&req.ID, "id", "", "guest id (default: the name)")
			fs.StringVar(&req.NetworkID, "network-id", "", "network of its NIC")
			addrVar(fs, &req.Address, "address", "its address")
			fs.StringVar(&req.MAC, "mac", "", "its MAC address")
			fs.IntVar(&req.NICs, "nics", 1, "number of NICs")
			fs.StringVar(&req.Host, "host", "", "hypervisor host id")
			return func(ctx context.Context, c *adminClient, args []string) (any, error) {
				req.Name = args[0]
				if req.ID == "" {
					req.ID = req.Name
				}
				var out api.GuestInfo
				return &out, c.do(ctx, http.MethodPost, api.PathAdminGuests, req, &out)
			}
		},
	},
	"eip-create": {
		usage: "[--ip-addr IP] [--network-id NET] [--bandwidth MBPS] [--bgp-type T] [--charge-type traffic|bandwidth] [--auto-dellocate] [--id ID]",
		help:  "allocate a public address (EIP) from an EIP network",
		min:   0, max: 0,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			var req api.EIPCreate
			fs.StringVar(&req.ID, "id", "", "EIP id (default: derived from the address)")
			addrVar(fs, &req.IPAddr, "ip-addr", "the address wanted")
			fs.StringVar(&req.NetworkID, "network-id", "", "the EIP network")
			fs.IntVar(&req.Bandwidth, "bandwidth", 0, "bandwidth in Mbit/s")
			fs.StringVar(&req.BGPType, "bgp-type", "", "BGP line type")
			fs.StringVar(&req.ChargeType, "charge-type", "", "traffic or bandwidth")
			fs.BoolVar(&req.AutoDeallocate, "auto-dellocate", false, "delete the EIP when it is dissociated")
			return func(ctx context.Context, c *adminClient, _ []string) (any, error) {
				var out api.EIPInfo
				return &out, c.do(ctx, http.MethodPost, api.PathAdminEIPs, req, &out)
			}
		},
	},
	"instancegroup-create": {
		usage: "[--id ID] [--vrrp-version 2|3] [--advert-int SECONDS] [--unicast] [--nopreempt] [--preempt-delay SECONDS] [--auth-pass-file FILE] " + checkUsage + " <name>",
		help:  "create an instance group with its VRRP settings and health checks",
		min:   1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			var req api.GroupCreate
			var checks checkFlags
			fs.StringVar(&req.ID, "id", "", "group id (default: ig-NAME)")
			fs.IntVar(&req.VRRPVersion, "vrrp-version", 2, "VRRP version, 2 or 3")
			secondsVar(fs, &req.AdvertInt, "advert-int", "advertisement interval in seconds (VRRPv3 allows 0.01 steps)")
			fs.BoolVar(&req.Unicast, "unicast", false, "VRRP over unicast to the other members instead of multicast")
			fs.BoolVar(&req.NoPreempt, "nopreempt", false, "a higher-priority member does not take the VIP back")
			secondsVar(fs, &req.PreemptDelay, "preempt-delay", "seconds before preempting")
			var passFile string
			fs.StringVar(&passFile, "auth-pass-file", "", authPassHelp)
			checks.register(fs)
			return func(ctx context.Context, c *adminClient, args []string) (any, error) {
				checks.parsed(fs)
				req.Name = args[0]
				if passFile != "" {
					pass, err := readSecret(passFile)
					if err != nil {
						return nil, usageError{"--auth-pass-file: " + err.Error()}
					}
					req.AuthPass = pass
				}
				if checks.settings() && !checks.kinds() {
					return nil, usageError{"the --check-* settings and --on-failure need a check: --check-process, --check-http, --check-tcp or --check-exec"}
				}
				var err error
				if req.Checks, err = checks.build(); err != nil {
					return nil, err
				}
				var out api.GroupView
				return &out, c.do(ctx, http.MethodPost, api.PathAdminGroups, req, &out)
			}
		},
	},
	"instancegroup-update": {
		usage: "[--vrrp-version 2|3] [--advert-int SECONDS] [--preempt|--nopreempt] [--preempt-delay SECONDS] [--auth-pass-file FILE] " + checkUsage + " [--clear-checks] <group>",
		help: "change a live group's VRRP settings and health checks in one new revision its members apply. " +
			"--check-KIND flags replace the group's checks; the --check-* settings and --on-failure alone change every check the group has",
		min: 1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			var checks checkFlags
			var version int
			var advert, delay vrrp.Seconds
			var preempt, nopreempt, clear bool
			var passFile string
			fs.IntVar(&version, "vrrp-version", 0, "VRRP version, 2 or 3 (to 3 drops the password; to 2 takes --auth-pass-file or generates one)")
			secondsVar(fs, &advert, "advert-int", "advertisement interval in seconds (VRRPv3 allows 0.01 steps)")
			fs.BoolVar(&preempt, "preempt", false, "a higher-priority member takes the VIP back")
			fs.BoolVar(&nopreempt, "nopreempt", false, "a higher-priority member does not take the VIP back (set --preempt-delay 0 with it)")
			secondsVar(fs, &delay, "preempt-delay", "seconds before preempting")
			fs.StringVar(&passFile, "auth-pass-file", "", authPassHelp)
			fs.BoolVar(&clear, "clear-checks", false, "remove every health check of the group")
			checks.register(fs)
			return func(ctx context.Context, c *adminClient, args []string) (any, error) {
				checks.parsed(fs)
				var req api.GroupUpdate
				if checks.set["vrrp-version"] {
					req.VRRPVersion = &version
				}
				if checks.set["advert-int"] {
					req.AdvertInt = &advert
				}
				if checks.set["preempt-delay"] {
					req.PreemptDelay = &delay
				}
				switch {
				case preempt && nopreempt:
					return nil, usageError{"--preempt and --nopreempt exclude each other"}
				case checks.set["preempt"]:
					np := !preempt
					req.NoPreempt = &np
				case checks.set["nopreempt"]:
					req.NoPreempt = &nopreempt
				}
				if passFile != "" {
					pass, err := readSecret(passFile)
					if err != nil {
						return nil, usageError{"--auth-pass-file: " + err.Error()}
					}
					req.AuthPass = &pass
				}
				switch {
				case clear && (checks.kinds() || checks.settings()):
					return nil, usageError{"--clear-checks removes every check; give no --check-* flag or --on-failure with it"}
				case clear:
					req.Checks = &[]vrrp.Check{}
				case checks.kinds():
					built, err := checks.build()
					if err != nil {
						return nil, err
					}
					req.Checks = &built
				case checks.settings():
					// Change the group's checks as they are: read them,
					// and have hostsync refuse the update if the group
					// changed in between.
					var cur api.GroupView
					if err := c.do(ctx, http.MethodGet, groupPath(args[0], ""), nil, &cur); err != nil {
						return nil, err
					}
					if len(cur.Settings.Checks) == 0 {
						return nil, usageError{fmt.Sprintf("group %s has no check to change; add one with --check-process, --check-http, --check-tcp or --check-exec", cur.Name)}
					}
					changed, err := checks.change(cur.Settings.Checks)
					if err != nil {
						return nil, err
					}
					req.Checks, req.Revision = &changed, cur.Revision
				}
				var out api.GroupView
				return &out, c.do(ctx, http.MethodPost, groupPath(args[0], api.ActionUpdate), req, &out)
			}
		},
	},
	"instancegroup-set-priority": {
		usage: "<group> <member> <priority>",
		help:  "set one member's VRRP priority (1–254; members may share one) in one new revision",
		min:   3, max: 3,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			return func(ctx context.Context, c *adminClient, args []string) (any, error) {
				p, err := strconv.Atoi(args[2])
				if err != nil {
					return nil, usageError{fmt.Sprintf("priority %q is not a number from 1 to 254", args[2])}
				}
				var out api.GroupView
				return &out, c.do(ctx, http.MethodPost, groupPath(args[0], api.ActionSetPriority), api.PriorityUpdate{Member: args[1], Priority: p}, &out)
			}
		},
	},
	"instancegroup-delete": {
		usage: "<group>", help: "delete a group without members and EIP", min: 1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			return func(ctx context.Context, c *adminClient, args []string) (any, error) {
				return nil, c.do(ctx, http.MethodDelete, groupPath(args[0], ""), nil, nil)
			}
		},
	},
	"instancegroup-join": {
		usage: "<group> <guest>...", help: "bind guests to a group", min: 2, max: -1,
		flags: membersCmd(api.ActionJoin),
	},
	"instancegroup-leave": {
		usage: "<group> <guest>...", help: "unbind guests from a group", min: 2, max: -1,
		flags: membersCmd(api.ActionLeave),
	},
	"instancegroup-attachnetwork": {
		usage: "[--ip-addr IP_ADDR] [--ip6-addr IP6_ADDR] [--require-ipv6] [--alloc-dir stepup|stepdown|random] [--reserved] [--require-designated-ip] [--network-id NETWORK_ID] <group>",
		help:  "bind a VIP to a group (and an IPv6 VIP beside it, or add one to a group that has its IPv4 VIP)",
		min:   1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			var req api.AttachNetwork
			addrVar(fs, &req.IPAddr, "ip-addr", "the VIP wanted (honoured when free and in range)")
			addrVar(fs, &req.IP6Addr, "ip6-addr", "the IPv6 VIP wanted, from the network's IPv6 prefix")
			fs.BoolVar(&req.RequireIPv6, "require-ipv6", false, "allocate an IPv6 VIP as well (from the network's IPv6 range)")
			fs.StringVar(&req.AllocDir, "alloc-dir", "", "allocation direction: stepup (default), stepdown or random")
			fs.BoolVar(&req.Reserved, "reserved", false, "take the VIP from the network's reserved addresses")
			fs.BoolVar(&req.RequireDesignatedIP, "require-designated-ip", false, "fail instead of picking another address when --ip-addr or --ip6-addr is not available")
			fs.StringVar(&req.NetworkID, "network-id", "", "the VIP's network (required for a group without members)")
			return groupAction(api.ActionAttachNetwork, &req)
		},
	},
	"instancegroup-detachnetwork": {
		usage: "[--ip-addr IP_ADDR] <group>", help: "unbind a group's VIP (only without EIP)", min: 1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			var req api.DetachNetwork
			addrVar(fs, &req.IPAddr, "ip-addr", "the VIP, IPv4 or IPv6 (checked when given; both are detached)")
			return groupAction(api.ActionDetachNetwork, &req)
		},
	},
	"instancegroup-create-eip": {
		usage: "[--bandwidth BANDWIDTH] [--bgp-type BGP_TYPE] [--auto-dellocate] [--ip-addr IP_ADDR] [--charge-type CHARGE_TYPE] [--network-id NET] <group>",
		help:  "allocate an EIP and bind it to the group's VIP",
		min:   1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			var req api.CreateGroupEIP
			fs.IntVar(&req.Bandwidth, "bandwidth", 0, "bandwidth in Mbit/s")
			fs.StringVar(&req.BGPType, "bgp-type", "", "BGP line type")
			fs.BoolVar(&req.AutoDeallocate, "auto-dellocate", false, "delete the EIP when it is dissociated")
			addrVar(fs, &req.IPAddr, "ip-addr", "the public address wanted")
			fs.StringVar(&req.ChargeType, "charge-type", "", "traffic or bandwidth")
			fs.StringVar(&req.NetworkID, "network-id", "", "the EIP network")
			return groupAction(api.ActionCreateEIP, &req)
		},
	},
	"instancegroup-associate-eip": {
		usage: "[--ip-addr IP_ADDR] [--eip-id EIP_ID] <group>", help: "bind an existing EIP to the group's VIP", min: 1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			var req api.AssociateEIP
			addrVar(fs, &req.IPAddr, "ip-addr", "the EIP's address")
			fs.StringVar(&req.EIPID, "eip-id", "", "the EIP's id")
			return groupAction(api.ActionAssociateEIP, &req)
		},
	},
	"instancegroup-dissociate-eip": {
		usage: "<group>", help: "unbind the group's EIP", min: 1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			return groupAction(api.ActionDissociateEIP, &api.DissociateEIP{})
		},
	},
	"instancegroup-change-eip-bandwidth": {
		usage: "--bandwidth BANDWIDTH <group|eip>",
		help:  "set the bandwidth (Mbit/s, 0 unlimited) of the group's EIP, named by the group or the EIP's id or address; the data plane limits the EIP to it in each direction",
		min:   1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			bw := -1
			fs.IntVar(&bw, "bandwidth", -1, "bandwidth in Mbit/s, 0 for unlimited (required)")
			return func(ctx context.Context, c *adminClient, args []string) (any, error) {
				if bw == -1 {
					return nil, usageError{"--bandwidth is required (Mbit/s, 0 for unlimited)"}
				}
				return groupAction(api.ActionChangeEIPBandwidth, &api.ChangeEIPBandwidth{Bandwidth: &bw})(ctx, c, args)
			}
		},
	},
	"instancegroup-show": {
		usage: "<group>", help: "show a group: members, VIP, EIP, owner, revision", min: 1, max: 1,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			return func(ctx context.Context, c *adminClient, args []string) (any, error) {
				var out api.GroupView
				return &out, c.do(ctx, http.MethodGet, groupPath(args[0], ""), nil, &out)
			}
		},
	},
	"instancegroup-list": {
		usage: "", help: "list groups", min: 0, max: 0,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			return func(ctx context.Context, c *adminClient, _ []string) (any, error) {
				var out []api.GroupView
				return &out, c.do(ctx, http.MethodGet, api.PathAdminGroups, nil, &out)
			}
		},
	},
	"hostsync-status": {
		usage: "", help: "show hostsync's status", min: 0, max: 0,
		flags: func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
			return func(ctx context.Context, c *adminClient, _ []string) (any, error) {
				var out api.HostsyncStatus
				return &out, c.do(ctx, http.MethodGet, api.PathAdminStatus, nil, &out)
			}
		},
	},
}

func groupPath(group, action string) string {
	p := api.PathAdminGroup + url.PathEscape(group)
	if action != "" {
		p += "/" + action
	}
	return p
}

func groupAction(action string, req any) func(context.Context, *adminClient, []string) (any, error) {
	return func(ctx context.Context, c *adminClient, args []string) (any, error) {
		var out api.GroupView
		return &out, c.do(ctx, http.MethodPost, groupPath(args[0], action), req, &out)
	}
}

func membersCmd(action string) func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
	return func(fs *flag.FlagSet) func(context.Context, *adminClient, []string) (any, error) {
		return func(ctx context.Context, c *adminClient, args []string) (any, error) {
			var out api.GroupView
			return &out, c.do(ctx, http.MethodPost, groupPath(args[0], action), api.GroupMembers{Guests: args[1:]}, &out)
		}
	}
}

// runAdmin runs one admin command against hostsync's admin socket: exit 0
// on success, 1 when hostsync refuses (the rule's message is printed) or
// cannot be reached, 2 on usage errors and invalid input.
func runAdmin(ctx context.Context, cmd string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	def, ok := adminCmds[cmd]
	if !ok {
		fmt.Fprintf(stderr, "vipctl: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	fs := flag.NewFlagSet("vipctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", defaultSocket(), "hostsync's admin socket (env "+envSocket+")")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	do := def.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: vipctl %s %s\n  %s\n\nflags:\n", cmd, def.usage, def.help)
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	if len(pos) < def.min || (def.max >= 0 && len(pos) > def.max) {
		fmt.Fprintf(stderr, "vipctl %s: wrong number of arguments\nusage: vipctl %s %s\n", cmd, cmd, def.usage)
		return exitUsage
	}
	out, err := do(ctx, newAdminClient(*socket), pos)
	if err != nil {
		fmt.Fprintf(stderr, "vipctl %s: %v\n", cmd, err)
		var ae *apiError
		var ue usageError
		if errors.As(err, &ue) || (errors.As(err, &ae) && ae.Status == http.StatusBadRequest) {
			return exitUsage
		}
		return exitFailure
	}
	if out == nil {
		if *asJSON {
			fmt.Fprintln(stdout, "{}")
		} else {
			fmt.Fprintf(stdout, "%s: ok\n", cmd)
		}
		return exitOK
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "vipctl %s: %v\n", cmd, err)
			return exitFailure
		}
		return exitOK
	}
	printHuman(stdout, out)
	return exitOK
}

// parseInterleaved parses flags that may come before or after the
// positional arguments ("instancegroup-show nginx --json").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// authPassHelp is the help of --auth-pass-file.
const authPassHelp = "file whose first line is the VRRPv2 PASS password, at most 8 characters; /dev/stdin reads it from standard input (default: generated). Never on the command line, where every user sees it"

// usageError is invalid input found before asking hostsync.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Flag value types.

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type addrFlag struct{ p *netip.Addr }

func (a addrFlag) String() string {
	if a.p == nil || !a.p.IsValid() {
		return ""
	}
	return a.p.String()
}

func (a addrFlag) Set(v string) error {
	x, err := netip.ParseAddr(v)
	if err != nil {
		return fmt.Errorf("%q is not an IP address", v)
	}
	*a.p = x
	return nil
}

func addrVar(fs *flag.FlagSet, p *netip.Addr, name, help string) { fs.Var(addrFlag{p}, name, help) }

type prefixFlag struct{ p *netip.Prefix }

func (f prefixFlag) String() string {
	if f.p == nil || !f.p.IsValid() {
		return ""
	}
	return f.p.String()
}

func (f prefixFlag) Set(v string) error {
	x, err := netip.ParsePrefix(v)
	if err != nil {
		return fmt.Errorf("%q is not a CIDR such as 192.0.2.0/24", v)
	}
	*f.p = x
	return nil
}

func prefixVar(fs *flag.FlagSet, p *netip.Prefix, name, help string) {
	fs.Var(prefixFlag{p}, name, help)
}

type addrListFlag struct{ p *[]netip.Addr }

func (f addrListFlag) String() string {
	if f.p == nil {
		return ""
	}
	s := make([]string, len(*f.p))
	for i, a := range *f.p {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func (f addrListFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		x, err := netip.ParseAddr(strings.TrimSpace(part))
		if err != nil {
			return fmt.Errorf("%q is not an IP address", part)
		}
		*f.p = append(*f.p, x)
	}
	return nil
}

func addrListVar(fs *flag.FlagSet, p *[]netip.Addr, name, help string) {
	fs.Var(addrListFlag{p}, name, help)
}

type secondsFlag struct{ p *vrrp.Seconds }

func (f secondsFlag) String() string {
	if f.p == nil || *f.p == 0 {
		return ""
	}
	return f.p.String()
}

func (f secondsFlag) Set(v string) error {
	x, err := vrrp.ParseSeconds(v)
	if err != nil {
		return err
	}
	*f.p = x
	return nil
}

func secondsVar(fs *flag.FlagSet, p *vrrp.Seconds, name, help string) {
	fs.Var(secondsFlag{p}, name, help)
}

// readSecret returns the first line of path (a secret kept off the command
// line), without its line ending.
func readSecret(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s: the first line is empty", path)
	}
	return line, nil
}
