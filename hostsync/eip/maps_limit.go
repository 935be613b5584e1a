package eip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Bandwidth limits of the Maps backend: each EIP with a Mapping.Bandwidth
// is policed to that rate in each direction, in a table of its own beside
// the NAT table (its name plus LimitTableSuffix):
//
//	limit bw_203_0_113_5_in  { rate over 1250000 bytes/second burst … }
//	limit bw_203_0_113_5_out { rate over 1250000 bytes/second burst … }
//	map eip_limit_in  { type ipv4_addr : verdict; elements = { 203.0.113.5 : goto bw_203_0_113_5_in } }
//	map eip_limit_out { type ipv4_addr : verdict; elements = { 203.0.113.5 : goto bw_203_0_113_5_out } }
//	chain limit_in  { type filter hook prerouting priority mangle; ip daddr vmap @eip_limit_in }
//	chain limit_out { type filter hook postrouting priority srcnat + 10; ip saddr vmap @eip_limit_out }
//	chain bw_203_0_113_5_in  { limit name "bw_203_0_113_5_in" drop }
//	chain bw_203_0_113_5_out { limit name "bw_203_0_113_5_out" drop }
//
// Keyed by the EIP, on both sides of the NAT: traffic to an EIP is
// counted in prerouting before the DNAT (priority mangle, -150, runs
// before dstnat, -100), where the destination is still the EIP, both for
// connections opened toward the EIP and for the replies to connections
// its VIP opened (their SNAT is undone at dstnat too); traffic from an
// EIP is counted in postrouting after the SNAT (srcnat + 10), where the
// source is already the EIP, for the same two kinds of connection. So
// exactly the traffic carrying the EIP is limited, and traffic that
// reaches the VIP without its EIP (from inside) is not.
//
// Per packet the cost does not depend on the number of EIPs: one rule per
// direction, a hash lookup in the verdict map, and, for a limited EIP,
// one rule evaluating its limit. An EIP without a limit has no element:
// the lookup misses and the packet goes on untouched. With no limited
// EIP the table is removed, so no hook is registered at all.
//
// Why a verdict map and a chain per limit rather than an object map
// ("limit name ip daddr map @m"): github.com/google/nftables v0.3.0 can
// create, read and delete named limit objects and reference one by name
// (expr.Objref), but not an object map: nftables.Set has no object-type
// field (NFTA_SET_OBJ_TYPE, NFT_SET_OBJECT), SetElement no object
// reference (NFTA_SET_ELEM_OBJREF), expr.Objref no set lookup
// (NFTA_OBJREF_SET_*), and expressions cannot be added from outside the
// package (expr.Any's methods are unexported). A verdict map that goes to
// a one-rule chain referencing the object by name is the same lookup plus
// one rule, built from what the library has. A tc policer (flower filter
// with a police action through vishvananda/netlink) was not chosen: it is
// bound to interfaces, which this backend does not know (routes pick
// them), it would need a clsact qdisc on each, and its ingress hook runs
// before conntrack and NAT, so replies would be matched by another key
// than new connections.
//
// The limit is a token bucket over IP packet bytes (nft_limit, flag
// "over", so the drop rule matches only beyond the rate). Its rate is
// Bandwidth × 125,000 bytes/s; the kernel sizes the bucket as one second
// at the rate plus the burst (tokens_max = unit × (rate + burst) / rate),
// so a bulk TCP transfer, whose congestion window overshoots and backs off
// at each drop, keeps the link busy and reaches the rate; the burst adds
// limitBurst on top so that a few TSO-sized packets (64 KiB each, as the
// gateway sees them before segmentation) fit even at 1 Mbit/s.
//
// Like the NAT maps, the limits are written as differences: an EIP whose
// bandwidth is unchanged costs no write; a new limit adds its object,
// chain, rule and element; a changed one replaces its object and rule in
// one transaction (the element stays, so the EIP is never unlimited
// meanwhile); a removed one deletes them. A full read (first Apply,
// Reconcile, ReadBack) compares objects, elements, chains and rules with
// what is wanted and repairs only what differs.

const (
	// LimitTableSuffix is appended to the Maps backend's table name to
	// name its limit table ("vipkeeper_limit").
	LimitTableSuffix = "_limit"
	// MapLimitIn is the verdict map (EIP → goto the EIP's limit chain)
	// looked up for traffic to an EIP.
	MapLimitIn = "eip_limit_in"
	// MapLimitOut is the verdict map looked up for traffic from an EIP.
	MapLimitOut = "eip_limit_out"
	// limitBurst is added to the kernel's one-second bucket: two
	// 64 KiB GSO packets.
	limitBurst = 128 << 10
	// limitMessagesPerBatch bounds the netlink messages of one limit
	// transaction. The kernel answers each message with an ack queued on
	// the socket all at once after the batch (a few hundred bytes of
	// receive buffer each); a larger batch would overflow the default
	// buffer and lose acks. One limit (one EIP, one direction) is always
	// in one transaction.
	limitMessagesPerBatch = 256
)

// limitDir is one direction of the limits.
type limitDir struct {
	name   string // "in", "out": the suffix of object and chain names
	set    string
	chain  string // the base chain
	hook   *nftables.ChainHook
	prio   nftables.ChainPriority
	offset uint32 // of the address in the IPv4 header: daddr or saddr
}

var limitDirs = [2]limitDir{
	{"in", MapLimitIn, "limit_in", nftables.ChainHookPrerouting, *nftables.ChainPriorityMangle, 16},
	{"out", MapLimitOut, "limit_out", nftables.ChainHookPostrouting, *nftables.ChainPriorityNATSource + 10, 12},
}

// limitState is the Maps backend's view of its limits; guarded by
// Maps.mu.
type limitState struct {
	// want is EIP → Mbit/s of the last Apply, limited EIPs only.
	want map[netip.Addr]int
	// have is what is programmed, valid when synced; false after a failed
	// transaction, so the next sync reads the kernel.
	synced bool
	have   map[netip.Addr]int
}

// limitsOf returns the bandwidth of each limited EIP among the programmed
// pairs want (EIP → VIP, from plan): the mapping that plan kept, so of two
// mappings with the same EIP and VIP the one of the first group by name.
func limitsOf(mappings []Mapping, want map[netip.Addr]netip.Addr) map[netip.Addr]int {
	out := map[netip.Addr]int{}
	group := map[netip.Addr]string{}
	for _, mp := range mappings {
		e, v := mp.EIP.Unmap(), mp.VIP.Unmap()
		if w, ok := want[e]; !ok || w != v {
			continue
		}
		if g, seen := group[e]; seen && g <= mp.Group {
			continue
		}
		group[e] = mp.Group
		if mp.Bandwidth > 0 {
			out[e] = mp.Bandwidth
		} else {
			delete(out, e)
		}
	}
	return out
}

// limitName is the name of an EIP's limit object and chain in one
// direction: "bw_203_0_113_5_in". Built from the address only.
func limitName(eip netip.Addr, d limitDir) string {
	a := eip.As4()
	return fmt.Sprintf("bw_%d_%d_%d_%d_%s", a[0], a[1], a[2], a[3], d.name)
}

// limitExpr is the limit object's state for mbps Mbit/s.
func limitExpr(mbps int) *expr.Limit {
	return &expr.Limit{
		Type:  expr.LimitTypePktBytes,
		Rate:  uint64(mbps) * 125_000,
		Unit:  expr.LimitTimeSecond,
		Over:  true,
		Burst: limitBurst,
	}
}

// limitRule is the one rule of a limit chain: over the limit, drop.
func limitRule(name string) []expr.Any {
	return []expr.Any{
		&expr.Objref{Type: int(nftables.ObjTypeLimit), Name: name},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// limitBaseRule is the rule of a base chain: look the address up in the
// direction's verdict map.
func limitBaseRule(d limitDir, setID uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: d.offset, Len: 4},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: d.set, SetID: setID},
	}
}

// limitObjects are the limit table's fixed objects.
type limitObjects struct {
	table *nftables.Table
	sets  [2]*nftables.Set
	base  [2]*nftables.Chain
}

func (m *Maps) limitObjects() limitObjects {
	t := &nftables.Table{Name: m.table + LimitTableSuffix, Family: nftables.TableFamilyIPv4}
	o := limitObjects{table: t}
	accept := nftables.ChainPolicyAccept
	for i, d := range limitDirs {
		o.sets[i] = &nftables.Set{Table: t, Name: d.set, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
		o.base[i] = &nftables.Chain{Name: d.chain, Table: t, Type: nftables.ChainTypeFilter, Hooknum: d.hook,
			Priority: nftables.ChainPriorityRef(d.prio), Policy: &accept}
	}
	return o
}

// limitTx collects the operations of a limit sync and sends them in
// transactions of at most limitMessagesPerBatch messages, each limit's
// operations kept together.
type limitTx struct {
	m    *Maps
	o    limitObjects
	msgs int
	// written counts the limits (EIP and direction) added, replaced or
	// removed, and foreign objects removed.
	written int
	errs    []error
}

// room flushes the pending transaction when n more messages would not fit.
func (tx *limitTx) room(n int) {
	if tx.msgs > 0 && tx.msgs+n > limitMessagesPerBatch {
		tx.flush()
	}
	tx.msgs += n
}

func (tx *limitTx) flush() {
	if tx.msgs == 0 {
		return
	}
	tx.msgs = 0
	err := tx.m.conn.Flush()
	tx.m.batches.Add(1)
	if err != nil {
		tx.errs = append(tx.errs, err)
	}
}

func (tx *limitTx) elem(i int, eip netip.Addr, add bool) error {
	a := eip.As4()
	e := []nftables.SetElement{{Key: a[:], VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: limitName(eip, limitDirs[i])}}}
	if add {
		return tx.m.conn.SetAddElements(tx.o.sets[i], e)
	}
	return tx.m.conn.SetDeleteElements(tx.o.sets[i], e)
}

func (tx *limitTx) obj(name string, mbps int) *nftables.NamedObj {
	o := &nftables.NamedObj{Table: tx.o.table, Name: name, Type: nftables.ObjTypeLimit}
	if mbps > 0 {
		o.Obj = limitExpr(mbps)
	}
	return o
}

func (tx *limitTx) chain(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: tx.o.table}
}

// add queues a new limit: object, chain, rule, element.
func (tx *limitTx) add(i int, eip netip.Addr, mbps int) {
	name := limitName(eip, limitDirs[i])
	tx.room(4)
	c := tx.m.conn
	c.AddObj(tx.obj(name, mbps))
	c.AddChain(tx.chain(name))
	c.AddRule(&nftables.Rule{Table: tx.o.table, Chain: tx.chain(name), Exprs: limitRule(name)})
	if err := tx.elem(i, eip, true); err != nil {
		tx.errs = append(tx.errs, err)
	}
	tx.written++
}

// replace queues a limit's object at a new rate: the rule referencing it
// is flushed, the object deleted and added anew, the rule added again;
// the element that leads to the chain stays.
func (tx *limitTx) replace(i int, eip netip.Addr, mbps int) {
	name := limitName(eip, limitDirs[i])
	tx.room(4)
	c := tx.m.conn
	c.FlushChain(tx.chain(name))
	c.DeleteObject(tx.obj(name, 0))
	c.AddObj(tx.obj(name, mbps))
	c.AddRule(&nftables.Rule{Table: tx.o.table, Chain: tx.chain(name), Exprs: limitRule(name)})
	tx.written++
}

// remove queues a limit's element, chain and object deleted.
func (tx *limitTx) remove(i int, eip netip.Addr) {
	name := limitName(eip, limitDirs[i])
	tx.room(4)
	c := tx.m.conn
	if err := tx.elem(i, eip, false); err != nil {
		tx.errs = append(tx.errs, err)
	}
	c.FlushChain(tx.chain(name))
	c.DelChain(tx.chain(name))
	c.DeleteObject(tx.obj(name, 0))
	tx.written++
}

// create queues the limit table defined afresh with limits (deleted when
// limits is empty), as Maps.rebuild does for the NAT table.
func (tx *limitTx) create(limits map[netip.Addr]int) {
	c := tx.m.conn
	tx.room(2)
	c.AddTable(tx.o.table)
	c.DelTable(tx.o.table)
	if len(limits) == 0 {
		return
	}
	tx.room(1 + 2 + 2*len(limitDirs))
	c.AddTable(tx.o.table)
	for i, d := range limitDirs {
		if err := c.AddSet(tx.o.sets[i], nil); err != nil {
			tx.errs = append(tx.errs, err)
		}
		c.AddChain(tx.o.base[i])
		c.AddRule(&nftables.Rule{Table: tx.o.table, Chain: tx.o.base[i], Exprs: limitBaseRule(d, tx.o.sets[i].ID)})
	}
	for _, eip := range sortedAddrs(limits) {
		for i := range limitDirs {
			tx.add(i, eip, limits[eip])
		}
	}
}

func sortedAddrs[V any](m map[netip.Addr]V) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// syncLimits brings the limit table to m.lim.want: from the difference to
// what it programmed when in sync and full is false, else from a read of
// the kernel. Called with mu, before the NAT is synced, so a new EIP is
// limited before it is mapped.
func (m *Maps) syncLimits(full bool) error {
	tx := &limitTx{m: m, o: m.limitObjects()}
	if full || !m.lim.synced {
		if err := m.repairLimits(tx); err != nil {
			m.lim.synced = false
			return err
		}
	} else {
		m.diffLimits(tx)
	}
	tx.flush()
	m.limitWrites.Add(uint64(tx.written))
	if err := errors.Join(tx.errs...); err != nil {
		m.lim.synced = false
		return fmt.Errorf("eip: program nftables table %s: %w", tx.o.table.Name, err)
	}
	m.lim.have, m.lim.synced = m.lim.want, true
	return nil
}

// diffLimits queues the changes from m.lim.have to m.lim.want.
func (m *Maps) diffLimits(tx *limitTx) {
	have, want := m.lim.have, m.lim.want
	switch {
	case len(have) == 0 && len(want) == 0:
		return
	case len(have) == 0 || len(want) == 0:
		tx.create(want)
		tx.written += len(have) * len(limitDirs)
		return
	}
	for _, eip := range sortedAddrs(have) {
		if _, ok := want[eip]; !ok {
			for i := range limitDirs {
				tx.remove(i, eip)
			}
		}
	}
	for _, eip := range sortedAddrs(want) {
		mbps := want[eip]
		old, ok := have[eip]
		for i := range limitDirs {
			switch {
			case !ok:
				tx.add(i, eip, mbps)
			case old != mbps:
				tx.replace(i, eip, mbps)
			}
		}
	}
}

// limitKernel is the limit table as read back.
type limitKernel struct {
	table bool
	// sound: both verdict maps and both base chains exist as built.
	sound bool
	why   string
	// baseOK: the base chain's one rule is as built.
	baseOK [2]bool
	// elems: EIP → the chain its element goes to ("" for another verdict).
	elems [2]map[netip.Addr]string
	// chains: the regular chains other than the base chains.
	chains map[string]bool
	// objs: limit objects by name.
	objs map[string]*expr.Limit
}

// readLimits reads the limit table: maps and their elements, chains,
// rules of the base chains, limit objects.
func (m *Maps) readLimits(o limitObjects) (limitKernel, error) {
	var k limitKernel
	tables, err := m.conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return k, fmt.Errorf("eip: list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == o.table.Name {
			k.table = true
		}
	}
	if !k.table {
		return k, nil
	}
	k.sound, k.chains, k.objs = true, map[string]bool{}, map[string]*expr.Limit{}
	chains, err := m.conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return k, fmt.Errorf("eip: list nftables chains: %w", err)
	}
	base := map[string]*nftables.Chain{}
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != o.table.Name {
			continue
		}
		if c.Name == limitDirs[0].chain || c.Name == limitDirs[1].chain {
			base[c.Name] = c
			continue
		}
		if c.Hooknum != nil {
			k.sound, k.why = false, fmt.Sprintf("chain %s has a hook", c.Name)
		}
		k.chains[c.Name] = true
	}
	for i, c := range o.base {
		h := base[c.Name]
		if h == nil || h.Type != c.Type || h.Hooknum == nil || *h.Hooknum != *c.Hooknum ||
			h.Priority == nil || *h.Priority != *c.Priority {
			k.sound, k.why = false, fmt.Sprintf("chain %s missing or of another type, hook or priority", c.Name)
			continue
		}
		rules, err := m.conn.GetRules(o.table, c)
		if err != nil {
			return k, fmt.Errorf("eip: list rules of chain %s: %w", c.Name, err)
		}
		k.baseOK[i] = len(rules) == 1 && limitBaseRuleMatches(limitDirs[i], rules[0].Exprs)
	}
	sets, err := m.conn.GetSets(o.table)
	if err != nil {
		return k, fmt.Errorf("eip: list nftables sets: %w", err)
	}
	for i, d := range limitDirs {
		idx := slices.IndexFunc(sets, func(s *nftables.Set) bool { return s.Name == d.set })
		// google/nftables v0.3.0 reads a verdict map's data type into
		// KeyType; accept either field.
		if idx < 0 || !sets[idx].IsMap || sets[idx].Interval || sets[idx].HasTimeout ||
			(sets[idx].KeyType.Name != nftables.TypeVerdict.Name && sets[idx].DataType.Name != nftables.TypeVerdict.Name) {
			k.sound, k.why = false, fmt.Sprintf("map %s missing or not ipv4_addr : verdict", d.set)
			continue
		}
		els, err := m.conn.GetSetElements(sets[idx])
		if err != nil {
			return k, fmt.Errorf("eip: list elements of %s: %w", d.set, err)
		}
		k.elems[i] = make(map[netip.Addr]string, len(els))
		for _, e := range els {
			a, ok := netip.AddrFromSlice(e.Key)
			if !ok || !a.Is4() {
				k.sound, k.why = false, fmt.Sprintf("map %s has a key that is not an IPv4 address", d.set)
				break
			}
			k.elems[i][a] = gotoChain(e.Val)
		}
	}
	objs, err := m.conn.GetNamedObjects(o.table)
	if err != nil {
		return k, fmt.Errorf("eip: list nftables objects: %w", err)
	}
	for _, ob := range objs {
		n, ok := ob.(*nftables.NamedObj)
		if !ok {
			continue
		}
		l, ok := n.Obj.(*expr.Limit)
		if n.Type != nftables.ObjTypeLimit || !ok {
			k.sound, k.why = false, fmt.Sprintf("object %s is not a limit", n.Name)
			continue
		}
		k.objs[n.Name] = l
	}
	return k, nil
}

// gotoChain decodes a verdict map element's data as read back (the
// library leaves it encoded): the chain of a goto, else "".
func gotoChain(val []byte) string {
	ad, err := mnetlink.NewAttributeDecoder(val)
	if err != nil {
		return ""
	}
	ad.ByteOrder = binary.BigEndian
	code, chain := int32(0), ""
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			code = int32(ad.Uint32())
		case unix.NFTA_VERDICT_CHAIN:
			chain = ad.String()
		}
	}
	if ad.Err() != nil || code != unix.NFT_GOTO {
		return ""
	}
	return chain
}

func limitBaseRuleMatches(d limitDir, got []expr.Any) bool {
	want := limitBaseRule(d, 0)
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

// repairLimits reads the limit table and queues what makes it
// m.lim.want: per-limit repairs when the table is sound, the table
// defined afresh when it is not.
func (m *Maps) repairLimits(tx *limitTx) error {
	k, err := m.readLimits(tx.o)
	if err != nil {
		return err
	}
	want := m.lim.want
	switch {
	case !k.table:
		if len(want) > 0 {
			tx.create(want)
		}
		return nil
	case len(want) == 0:
		tx.create(nil)
		tx.written += len(k.objs)
		return nil
	case !k.sound:
		m.log.Warn("eip: nftables limit table damaged, defining it afresh", "table", tx.o.table.Name, "why", k.why)
		tx.create(want)
		return nil
	}
	c := m.conn
	for i, d := range limitDirs {
		if !k.baseOK[i] {
			m.log.Warn("eip: nftables rule changed, restoring it", "table", tx.o.table.Name, "chain", d.chain)
			tx.room(2)
			c.FlushChain(tx.o.base[i])
			c.AddRule(&nftables.Rule{Table: tx.o.table, Chain: tx.o.base[i], Exprs: limitBaseRule(d, 0)})
		}
	}
	// What is no longer wanted, or not ours: elements first, then the
	// chains that reference objects, then the objects.
	wanted := map[string]bool{}
	for eip := range want {
		for _, d := range limitDirs {
			wanted[limitName(eip, d)] = true
		}
	}
	foreign := 0
	for i := range limitDirs {
		for _, eip := range sortedAddrs(k.elems[i]) {
			if _, ok := want[eip]; !ok {
				tx.room(1)
				if err := tx.elem(i, eip, false); err != nil {
					return err
				}
				foreign++
			}
		}
	}
	stray := func(names map[string]bool) []string {
		var out []string
		for n := range names {
			if !wanted[n] {
				out = append(out, n)
			}
		}
		slices.Sort(out)
		return out
	}
	strayChains := stray(k.chains)
	for _, n := range strayChains {
		tx.room(1)
		c.FlushChain(tx.chain(n))
	}
	for _, n := range strayChains {
		tx.room(1)
		c.DelChain(tx.chain(n))
	}
	objNames := map[string]bool{}
	for n := range k.objs {
		objNames[n] = true
	}
	strayObjs := stray(objNames)
	for _, n := range strayObjs {
		tx.room(1)
		c.DeleteObject(tx.obj(n, 0))
	}
	if len(strayChains)+len(strayObjs)+foreign > 0 {
		m.log.Warn("eip: nftables limits drifted, removing what is not wanted", "table", tx.o.table.Name,
			"elements", foreign, "chains", len(strayChains), "objects", len(strayObjs))
	}
	tx.written += foreign + len(strayObjs)
	// Each wanted limit: fine as it is, or reset.
	for _, eip := range sortedAddrs(want) {
		mbps := want[eip]
		for i, d := range limitDirs {
			name := limitName(eip, d)
			elemOK := k.elems[i][eip] == name
			_, elemThere := k.elems[i][eip]
			obj, objThere := k.objs[name]
			objOK := objThere && reflect.DeepEqual(obj, limitExpr(mbps))
			ruleOK := false
			if k.chains[name] {
				got, err := c.GetRules(tx.o.table, tx.chain(name))
				if err != nil {
					return fmt.Errorf("eip: list rules of chain %s: %w", name, err)
				}
				ruleOK = len(got) == 1 && reflect.DeepEqual(got[0].Exprs, limitRule(name))
			}
			if elemOK && objOK && ruleOK {
				continue
			}
			m.log.Warn("eip: nftables limit drifted, repairing", "table", tx.o.table.Name, "eip", eip, "limit", name,
				"element_ok", elemOK, "object_ok", objOK, "rule_ok", ruleOK)
			tx.room(8)
			if elemThere && !elemOK {
				if err := tx.elem(i, eip, false); err != nil {
					return err
				}
			}
			if k.chains[name] {
				c.FlushChain(tx.chain(name))
			} else {
				c.AddChain(tx.chain(name))
			}
			if objThere {
				c.DeleteObject(tx.obj(name, 0))
			}
			c.AddObj(tx.obj(name, mbps))
			c.AddRule(&nftables.Rule{Table: tx.o.table, Chain: tx.chain(name), Exprs: limitRule(name)})
			if !elemOK {
				if err := tx.elem(i, eip, true); err != nil {
					return err
				}
			}
			tx.written++
		}
	}
	return nil
}

// Limits reads back the bandwidth limits programmed: EIP → Mbit/s of
// each EIP whose elements lead to its limit chains and whose two limit
// objects hold the same whole Mbit/s rate. Serialised with Apply.
func (m *Maps) Limits() (map[netip.Addr]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, err := m.readLimits(m.limitObjects())
	out := map[netip.Addr]int{}
	if err != nil || !k.table {
		return out, err
	}
	for eip, in := range k.elems[0] {
		outName := limitName(eip, limitDirs[1])
		if in != limitName(eip, limitDirs[0]) || k.elems[1][eip] != outName {
			continue
		}
		li, lo := k.objs[in], k.objs[outName]
		if li == nil || lo == nil || *li != *lo || li.Rate%125_000 != 0 {
			continue
		}
		out[eip] = int(li.Rate / 125_000)
	}
	return out, nil
}
