package eip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Bandwidth limits of the Maps backend. Each EIP with a Mapping.Bandwidth
// is policed to that rate in each direction, in a table of its own beside
// the NAT table (its name plus LimitTableSuffix). For EIPs at 10 Mbit/s:
//
//	map eip_limit_in  { type ipv4_addr : verdict; elements = { 203.0.113.5 : goto bw_10_in } }
//	map eip_limit_out { type ipv4_addr : verdict; elements = { 203.0.113.5 : goto bw_10_out } }
//	set bw_10_in  { type ipv4_addr; size 1048576; flags dynamic,timeout }
//	set bw_10_out { … }
//	chain limit_in  { type filter hook prerouting priority mangle; ip daddr vmap @eip_limit_in }
//	chain limit_out { type filter hook postrouting priority srcnat + 10; ip saddr vmap @eip_limit_out }
//	chain bw_10_in  { update @bw_10_in { ip daddr timeout 1m limit rate over 1250000 bytes/second burst 131072 bytes } drop }
//	chain bw_10_out { update @bw_10_out { ip saddr timeout 1m limit rate over 1250000 bytes/second burst 131072 bytes } drop }
//
// Keyed by the EIP, on both sides of the NAT: traffic to an EIP is
// policed in prerouting before the DNAT (priority mangle, -150, runs
// before dstnat, -100), where the destination is still the EIP, both for
// connections opened toward the EIP and for replies to connections its
// VIP opened (their SNAT is undone at dstnat); traffic from an EIP in
// postrouting after the SNAT (srcnat + 10), where the source is already
// the EIP, for the same two kinds of connection. So exactly the traffic
// carrying the EIP is limited; traffic reaching the VIP without its EIP
// is not.
//
// An EIP's limit is one element in each verdict map, leading to the
// chain of its rate. That chain keeps one token bucket per EIP: the
// "update" adds the EIP to the rate's set on its first packet with a
// bucket of its own (the limit expression is a template each element
// clones) and charges the packet to it, and the drop rule matches only
// beyond the rate ("over"). So the limits are per EIP while the rules are
// per rate: one rule and one set per bandwidth value in use and
// direction, whatever the number of EIPs. An element idle for a minute
// expires; its bucket was full again long before (the bucket fills in
// one second plus the burst), so a new one is the same.
//
// Per packet the cost does not depend on the number of EIPs: one rule per
// direction and a hash lookup in the verdict map; for a limited EIP one
// more rule and a hash lookup in its rate's set. An EIP without a limit
// has no element: the lookup misses and the packet goes on untouched.
// With no limited EIP the table is removed, so no hook is registered.
//
// Writes are element-level: limiting an EIP at a rate already in use
// adds its two elements, changing its bandwidth replaces them (deleted
// and added in one transaction, so it is never unlimited meanwhile),
// removing its limit deletes them; a rate's chain, rule and set are
// added with its first EIP and removed after its last. An unchanged set
// writes nothing.
//
// Why not one named limit object per EIP reached through an object map
// ("limit name ip daddr map @m"): github.com/google/nftables v0.3.0 can
// make named limit objects and reference one by name (expr.Objref), but
// not an object map (nftables.Set has no object type, SetElement no
// object reference, expr.Objref no set lookup, and expr.Any's methods
// are unexported, so no expression can be added outside the library);
// nor can it give a set element a limit of its own (SetElement carries
// only a counter). A chain per EIP holding a rule that references its
// object would work in the kernel, but every rule is sent with
// NLM_F_ECHO and the library's Flush mistakes the echoes for acks once a
// transaction holds more than about twenty rules, and a reconcile would
// need one rule dump per chain (20,000 at 10,000 EIPs). The per-rate
// chains keep rules few. A tc policer (a flower filter with a police
// action through vishvananda/netlink) was not chosen either: it is bound
// to interfaces, which this backend does not know (the routes pick them),
// needs a clsact qdisc on each, and runs before conntrack and NAT, so
// replies would have to be matched by other keys than new connections.
//
// The bucket (nft_limit over bytes) holds one second at the rate plus
// the burst: the kernel sizes it unit × (rate + burst) / rate with a
// unit of one second. So a bulk TCP transfer, whose window overshoots
// and backs off at each drop, keeps the rate; limitBurst on top makes
// room for TSO-sized packets (up to 64 KiB as the gateway sees them)
// even at 1 Mbit/s. The rate counts IP packet bytes: Bandwidth × 125,000
// bytes/s.

const (
	// LimitTableSuffix is appended to the Maps backend's table name to
	// name its limit table ("vipkeeper_limit").
	LimitTableSuffix = "_limit"
	// MapLimitIn is the verdict map (EIP → goto the chain of its rate)
	// looked up for traffic to an EIP.
	MapLimitIn = "eip_limit_in"
	// MapLimitOut is the verdict map looked up for traffic from an EIP.
	MapLimitOut = "eip_limit_out"
	// limitBurst is added to the kernel's one-second bucket: two 64 KiB
	// GSO packets.
	limitBurst = 128 << 10
	// limitIdle is how long an EIP's bucket is kept without traffic.
	limitIdle = time.Minute
	// limitSetSize bounds the EIPs of one rate in its set.
	limitSetSize = 1 << 20
	// rulesPerTransaction bounds the rules in one limit transaction.
	// google/nftables sends each rule with NLM_F_ECHO; the kernel packs
	// the echoes into datagrams of about 4 KiB, and the library's Flush
	// reads one echo datagram in place of an ack, at most, before it
	// reads the acks, so a transaction's echoes must fit in one.
	rulesPerTransaction = 8
	// opsPerTransaction bounds the messages of one limit transaction: the
	// kernel queues an ack for each on the socket at once, after the
	// transaction, and the default receive buffer holds a few hundred.
	opsPerTransaction = 128
)

// limitDir is one direction of the limits.
type limitDir struct {
	name   string // "in", "out": the suffix of rate chain and set names
	set    string // the verdict map
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
	type kept struct {
		group string
		mbps  int
	}
	first := make(map[netip.Addr]kept)
	for _, mp := range mappings {
		e := mp.EIP.Unmap()
		if w, ok := want[e]; !ok || w != mp.VIP.Unmap() {
			continue
		}
		if k, seen := first[e]; seen && k.group <= mp.Group {
			continue
		}
		first[e] = kept{mp.Group, mp.Bandwidth}
	}
	out := make(map[netip.Addr]int, len(first))
	for e, k := range first {
		if k.mbps > 0 {
			out[e] = k.mbps
		}
	}
	return out
}

// rateName names the chain and the set of a rate in a direction:
// "bw_10_in". Built from the number only.
func rateName(mbps int, d limitDir) string { return fmt.Sprintf("bw_%d_%s", mbps, d.name) }

// parseRateName is rateName's inverse; ok is false for other names.
func parseRateName(name string) (mbps int, dir int, ok bool) {
	rest, found := strings.CutPrefix(name, "bw_")
	if !found {
		return 0, 0, false
	}
	num, suffix, found := strings.Cut(rest, "_")
	if !found {
		return 0, 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || strconv.Itoa(n) != num {
		return 0, 0, false
	}
	for i, d := range limitDirs {
		if d.name == suffix {
			return n, i, true
		}
	}
	return 0, 0, false
}

// limitExpr is the bucket template of a rate of mbps Mbit/s.
func limitExpr(mbps int) *expr.Limit {
	return &expr.Limit{
		Type:  expr.LimitTypePktBytes,
		Rate:  uint64(mbps) * 125_000,
		Unit:  expr.LimitTimeSecond,
		Over:  true,
		Burst: limitBurst,
	}
}

// rateRule is the one rule of a rate chain: charge the packet to its
// EIP's bucket (added on the first packet), drop it when over the rate.
func rateRule(mbps int, d limitDir, setID uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: d.offset, Len: 4},
		&expr.Dynset{SrcRegKey: 1, SetName: rateName(mbps, d), SetID: setID, Operation: unix.NFT_DYNSET_OP_UPDATE,
			Timeout: limitIdle, Exprs: []expr.Any{limitExpr(mbps)}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// baseRule is the rule of a base chain: look the address up in the
// direction's verdict map.
func baseRule(d limitDir, setID uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: d.offset, Len: 4},
		&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: d.set, SetID: setID},
	}
}

// exprsMatch compares rules read back with built ones, set ids aside
// (the kernel does not report them).
func exprsMatch(got, want []expr.Any) bool {
	if len(got) != len(want) {
		return false
	}
	for i, e := range got {
		switch x := e.(type) {
		case *expr.Lookup:
			c := *x
			c.SetID = 0
			e = &c
		case *expr.Dynset:
			c := *x
			c.SetID = 0
			e = &c
		}
		w := want[i]
		switch x := w.(type) {
		case *expr.Lookup:
			c := *x
			c.SetID = 0
			w = &c
		case *expr.Dynset:
			c := *x
			c.SetID = 0
			w = &c
		}
		if !reflect.DeepEqual(e, w) {
			return false
		}
	}
	return true
}

// limitObjects are the limit table's fixed objects.
type limitObjects struct {
	table *nftables.Table
	maps  [2]*nftables.Set
	base  [2]*nftables.Chain
}

func (m *Maps) limitObjects() limitObjects {
	t := &nftables.Table{Name: m.table + LimitTableSuffix, Family: nftables.TableFamilyIPv4}
	o := limitObjects{table: t}
	accept := nftables.ChainPolicyAccept
	for i, d := range limitDirs {
		o.maps[i] = &nftables.Set{Table: t, Name: d.set, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
		o.base[i] = &nftables.Chain{Name: d.chain, Table: t, Type: nftables.ChainTypeFilter, Hooknum: d.hook,
			Priority: nftables.ChainPriorityRef(d.prio), Policy: &accept}
	}
	return o
}

// limitTx queues the operations of a limit sync on the backend's
// connection and sends them as transactions: the rules of one
// transaction are bounded by rulesPerTransaction, and the steps are sent
// in order (rates added, elements changed, rates removed), so no element
// ever leads to a missing chain.
type limitTx struct {
	m     *Maps
	o     limitObjects
	ops   int // messages queued
	rules int // of which rules
	// elements counts the verdict map elements added or deleted.
	elements int
	errs     []error
}

// need makes room for ops messages, rules of them rules, about to be
// queued: what is pending is sent first when they would not fit.
func (tx *limitTx) need(ops, rules int) {
	if tx.ops > 0 && (tx.rules+rules > rulesPerTransaction || tx.ops+ops > opsPerTransaction) {
		tx.flush()
	}
	tx.ops += ops
	tx.rules += rules
}

// flush sends what is queued as one transaction.
func (tx *limitTx) flush() {
	if tx.ops == 0 {
		return
	}
	tx.ops, tx.rules = 0, 0
	err := tx.m.conn.Flush()
	tx.m.batches.Add(1)
	if err != nil {
		tx.errs = append(tx.errs, err)
	}
}

func (tx *limitTx) fail(err error) {
	if err != nil {
		tx.errs = append(tx.errs, err)
	}
}

// elems queues elements of direction i's verdict map added (EIP → goto
// the chain of its rate) or deleted, in messages of elementsPerMessage.
func (tx *limitTx) elems(i int, add bool, limits map[netip.Addr]int) {
	if len(limits) == 0 {
		return
	}
	els := make([]nftables.SetElement, 0, min(len(limits), elementsPerMessage))
	put := func() {
		if len(els) == 0 {
			return
		}
		tx.need(1, 0)
		if add {
			tx.fail(tx.m.conn.SetAddElements(tx.o.maps[i], els))
		} else {
			tx.fail(tx.m.conn.SetDeleteElements(tx.o.maps[i], els))
		}
		tx.elements += len(els)
		els = els[:0]
	}
	for _, eip := range sortedAddrs(limits) {
		a := eip.As4()
		e := nftables.SetElement{Key: a[:]}
		if add {
			// A deleted element is named by its key alone.
			e.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: rateName(limits[eip], limitDirs[i])}
		}
		els = append(els, e)
		if len(els) == elementsPerMessage {
			put()
		}
	}
	put()
}

func (tx *limitTx) chain(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: tx.o.table}
}

func (tx *limitTx) rateSet(name string) *nftables.Set {
	return &nftables.Set{Table: tx.o.table, Name: name, KeyType: nftables.TypeIPAddr, Dynamic: true,
		HasTimeout: true, Size: limitSetSize}
}

// addRate queues a rate's set, chain and rule in direction i; reset
// first flushes the chain and deletes the set, which the kernel holds.
func (tx *limitTx) addRate(mbps, i int, reset bool) {
	name := rateName(mbps, limitDirs[i])
	c := tx.m.conn
	tx.need(5, 1)
	if reset {
		c.FlushChain(tx.chain(name))
		c.DelSet(tx.rateSet(name))
	}
	s := tx.rateSet(name)
	tx.fail(c.AddSet(s, nil))
	c.AddChain(tx.chain(name))
	c.AddRule(&nftables.Rule{Table: tx.o.table, Chain: tx.chain(name), Exprs: rateRule(mbps, limitDirs[i], s.ID)})
}

// delRate queues a chain (a rate's, or a stray one) flushed and deleted,
// and the set of the same name when there is one.
func (tx *limitTx) delRate(name string, set bool) {
	c := tx.m.conn
	tx.need(3, 0)
	c.FlushChain(tx.chain(name))
	c.DelChain(tx.chain(name))
	if set {
		c.DelSet(tx.rateSet(name))
	}
}

// create queues the limit table defined afresh with limits (deleted when
// limits is empty), as Maps.rebuild does for the NAT table.
func (tx *limitTx) create(limits map[netip.Addr]int) {
	c := tx.m.conn
	tx.need(3+3*len(limitDirs), len(limitDirs))
	c.AddTable(tx.o.table)
	c.DelTable(tx.o.table)
	if len(limits) == 0 {
		return
	}
	c.AddTable(tx.o.table)
	for i, d := range limitDirs {
		tx.fail(c.AddSet(tx.o.maps[i], nil))
		c.AddChain(tx.o.base[i])
		c.AddRule(&nftables.Rule{Table: tx.o.table, Chain: tx.o.base[i], Exprs: baseRule(d, tx.o.maps[i].ID)})
	}
	for _, mbps := range rates(limits) {
		for i := range limitDirs {
			tx.addRate(mbps, i, false)
		}
	}
	for i := range limitDirs {
		tx.elems(i, true, limits)
	}
}

// rates lists the distinct bandwidths of limits, sorted.
func rates(limits map[netip.Addr]int) []int {
	var out []int
	for _, r := range limits {
		out = append(out, r)
	}
	slices.Sort(out)
	return slices.Compact(out)
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
			// A read failed, before anything was queued.
			m.lim.synced = false
			return err
		}
	} else {
		m.diffLimits(tx)
	}
	tx.flush()
	m.limitWrites.Add(uint64(tx.elements))
	if err := errors.Join(tx.errs...); err != nil {
		m.lim.synced = false
		return fmt.Errorf("eip: program nftables table %s: %w", tx.o.table.Name, err)
	}
	m.lim.have, m.lim.synced = m.lim.want, true
	return nil
}

// changedLimits splits the change from have to want into the elements to
// delete and to add; an EIP whose rate changed is in both.
func changedLimits(have, want map[netip.Addr]int) (del, add map[netip.Addr]int) {
	del, add = map[netip.Addr]int{}, map[netip.Addr]int{}
	for eip, r := range have {
		if w, ok := want[eip]; !ok || w != r {
			del[eip] = r
		}
	}
	for eip, r := range want {
		if h, ok := have[eip]; !ok || h != r {
			add[eip] = r
		}
	}
	return del, add
}

// diffLimits queues the changes from m.lim.have to m.lim.want.
func (m *Maps) diffLimits(tx *limitTx) {
	have, want := m.lim.have, m.lim.want
	switch {
	case len(have) == 0 && len(want) == 0:
		return
	case len(have) == 0 || len(want) == 0:
		tx.create(want)
		tx.elements += len(have) * len(limitDirs)
		return
	}
	del, add := changedLimits(have, want)
	if len(del)+len(add) == 0 {
		return
	}
	oldRates, newRates := rates(have), rates(want)
	for _, r := range newRates {
		if !slices.Contains(oldRates, r) {
			for i := range limitDirs {
				tx.addRate(r, i, false)
			}
		}
	}
	for i := range limitDirs {
		tx.elems(i, false, del)
		tx.elems(i, true, add)
	}
	for _, r := range oldRates {
		if !slices.Contains(newRates, r) {
			for _, d := range limitDirs {
				tx.delRate(rateName(r, d), true)
			}
		}
	}
}

// limitKernel is the limit table as read back.
type limitKernel struct {
	table bool
	// sound: both verdict maps and both base chains exist as built and
	// every element key is an IPv4 address.
	sound bool
	why   string
	// baseOK: the base chain's one rule is as built.
	baseOK [2]bool
	// elems: EIP → the chain its element goes to ("" for another verdict).
	elems [2]map[netip.Addr]string
	// chains: regular chains other than the base chains, by name, and
	// whether each is a sound rate chain (rule and set as built).
	chains map[string]bool
	// sets: sets other than the verdict maps.
	sets map[string]bool
}

// readLimits reads the limit table: chains and their rules, sets, the
// verdict maps' elements.
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
	k.sound, k.chains, k.sets = true, map[string]bool{}, map[string]bool{}
	sets, err := m.conn.GetSets(o.table)
	if err != nil {
		return k, fmt.Errorf("eip: list nftables sets: %w", err)
	}
	rateSets := map[string]bool{}
	for _, s := range sets {
		if s.Name == MapLimitIn || s.Name == MapLimitOut {
			continue
		}
		k.sets[s.Name] = true
		rateSets[s.Name] = !s.IsMap && s.Dynamic && s.HasTimeout && !s.Interval &&
			s.KeyType.Name == nftables.TypeIPAddr.Name && s.Size == limitSetSize
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
		k.chains[c.Name] = false
		mbps, i, ok := parseRateName(c.Name)
		if !ok || !rateSets[c.Name] {
			continue
		}
		rules, err := m.conn.GetRules(o.table, c)
		if err != nil {
			return k, fmt.Errorf("eip: list rules of chain %s: %w", c.Name, err)
		}
		k.chains[c.Name] = len(rules) == 1 && exprsMatch(rules[0].Exprs, rateRule(mbps, limitDirs[i], 0))
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
		k.baseOK[i] = len(rules) == 1 && exprsMatch(rules[0].Exprs, baseRule(limitDirs[i], 0))
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

// repairLimits reads the limit table and queues what makes it
// m.lim.want: per-rate and per-element repairs when the table is sound,
// the table defined afresh when it is not.
func (m *Maps) repairLimits(tx *limitTx) error {
	k, err := m.readLimits(tx.o)
	if err != nil {
		return err
	}
	want := m.lim.want
	name := tx.o.table.Name
	switch {
	case !k.table:
		if len(want) > 0 {
			tx.create(want)
		}
		return nil
	case len(want) == 0:
		tx.create(nil)
		tx.elements += len(k.elems[0]) + len(k.elems[1])
		return nil
	case !k.sound:
		m.log.Warn("eip: nftables limit table damaged, defining it afresh", "table", name, "why", k.why)
		tx.create(want)
		return nil
	}
	c := m.conn
	for i, d := range limitDirs {
		if !k.baseOK[i] {
			m.log.Warn("eip: nftables rule changed, restoring it", "table", name, "chain", d.chain)
			tx.need(2, 1)
			c.FlushChain(tx.o.base[i])
			c.AddRule(&nftables.Rule{Table: tx.o.table, Chain: tx.o.base[i], Exprs: baseRule(d, 0)})
		}
	}
	wanted := map[string]bool{}
	for _, r := range rates(want) {
		for i, d := range limitDirs {
			n := rateName(r, d)
			wanted[n] = true
			ok, there := k.chains[n]
			if ok {
				continue
			}
			m.log.Warn("eip: nftables limit rate drifted, restoring it", "table", name, "chain", n)
			tx.need(5, 1)
			if there {
				// The chain stays (elements lead to it); its rule and set
				// are made again.
				c.FlushChain(tx.chain(n))
			} else {
				c.AddChain(tx.chain(n))
			}
			if k.sets[n] {
				c.DelSet(tx.rateSet(n))
			}
			s := tx.rateSet(n)
			tx.fail(c.AddSet(s, nil))
			c.AddRule(&nftables.Rule{Table: tx.o.table, Chain: tx.chain(n), Exprs: rateRule(r, limitDirs[i], s.ID)})
		}
	}
	for i, d := range limitDirs {
		del, add := map[netip.Addr]int{}, map[netip.Addr]int{}
		for eip, chain := range k.elems[i] {
			if r, ok := want[eip]; !ok || chain != rateName(r, d) {
				del[eip] = 0 // deleted by key
			}
		}
		for eip, r := range want {
			if k.elems[i][eip] != rateName(r, d) {
				add[eip] = r
			}
		}
		if len(del)+len(add) > 0 {
			m.log.Warn("eip: nftables limit map drifted, repairing", "table", name, "map", d.set,
				"deleted", len(del), "added", len(add))
		}
		tx.elems(i, false, del)
		tx.elems(i, true, add)
	}
	for _, n := range sortedKeys(k.chains) {
		if !wanted[n] {
			m.log.Warn("eip: nftables chain not wanted, removing it", "table", name, "chain", n)
			tx.delRate(n, false)
		}
	}
	for _, n := range sortedKeys(k.sets) {
		if !wanted[n] {
			m.log.Warn("eip: nftables set not wanted, removing it", "table", name, "set", n)
			tx.need(1, 0)
			c.DelSet(tx.rateSet(n))
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Limits reads back the bandwidth limits programmed: EIP → Mbit/s of
// each EIP whose elements in both directions lead to the chains of the
// same rate. Serialised with Apply.
func (m *Maps) Limits() (map[netip.Addr]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, err := m.readLimits(m.limitObjects())
	out := map[netip.Addr]int{}
	if err != nil || !k.table {
		return out, err
	}
	for eip, in := range k.elems[0] {
		r, dir, ok := parseRateName(in)
		if ok && dir == 0 && k.elems[1][eip] == rateName(r, limitDirs[1]) {
			out[eip] = r
		}
	}
	return out, nil
}
