package eip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// MapEIPToVIP is the nftables map (ipv4_addr : ipv4_addr) the Maps
	// backend's DNAT rules look the destination EIP up in.
	MapEIPToVIP = "eip_to_vip"
	// MapVIPToEIP is the map its SNAT rule looks the source VIP up in.
	MapVIPToEIP = "vip_to_eip"
	// elementsPerMessage bounds the elements in one netlink message; a
	// batch holds as many messages as needed and is still one transaction.
	elementsPerMessage = 1000
	// sendBuffer is the netlink socket's send buffer. A batch goes out in
	// one sendmsg, so it must hold the largest: the table defined with
	// every pair, about 50 bytes per element, two elements per mapping
	// (1 MB for 10,000 mappings). Set with SO_SNDBUFFORCE (CAP_NET_ADMIN,
	// which programming nftables needs anyway), as nft does, since the
	// default wmem_max caps SO_SNDBUF at about 200 kB. The kernel charges
	// only what a batch uses.
	sendBuffer = 16 << 20
)

// MapsOptions configures the Maps backend. The zero value is the
// production default: table "vipkeeper" and routes in the main table, both
// in the caller's network namespace.
type MapsOptions struct {
	// Table is the ip-family table the backend owns (DefaultTable when
	// empty); same rules as NFTOptions.Table.
	Table string
	// NetNS is an open file descriptor of the network namespace to program
	// nftables in (e.g. from netns.GetFromName); 0 means the caller's. The
	// caller keeps ownership and must keep it open until Close.
	NetNS int
	// Netlink is the handle routes are programmed through (nil: the
	// caller's network namespace); the caller keeps ownership.
	Netlink *netlink.Handle
	// RouteProtocol marks the backend's routes (DefaultRouteProtocol when
	// zero); 5..255.
	RouteProtocol int
	// RouteTable is the routing table for VIP routes (main when zero).
	RouteTable int
	// ReadBack makes Apply read the kernel and repair drift, as
	// Reconcile does, when the last read is at least this old; zero reads
	// only on the first Apply and on Reconcile. Applies in between write
	// the difference from the previous one without reading.
	ReadBack time.Duration
	// Now is the clock ReadBack is measured with (time.Now when nil).
	Now func() time.Time
	// Logger receives apply logs; nil discards them.
	Logger *slog.Logger
}

// Writes counts what the Maps backend has written to the kernel.
type Writes struct {
	// Batches is the number of nftables netlink batches (transactions).
	Batches uint64
	// Elements is the number of map elements added or deleted; a pair
	// whose value changed counts twice (deleted and added in one batch).
	Elements uint64
	// Routes is the number of routes replaced or deleted.
	Routes uint64
	// Limits is the number of bandwidth limits (one EIP, one direction:
	// object, chain, rule and element) added, replaced or deleted, and of
	// foreign objects removed from the limit table (maps_limit.go).
	Limits uint64
}

// Maps is the data plane as two nftables maps programmed through netlink
// (github.com/google/nftables), with no nft process: one table holding
// MapEIPToVIP and MapVIPToEIP and one rule per chain whatever the number
// of mappings —
//
//	prerouting  (nat, dstnat):  dnat ip to ip daddr map @eip_to_vip
//	output      (nat, -100):    dnat ip to ip daddr map @eip_to_vip
//	postrouting (nat, srcnat):  snat ip to ip saddr map @vip_to_eip
//
// — plus, like NFT, a /32 route per VIP toward its owner's host. Apply
// keeps what it programmed in memory and writes only the difference, as
// element changes in one netlink batch, so an unchanged set costs no write
// and a live, unchanged mapping is never removed. The first Apply and
// every Reconcile read the kernel and repair drift. With no mapping the
// table is removed, so no NAT hook stays registered. Methods are
// serialised; Close releases the netlink socket.
type Maps struct {
	// Immutable after NewMaps.
	table  string
	conn   *nftables.Conn
	routes routeOps
	proto  netlink.RouteProtocol
	rtable int
	log    *slog.Logger
	// readBack and now: see MapsOptions.
	readBack time.Duration
	now      func() time.Time

	batches, elements, routeWrites atomic.Uint64
	limitWrites                    atomic.Uint64

	// mu serialises Apply, Reconcile and Programmed; it guards the rest.
	mu sync.Mutex
	// applied reports whether Apply ran once: want and wantRoutes hold
	// the last desired state.
	applied    bool
	want       map[netip.Addr]netip.Addr // EIP → VIP last asked for
	wantRoutes map[netip.Addr]netip.Addr // VIP → next hop last asked for
	// natSynced reports whether nat mirrors the kernel; false after a
	// failed batch, so the next Apply reads the kernel again.
	natSynced bool
	nat       map[netip.Addr]netip.Addr // EIP → VIP programmed
	// routesSynced likewise for rts (VIP → next hop installed).
	routesSynced bool
	rts          map[netip.Addr]netip.Addr
	// lastRead is when the kernel was last read successfully.
	lastRead time.Time
	// lim: the bandwidth limits (maps_limit.go).
	lim limitState
}

var (
	_ Backend   = (*Maps)(nil)
	_ Inspector = (*Maps)(nil)
)

// NewMaps returns the Maps backend configured by opts, with a netlink
// socket open in opts.NetNS.
func NewMaps(opts MapsOptions) (*Maps, error) {
	m := &Maps{
		table:  cmp.Or(opts.Table, DefaultTable),
		proto:  netlink.RouteProtocol(cmp.Or(opts.RouteProtocol, DefaultRouteProtocol)),
		rtable: cmp.Or(opts.RouteTable, mainTable),
		log:    opts.Logger,
		now:    opts.Now,
		nat:    map[netip.Addr]netip.Addr{},
		rts:    map[netip.Addr]netip.Addr{},
	}
	if !tableName.MatchString(m.table) {
		return nil, fmt.Errorf("%w: table %q: want letters, digits and _, starting with a letter, at most 32", ErrInvalidOptions, m.table)
	}
	if m.proto < 5 || m.proto > 255 {
		return nil, fmt.Errorf("%w: route protocol %d: want 5..255", ErrInvalidOptions, m.proto)
	}
	if m.rtable < 0 {
		return nil, fmt.Errorf("%w: route table %d is negative", ErrInvalidOptions, m.rtable)
	}
	if opts.NetNS < 0 {
		return nil, fmt.Errorf("%w: netns fd %d is negative", ErrInvalidOptions, opts.NetNS)
	}
	if opts.ReadBack < 0 {
		return nil, fmt.Errorf("%w: read-back interval %s is negative", ErrInvalidOptions, opts.ReadBack)
	}
	m.readBack = opts.ReadBack
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if opts.Netlink != nil {
		m.routes = opts.Netlink
	} else {
		m.routes = &netlink.Handle{}
	}
	conn, err := nftables.New(nftables.WithNetNSFd(opts.NetNS), nftables.AsLasting(),
		nftables.WithSockOptions(forceSendBuffer))
	if err != nil {
		return nil, fmt.Errorf("eip: nftables netlink socket: %w", err)
	}
	m.conn = conn
	return m, nil
}

// forceSendBuffer sets the socket's send buffer to sendBuffer.
func forceSendBuffer(c *mnetlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer)
		if errors.Is(serr, unix.EPERM) {
			// Without CAP_NET_ADMIN nothing can be programmed anyway;
			// reading back still works with the capped buffer.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set netlink send buffer: %w", serr)
	}
	return nil
}

// Close closes the nftables netlink socket; what is programmed stays.
func (m *Maps) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conn.CloseLasting()
}

// Writes returns what the backend has written since NewMaps.
func (m *Maps) Writes() Writes {
	return Writes{Batches: m.batches.Load(), Elements: m.elements.Load(), Routes: m.routeWrites.Load(),
		Limits: m.limitWrites.Load()}
}

// Apply converges the data plane to mappings (planned as NFT does:
// invalid, non-IPv4 and duplicate mappings are skipped and logged). The
// first call reads the kernel and repairs whatever differs; later calls
// write only the difference from the previous one. Errors of the NAT and
// the route step are joined; after an error the next Apply reads the
// kernel again.
func (m *Maps) Apply(ctx context.Context, mappings []Mapping) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("eip: apply: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	p := plan(mappings)
	for _, s := range p.skipped {
		m.log.Warn("eip: mapping skipped", "group", s.group, "eip", s.eip, "vip", s.vip, "reason", s.reason)
	}
	want := make(map[netip.Addr]netip.Addr, len(p.nat))
	for _, n := range p.nat {
		want[n.eip] = n.vip
	}
	routes := make(map[netip.Addr]netip.Addr, len(p.routes))
	for _, r := range p.routes {
		routes[r.vip] = r.via
	}
	m.applied, m.want, m.wantRoutes = true, want, routes
	m.lim.want = limitsOf(mappings, want)
	if m.readBack > 0 && m.now().Sub(m.lastRead) >= m.readBack {
		m.natSynced, m.routesSynced = false, false
	}
	return m.converge("apply", len(p.skipped))
}

// Reconcile reads what is programmed (table, chains, rules, map elements,
// routes of the backend's protocol) and repairs it toward the last
// Apply's set with element-level changes. Before any Apply it does
// nothing: the backend does not know the desired state yet.
func (m *Maps) Reconcile(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("eip: reconcile: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.applied {
		return nil
	}
	m.natSynced, m.routesSynced = false, false
	return m.converge("reconcile", 0)
}

// converge brings the kernel to m.want and m.wantRoutes. Called with mu.
func (m *Maps) converge(op string, skipped int) error {
	before := m.Writes()
	read := !m.natSynced && !m.routesSynced // a full read, as Reconcile's
	var errs []error
	if err := m.syncLimits(read); err != nil {
		errs = append(errs, err)
	}
	if err := m.syncNAT(); err != nil {
		m.natSynced = false
		errs = append(errs, err)
	}
	replaced, removed, err := m.syncRoutes()
	if err != nil {
		m.routesSynced = false
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if read {
		m.lastRead = m.now()
	}
	after := m.Writes()
	lvl := slog.LevelInfo
	if after == before {
		lvl = slog.LevelDebug
	}
	m.log.Log(context.Background(), lvl, "eip: applied", "op", op, "table", m.table, "mappings", len(m.want),
		"skipped", skipped, "routes", len(m.wantRoutes), "routes_replaced", replaced, "routes_removed", removed,
		"batches", after.Batches-before.Batches, "elements", after.Elements-before.Elements)
	return nil
}

// objects are the backend's nftables objects, as the kernel should hold
// them.
type objects struct {
	table    *nftables.Table
	e2v, v2e *nftables.Set
	chains   []*nftables.Chain
}

func (m *Maps) objects() objects {
	t := &nftables.Table{Name: m.table, Family: nftables.TableFamilyIPv4}
	mapOf := func(name string) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr}
	}
	accept := nftables.ChainPolicyAccept
	chain := func(name string, hook *nftables.ChainHook, prio nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeNAT, Hooknum: hook,
			Priority: nftables.ChainPriorityRef(prio), Policy: &accept}
	}
	return objects{
		table: t, e2v: mapOf(MapEIPToVIP), v2e: mapOf(MapVIPToEIP),
		chains: []*nftables.Chain{
			// Traffic arriving for an EIP goes to its VIP; traffic this
			// machine originates for an EIP likewise; connections the VIP
			// opens leave with its EIP.
			chain("prerouting", nftables.ChainHookPrerouting, *nftables.ChainPriorityNATDest),
			chain("output", nftables.ChainHookOutput, *nftables.ChainPriorityNATDest),
			chain("postrouting", nftables.ChainHookPostrouting, *nftables.ChainPriorityNATSource),
		},
	}
}

// ruleExprs is the one rule of chain: look the address up in the chain's
// map and NAT to the value.
func ruleExprs(chain string, setID uint32) []expr.Any {
	offset, set, typ := uint32(16), MapEIPToVIP, expr.NATTypeDestNAT // ip daddr
	if chain == "postrouting" {
		offset, set, typ = 12, MapVIPToEIP, expr.NATTypeSourceNAT // ip saddr
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set, SetID: setID},
		&expr.NAT{Type: typ, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1},
	}
}

// ruleMatches reports whether a rule read back is the chain's rule.
func ruleMatches(chain string, got []expr.Any) bool {
	want := ruleExprs(chain, 0)
	if len(got) != len(want) {
		return false
	}
	for i, e := range got {
		if l, ok := e.(*expr.Lookup); ok {
			c := *l
			c.SetID = 0
			e = &c
		}
		if !reflect.DeepEqual(e, want[i]) {
			return false
		}
	}
	return true
}

// batch is one nftables transaction being built.
type batch struct {
	conn     *nftables.Conn
	ops      int
	elements int
	err      error
}

func (b *batch) elems(s *nftables.Set, add bool, pairs map[netip.Addr]netip.Addr) {
	if len(pairs) == 0 || b.err != nil {
		return
	}
	els := make([]nftables.SetElement, 0, min(len(pairs), elementsPerMessage))
	put := func() {
		if len(els) == 0 || b.err != nil {
			return
		}
		var err error
		if add {
			err = b.conn.SetAddElements(s, els)
		} else {
			err = b.conn.SetDeleteElements(s, els)
		}
		b.err = err
		b.ops++
		b.elements += len(els)
		els = els[:0]
	}
	for k, v := range pairs {
		k4, v4 := k.As4(), v.As4()
		els = append(els, nftables.SetElement{Key: k4[:], Val: v4[:]})
		if len(els) == elementsPerMessage {
			put()
		}
	}
	put()
}

// flush sends the batch as one transaction and counts it.
func (m *Maps) flush(b *batch) error {
	if b.err != nil {
		// SetAddElements and SetDeleteElements fail only for anonymous
		// sets and malformed elements, neither of which is built here.
		return b.err
	}
	if b.ops == 0 {
		return nil
	}
	err := m.conn.Flush()
	m.batches.Add(1)
	m.elements.Add(uint64(b.elements))
	return err
}

// rebuild queues the table defined afresh with pairs: created if absent,
// deleted and created again, so it works whatever the kernel holds and
// the old table is replaced in the same transaction.
func (m *Maps) rebuild(b *batch, o objects, pairs map[netip.Addr]netip.Addr) {
	m.conn.AddTable(o.table)
	m.conn.DelTable(o.table)
	b.ops += 2
	if len(pairs) == 0 {
		return
	}
	m.conn.AddTable(o.table)
	for _, s := range []*nftables.Set{o.e2v, o.v2e} {
		if err := m.conn.AddSet(s, nil); err != nil && b.err == nil {
			b.err = err
		}
	}
	ids := map[string]uint32{MapEIPToVIP: o.e2v.ID, MapVIPToEIP: o.v2e.ID}
	for _, c := range o.chains {
		m.conn.AddChain(c)
		exprs := ruleExprs(c.Name, 0)
		l := exprs[1].(*expr.Lookup)
		l.SetID = ids[l.SetName]
		m.conn.AddRule(&nftables.Rule{Table: o.table, Chain: c, Exprs: exprs})
	}
	b.ops += 1 + 2 + 2*len(o.chains)
	b.elems(o.e2v, true, pairs)
	b.elems(o.v2e, true, invert(pairs))
}

func invert(pairs map[netip.Addr]netip.Addr) map[netip.Addr]netip.Addr {
	out := make(map[netip.Addr]netip.Addr, len(pairs))
	for k, v := range pairs {
		out[v] = k
	}
	return out
}

// diffPairs returns what to delete from and add to a map holding have so
// that it holds want. A key whose value changed is in both: deleted and
// added again in the same transaction, so it is never absent.
func diffPairs(have, want map[netip.Addr]netip.Addr) (del, add map[netip.Addr]netip.Addr) {
	del, add = map[netip.Addr]netip.Addr{}, map[netip.Addr]netip.Addr{}
	for k, v := range have {
		if w, ok := want[k]; !ok || w != v {
			del[k] = v
		}
	}
	for k, v := range want {
		if h, ok := have[k]; !ok || h != v {
			add[k] = v
		}
	}
	return del, add
}

// syncNAT brings the table to m.want. Called with mu.
func (m *Maps) syncNAT() error {
	o := m.objects()
	b := &batch{conn: m.conn}
	if m.natSynced {
		switch {
		case len(m.want) == 0 && len(m.nat) == 0:
		case len(m.want) == 0 || len(m.nat) == 0:
			m.rebuild(b, o, m.want)
		default:
			del, add := diffPairs(m.nat, m.want)
			b.elems(o.e2v, false, del)
			b.elems(o.v2e, false, invert(del))
			b.elems(o.e2v, true, add)
			b.elems(o.v2e, true, invert(add))
		}
	} else if err := m.repairNAT(b, o); err != nil {
		return err
	}
	if err := m.flush(b); err != nil {
		return fmt.Errorf("eip: program nftables table %s: %w", m.table, err)
	}
	m.nat, m.natSynced = m.want, true
	return nil
}

// repairNAT reads the table back and queues what makes it m.want:
// element changes when its maps and chains are sound, the table defined
// afresh (in the same single transaction) when they are not.
func (m *Maps) repairNAT(b *batch, o objects) error {
	k, err := m.read(o)
	if err != nil {
		return err
	}
	switch {
	case !k.table:
		if len(m.want) > 0 {
			m.rebuild(b, o, m.want)
		}
		return nil
	case len(m.want) == 0:
		m.rebuild(b, o, nil)
		return nil
	case !k.sound:
		m.log.Warn("eip: nftables table damaged, defining it afresh", "table", m.table, "why", k.why)
		m.rebuild(b, o, m.want)
		return nil
	}
	for _, c := range o.chains {
		if k.rulesOK[c.Name] {
			continue
		}
		m.log.Warn("eip: nftables rule changed, restoring it", "table", m.table, "chain", c.Name)
		m.conn.FlushChain(c)
		m.conn.AddRule(&nftables.Rule{Table: o.table, Chain: c, Exprs: ruleExprs(c.Name, 0)})
		b.ops += 2
	}
	for _, x := range []struct {
		set        *nftables.Set
		have, want map[netip.Addr]netip.Addr
	}{
		{o.e2v, k.e2v, m.want},
		{o.v2e, k.v2e, invert(m.want)},
	} {
		del, add := diffPairs(x.have, x.want)
		if len(del)+len(add) > 0 {
			m.log.Warn("eip: nftables map drifted, repairing", "table", m.table, "map", x.set.Name,
				"deleted", len(del), "added", len(add))
		}
		b.elems(x.set, false, del)
		b.elems(x.set, true, add)
	}
	return nil
}

// kernelState is the backend's table as read back.
type kernelState struct {
	table bool
	// sound: both maps and all three chains exist with the right types.
	sound    bool
	why      string
	rules    int
	rulesOK  map[string]bool
	e2v, v2e map[netip.Addr]netip.Addr
}

// read reads the table, its chains, rules and map elements.
func (m *Maps) read(o objects) (kernelState, error) {
	var k kernelState
	tables, err := m.conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return k, fmt.Errorf("eip: list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == m.table {
			k.table = true
		}
	}
	if !k.table {
		return k, nil
	}
	k.sound, k.rulesOK = true, map[string]bool{}
	chains, err := m.conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return k, fmt.Errorf("eip: list nftables chains: %w", err)
	}
	have := map[string]*nftables.Chain{}
	for _, c := range chains {
		if c.Table != nil && c.Table.Name == m.table {
			have[c.Name] = c
		}
	}
	for _, c := range have {
		rules, err := m.conn.GetRules(o.table, c)
		if err != nil {
			return k, fmt.Errorf("eip: list rules of chain %s: %w", c.Name, err)
		}
		k.rules += len(rules)
		k.rulesOK[c.Name] = len(rules) == 1 && ruleMatches(c.Name, rules[0].Exprs)
	}
	for _, c := range o.chains {
		h := have[c.Name]
		if h == nil || h.Type != c.Type || h.Hooknum == nil || *h.Hooknum != *c.Hooknum ||
			h.Priority == nil || *h.Priority != *c.Priority {
			k.sound, k.why = false, fmt.Sprintf("chain %s missing or of another type, hook or priority", c.Name)
		}
	}
	if len(have) != len(o.chains) {
		k.sound, k.why = false, fmt.Sprintf("%d chains, want %d", len(have), len(o.chains))
	}
	for _, s := range []*nftables.Set{o.e2v, o.v2e} {
		pairs, ok, err := m.readMap(o.table, s.Name)
		if err != nil {
			return k, err
		}
		if !ok {
			k.sound, k.why = false, fmt.Sprintf("map %s missing or not ipv4_addr : ipv4_addr", s.Name)
		}
		if s.Name == MapEIPToVIP {
			k.e2v = pairs
		} else {
			k.v2e = pairs
		}
	}
	return k, nil
}

// readMap returns the pairs of the named map; ok is false when it is
// missing or not an ipv4_addr : ipv4_addr map.
func (m *Maps) readMap(t *nftables.Table, name string) (map[netip.Addr]netip.Addr, bool, error) {
	sets, err := m.conn.GetSets(t)
	if err != nil {
		return nil, false, fmt.Errorf("eip: list nftables sets: %w", err)
	}
	for _, s := range sets {
		if s.Name != name {
			continue
		}
		if !s.IsMap || s.KeyType.Name != nftables.TypeIPAddr.Name || s.DataType.Name != nftables.TypeIPAddr.Name ||
			s.Interval || s.HasTimeout {
			return nil, false, nil
		}
		els, err := m.conn.GetSetElements(s)
		if err != nil {
			return nil, false, fmt.Errorf("eip: list elements of %s: %w", name, err)
		}
		pairs := make(map[netip.Addr]netip.Addr, len(els))
		for _, e := range els {
			k, ok1 := netip.AddrFromSlice(e.Key)
			v, ok2 := netip.AddrFromSlice(e.Val)
			if !ok1 || !ok2 || !k.Is4() || !v.Is4() {
				return nil, false, nil
			}
			pairs[k] = v
		}
		return pairs, true, nil
	}
	return nil, false, nil
}

// syncRoutes brings the backend's routes to m.wantRoutes: replaced where
// the next hop differs from what it installed, deleted where no longer
// wanted. When not in sync it first lists the routes of its protocol.
// As in NFT, the old route of a VIP whose new route fails is removed, and
// routes of other protocols are never touched. Called with mu.
func (m *Maps) syncRoutes() (replaced, removed int, err error) {
	var errs []error
	if !m.routesSynced {
		owned, err := m.ownedRoutes()
		if err != nil {
			return 0, 0, err
		}
		m.rts = map[netip.Addr]netip.Addr{}
		for _, r := range owned {
			if dst, via, ok := vipRoute(r); ok {
				if _, dup := m.rts[dst]; !dup {
					m.rts[dst] = via
					continue
				}
			}
			// Not a shape the backend installs: remove it.
			m.routeWrites.Add(1)
			if err := m.routes.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("eip: remove route %s: %w", r.Dst, err))
				continue
			}
			removed++
		}
	}
	wanted := make(map[netip.Addr]bool, len(m.wantRoutes))
	for vip, via := range m.wantRoutes {
		wanted[vip] = true
		if have, ok := m.rts[vip]; ok && have == via {
			continue
		}
		m.routeWrites.Add(1)
		if err := m.routes.RouteReplace(m.route(vip, via)); err != nil {
			errs = append(errs, fmt.Errorf("eip: route %s/32 via %s: %w", vip, via, err))
			wanted[vip] = false // the stale route below goes
			continue
		}
		m.rts[vip] = via
		replaced++
	}
	for vip, via := range m.rts {
		if wanted[vip] {
			continue
		}
		m.routeWrites.Add(1)
		if err := m.routes.RouteDel(m.route(vip, via)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("eip: remove route %s/32: %w", vip, err))
			continue
		}
		delete(m.rts, vip)
		removed++
	}
	m.routesSynced = true
	return replaced, removed, errors.Join(errs...)
}

func (m *Maps) route(vip, via netip.Addr) *netlink.Route {
	return &netlink.Route{
		Dst:      &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Gw:       via.AsSlice(),
		Protocol: m.proto,
		Table:    m.rtable,
	}
}

// ownedRoutes lists the IPv4 routes of the backend's protocol in its
// table, retrying a dump the kernel interrupted.
func (m *Maps) ownedRoutes() ([]netlink.Route, error) {
	n := NFT{routes: m.routes, proto: m.proto, rtable: m.rtable}
	return n.ownedRoutes()
}

// Programmed reads back the table through netlink: whether it exists, its
// rules (three whatever the number of mappings), the pairs in
// MapEIPToVIP and the VIP routes. Serialised with Apply.
func (m *Maps) Programmed(ctx context.Context) (State, error) {
	if err := ctx.Err(); err != nil {
		return State{}, fmt.Errorf("eip: read back: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k, err := m.read(m.objects())
	if err != nil {
		return State{}, err
	}
	routes, err := m.ownedRoutes()
	if err != nil {
		return State{}, err
	}
	return State{Table: k.table, Rules: k.rules, Mappings: len(k.e2v), Routes: len(routes)}, nil
}
