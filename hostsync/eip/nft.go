package eip

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// ErrInvalidOptions is returned by NewNFT, NewCommand and RenderNFT when an
// option is out of its documented range.
var ErrInvalidOptions = errors.New("eip: invalid options")

const (
	// DefaultTable is the nftables table (family ip) the NFT backend owns.
	DefaultTable = "vipkeeper"
	// DefaultNFT is the nft binary, looked up in PATH.
	DefaultNFT = "nft"
	// DefaultRouteProtocol marks the routes the NFT backend installs
	// (rtm_protocol), so it finds and removes the ones no longer wanted
	// without touching anybody else's. 201 is unassigned in iproute2's
	// rt_protos; `ip route show proto 201` lists them.
	DefaultRouteProtocol = 201
	// DefaultNFTTimeout bounds one nft run; a transaction of a few hundred
	// rules takes milliseconds.
	DefaultNFTTimeout = 10 * time.Second
	// maxOutput bounds the nft or hook output kept for an error message.
	maxOutput = 4 << 10
	// DefaultReadBack is the Maps backend's MapsOptions.ReadBack when it
	// serves NewNFT: a little under hostsync's default reapply_interval
	// (1m), so each periodic reapply reads the kernel and repairs drift,
	// as the script backend did by defining the table afresh, while the
	// applies of moves in between write only what changed.
	DefaultReadBack = 50 * time.Second
)

// tableName is what NFTOptions.Table accepts: an nft identifier, so the
// name never needs quoting in the script.
var tableName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,31}$`)

// NFTOptions configures the NFT backend. The zero value is the production
// default: table "vipkeeper" programmed as maps through netlink (the Maps
// backend), routes in the main table of the caller's network namespace.
// Setting NFT, Run or Query selects the script backend instead: the whole
// table rendered and applied with `nft -f`.
type NFTOptions struct {
	// Table is the name of the ip-family table the backend owns; it is
	// replaced whole on every Apply. Letters, digits, underscore; at most
	// 32 characters, starting with a letter.
	Table string
	// NFT, when set, selects the script backend with this nft binary.
	NFT string
	// Run, when set, replaces running `NFT -f -` with the script on stdin
	// (tests enter a network namespace with it). It must apply the script
	// as one nft transaction.
	Run func(ctx context.Context, script []byte) error
	// Query, when set, replaces running `NFT ARGS...` for read-only
	// commands and returns its standard output (Programmed lists the
	// ruleset with it). Set it together with Run when Run enters another
	// network namespace; with Run set and Query nil, Programmed returns
	// ErrCannotInspect.
	Query func(ctx context.Context, args []string) ([]byte, error)
	// Timeout bounds one nft run (DefaultNFTTimeout when zero).
	Timeout time.Duration
	// Netlink is the handle routes are programmed through, e.g. from
	// netlink.NewHandleAt for another network namespace; nil means the
	// caller's network namespace. The caller keeps ownership.
	Netlink *netlink.Handle
	// RouteProtocol marks the backend's routes (DefaultRouteProtocol when
	// zero); 5..255, since 0..4 belong to the kernel.
	RouteProtocol int
	// RouteTable is the routing table for VIP routes (main when zero).
	RouteTable int
	// Logger receives apply logs; nil discards them.
	Logger *slog.Logger
}

// routeOps is the part of *netlink.Handle the backend uses.
type routeOps interface {
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

// NFT is the default backend: 1:1 NAT between each EIP and its VIP in one
// nftables table, plus a /32 route for each VIP toward the host of its
// owner when the mapping names a NextHop. With default options it is the
// Maps backend (netlink, element-level changes, no nft process); with
// NFTOptions.NFT, Run or Query set it is the script backend, which
// replaces the table in a single `nft -f` transaction with one rule per
// EIP per chain. Apply calls are serialised.
type NFT struct {
	// Immutable after NewNFT.
	// maps, when set, does the work (the Maps backend).
	maps    *Maps
	table   string
	run     func(ctx context.Context, script []byte) error
	query   func(ctx context.Context, args []string) ([]byte, error)
	timeout time.Duration
	routes  routeOps
	proto   netlink.RouteProtocol
	rtable  int
	log     *slog.Logger

	// mu serialises Apply: one transaction and one route sync at a time.
	mu sync.Mutex
}

// NewNFT returns the NFT backend configured by opts.
func NewNFT(opts NFTOptions) (*NFT, error) {
	n := &NFT{
		table:   cmp.Or(opts.Table, DefaultTable),
		timeout: cmp.Or(opts.Timeout, DefaultNFTTimeout),
		proto:   netlink.RouteProtocol(cmp.Or(opts.RouteProtocol, DefaultRouteProtocol)),
		rtable:  cmp.Or(opts.RouteTable, mainTable),
		log:     opts.Logger,
		run:     opts.Run,
		query:   opts.Query,
	}
	if !tableName.MatchString(n.table) {
		return nil, fmt.Errorf("%w: table %q: want letters, digits and _, starting with a letter, at most 32", ErrInvalidOptions, n.table)
	}
	if n.timeout < 0 {
		return nil, fmt.Errorf("%w: timeout %s is negative", ErrInvalidOptions, n.timeout)
	}
	if n.proto < 5 || n.proto > 255 {
		return nil, fmt.Errorf("%w: route protocol %d: want 5..255", ErrInvalidOptions, n.proto)
	}
	if n.rtable < 0 {
		return nil, fmt.Errorf("%w: route table %d is negative", ErrInvalidOptions, n.rtable)
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if opts.Run == nil && opts.Query == nil && opts.NFT == "" {
		m, err := NewMaps(MapsOptions{
			Table: n.table, Netlink: opts.Netlink, RouteProtocol: int(n.proto), RouteTable: n.rtable,
			ReadBack: DefaultReadBack, Logger: n.log,
		})
		if err != nil {
			return nil, err
		}
		n.maps = m
		return n, nil
	}
	if n.run == nil {
		n.run = execNFT(cmp.Or(opts.NFT, DefaultNFT))
		if n.query == nil {
			n.query = execQuery(cmp.Or(opts.NFT, DefaultNFT))
		}
	}
	if opts.Netlink != nil {
		n.routes = opts.Netlink
	} else {
		// The zero Handle opens a socket per call in the caller's netns,
		// as the package-level netlink functions do.
		n.routes = &netlink.Handle{}
	}
	return n, nil
}

// execNFT returns the production runner: `nft -f -` with the script on
// stdin, so nft applies it as one transaction.
func execNFT(path string) func(context.Context, []byte) error {
	return func(ctx context.Context, script []byte) error {
		cmd := exec.CommandContext(ctx, path, "-f", "-")
		cmd.Stdin = bytes.NewReader(script)
		out := &boundedBuffer{max: maxOutput}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.WaitDelay = time.Second
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s -f -: %w", path, ctx.Err())
			}
			return fmt.Errorf("%s -f -: %w: %s", path, err, bytes.TrimSpace(out.Bytes()))
		}
		return nil
	}
}

// Apply programs the mappings: through Maps.Apply by default; with the
// script backend it replaces the NAT table in one nft transaction and then brings the backend's VIP routes to the mappings'
// next hops. Mappings that cannot be programmed (no EIP or VIP, not IPv4,
// an address already taken by another group) are skipped and logged.
// Applying the same set again changes nothing. Errors of both steps are
// joined; a failed nft run leaves the previous table in place.
func (n *NFT) Apply(ctx context.Context, mappings []Mapping) error {
	if n.maps != nil {
		return n.maps.Apply(ctx, mappings)
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	p := plan(mappings)
	for _, s := range p.skipped {
		n.log.Warn("eip: mapping skipped", "group", s.group, "eip", s.eip, "vip", s.vip, "reason", s.reason)
	}
	script := renderScript(n.table, p.nat)
	n.log.Debug("eip: nft script", "table", n.table, "script", string(script))

	var errs []error
	rctx, cancel := context.WithTimeout(ctx, n.timeout)
	err := n.run(rctx, script)
	cancel()
	if err != nil {
		errs = append(errs, fmt.Errorf("eip: apply nft table %s: %w", n.table, err))
	}
	added, removed, err := n.syncRoutes(p.routes)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	n.log.Info("eip: applied", "table", n.table, "mappings", len(p.nat), "skipped", len(p.skipped),
		"routes", len(p.routes), "routes_replaced", added, "routes_removed", removed)
	return nil
}

// Reconcile reads what is programmed and repairs it toward the last
// Apply (Maps.Reconcile). The script backend has nothing to do: each of
// its applies defines the table afresh.
func (n *NFT) Reconcile(ctx context.Context) error {
	if n.maps != nil {
		return n.maps.Reconcile(ctx)
	}
	return nil
}

// Close releases the Maps backend's netlink socket; what is programmed
// stays.
func (n *NFT) Close() error {
	if n.maps != nil {
		return n.maps.Close()
	}
	return nil
}

// RenderNFT returns the nft script that Apply runs for mappings on table:
// a pure function of its arguments, for review and tests.
func RenderNFT(table string, mappings []Mapping) ([]byte, error) {
	if !tableName.MatchString(table) {
		return nil, fmt.Errorf("%w: table %q", ErrInvalidOptions, table)
	}
	return renderScript(table, plan(mappings).nat), nil
}

// nat is one programmed 1:1 NAT pair.
type nat struct {
	eip, vip netip.Addr
}

// route is one wanted VIP route.
type route struct {
	vip, via netip.Addr
}

// skip records a mapping left out and why.
type skip struct {
	group    string
	eip, vip netip.Addr
	reason   string
}

type planned struct {
	nat     []nat
	routes  []route
	skipped []skip
}

// plan normalises mappings (IPv4-mapped IPv6 becomes IPv4), sorts them by
// group then addresses so the output is stable, and keeps the first
// mapping for any EIP or VIP: a second one would make the NAT ambiguous.
func plan(mappings []Mapping) planned {
	ms := slices.Clone(mappings)
	for i := range ms {
		ms[i].EIP, ms[i].VIP, ms[i].NextHop = ms[i].EIP.Unmap(), ms[i].VIP.Unmap(), ms[i].NextHop.Unmap()
	}
	slices.SortStableFunc(ms, func(a, b Mapping) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), a.EIP.Compare(b.EIP), a.VIP.Compare(b.VIP))
	})
	p := planned{nat: make([]nat, 0, len(ms))}
	eipOwner := make(map[netip.Addr]string, len(ms))
	vipOwner := make(map[netip.Addr]string, len(ms))
	for _, m := range ms {
		reason := ""
		switch {
		case !m.EIP.IsValid() || !m.VIP.IsValid():
			reason = "no EIP or no VIP"
		case !m.EIP.Is4() || !m.VIP.Is4():
			reason = "not IPv4"
		case !unicast(m.EIP) || !unicast(m.VIP):
			reason = "not a unicast address"
		case m.EIP == m.VIP:
			reason = "EIP equals VIP"
		case eipOwner[m.EIP] != "" || vipOwner[m.VIP] != "":
			reason = fmt.Sprintf("address already mapped for group %q", cmp.Or(eipOwner[m.EIP], vipOwner[m.VIP]))
		}
		if reason != "" {
			p.skipped = append(p.skipped, skip{group: m.Group, eip: m.EIP, vip: m.VIP, reason: reason})
			continue
		}
		// Group names are never empty in the registry; the placeholder keeps
		// the duplicate check working for mappings built by hand.
		owner := cmp.Or(m.Group, "(unnamed)")
		eipOwner[m.EIP], vipOwner[m.VIP] = owner, owner
		p.nat = append(p.nat, nat{eip: m.EIP, vip: m.VIP})
		switch {
		case !m.NextHop.IsValid():
			// Directly connected: no route.
		case !m.NextHop.Is4() || !unicast(m.NextHop):
			p.skipped = append(p.skipped, skip{group: m.Group, eip: m.EIP, vip: m.VIP,
				reason: fmt.Sprintf("next hop %s unusable, NAT kept without route", m.NextHop)})
		default:
			p.routes = append(p.routes, route{vip: m.VIP, via: m.NextHop})
		}
	}
	return p
}

func unicast(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// renderScript writes the nft transaction. The first two commands make
// "delete" safe when the table does not exist yet; then the table is
// defined afresh, so the whole state changes in one atomic step and
// nothing from an earlier Apply survives. Every address comes from a
// netip.Addr; no text from a mapping reaches the script. With no mapping
// the table is just removed, so no NAT hook stays registered.
func renderScript(table string, nats []nat) []byte {
	var b bytes.Buffer
	b.WriteString("# vipkeeper EIP data plane: 1:1 NAT between each EIP and its VIP.\n")
	b.WriteString("# Generated; applied with nft -f as one transaction. Do not edit.\n")
	fmt.Fprintf(&b, "table ip %s\n", table)
	fmt.Fprintf(&b, "delete table ip %s\n", table)
	if len(nats) == 0 {
		return b.Bytes()
	}
	fmt.Fprintf(&b, "table ip %s {\n", table)
	// Traffic arriving for an EIP goes to its VIP.
	b.WriteString("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
	for _, m := range nats {
		fmt.Fprintf(&b, "\t\tip daddr %s dnat to %s\n", m.eip, m.vip)
	}
	b.WriteString("\t}\n")
	// Traffic this machine originates for an EIP likewise. nft 1.0.6
	// (Debian 12) accepts the name "dstnat" only on prerouting; -100 is
	// its value.
	b.WriteString("\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n")
	for _, m := range nats {
		fmt.Fprintf(&b, "\t\tip daddr %s dnat to %s\n", m.eip, m.vip)
	}
	b.WriteString("\t}\n")
	// Connections the VIP opens leave with its EIP.
	b.WriteString("\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
	for _, m := range nats {
		fmt.Fprintf(&b, "\t\tip saddr %s snat to %s\n", m.vip, m.eip)
	}
	b.WriteString("\t}\n}\n")
	return b.Bytes()
}
