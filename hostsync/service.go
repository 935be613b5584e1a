package hostsync

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Announcer starts the GARP burst for vip with mac as the sender: the
// first round is written before Start returns (the Service calls it
// before the data plane is re-pointed), the later rounds follow on the
// burst's own goroutine until the schedule ends or ctx is cancelled (the
// Service cancels it when ownership moves again). garp.Sender implements
// it.
type Announcer interface {
	Start(ctx context.Context, vip netip.Addr, mac net.HardwareAddr) (garp.Progress, error)
}

// Options configures a Service. Zero values are the defaults.
type Options struct {
	Logger *slog.Logger
	// Announcer sends GARP for a new owner; nil sends none.
	Announcer Announcer
	// Backend programs the EIP mappings; nil programs nothing.
	Backend eip.Backend
	// AllowEmptyDataPlane lets an empty set from a registry holding no
	// group reach a data plane that holds mappings (see dpguard.go);
	// false holds that apply.
	AllowEmptyDataPlane bool
	// Hosts maps a guest's host id to the address the VIP is routed
	// through when that guest owns it (eip.Mapping.NextHop).
	Hosts map[string]netip.Addr
	// Metrics records counters; nil records none.
	Metrics *Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Intn returns a uniform int in [0, n) for random allocation
	// (default math/rand/v2.IntN).
	Intn func(n int) int
	// SplitBrainWindow: a MASTER claim from one member while another
	// member's MASTER claim is younger than this, and that member has not
	// reported leaving MASTER, is a split brain (default 10 s). The window
	// used is at most two advertisement intervals of the group (see
	// splitWindow), so an ordinary failover is never taken for one.
	SplitBrainWindow time.Duration
	// StaleClaimAge: a MASTER claim stamped (by the guest) longer ago than
	// this is recorded but does not move the VIP, since a newer event may
	// already have moved it (default 2 min).
	StaleClaimAge time.Duration
	// AnnounceTimeout bounds one GARP burst (default 10 s).
	AnnounceTimeout time.Duration
	// ApplyTimeout bounds one data-plane apply (default 30 s).
	ApplyTimeout time.Duration
	// Queue, when set, keeps claims and observations that find the
	// registry unreachable (see Claim, ReplayQueue), and metadata is then
	// served from the last document read per guest. The caller closes it
	// after the Service.
	Queue *ClaimQueue
	// UnreachableAfter is how long a claim, observation or metadata read
	// waits for the registry before it counts as unreachable (with a
	// Queue only; default DefaultUnreachableAfter, below the agent's
	// report timeout).
	UnreachableAfter time.Duration
}

// Service is hostsync's core: the registry with the platform's rules (the
// admin operations), the claims engine that moves a VIP's owner, and the
// data plane that follows it. Its methods are safe for concurrent use.
type Service struct {
	// Immutable after New.
	store            registry.Store
	log              *slog.Logger
	announcer        Announcer
	backend          eip.Backend
	allowEmpty       bool
	hosts            map[string]netip.Addr
	metrics          *Metrics
	now              func() time.Time
	intn             func(int) int
	window           time.Duration
	staleAge         time.Duration
	announceLimit    time.Duration
	applyLimit       time.Duration
	queue            *ClaimQueue
	unreachableAfter time.Duration
	queueKick        chan struct{} // buffered 1: a claim was queued

	// replayMu serializes ReplayQueue.
	replayMu sync.Mutex

	// applyMu serializes data-plane applies, each of the complete set read
	// fresh from the registry, so the last apply always reflects the
	// latest state.
	applyMu sync.Mutex

	// announces tracks running GARP bursts.
	announces sync.WaitGroup

	mu sync.Mutex // guards the fields below
	// announcing holds the cancel func of the running burst per group.
	announcing map[string]*announcement
	vips       map[netip.Addr]string // VIP → group id, for WatchVIP
	rounds     map[netip.Addr]*probeRound
	holds      map[netip.Addr]*splitHold // VIPs in a split brain
	probeKick  chan struct{}             // buffered 1: a probe is wanted soon
	// lastMetadata is the last metadata document served to each guest
	// address, served again while the registry is unreachable.
	lastMetadata map[netip.Addr]cachedMetadata
	stats        stats
	closed       bool
}

type announcement struct {
	cancel context.CancelFunc
}

type stats struct {
	claims, rejected, moves, splitBrains uint64
	lastMove                             time.Time
	lastSplit                            *api.SplitBrain
	lastApply                            time.Time
	lastApplyErr                         string
	dataPlaneHeld                        string     // why the last apply was held (dpguard.go)
	moveLog                              []api.Move // bounded by maxMoveLog
}

// maxMoveLog bounds the in-memory log of recent moves.
const maxMoveLog = 64

// logMove appends m to the bounded move log.
func (s *Service) logMove(m api.Move) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.moveLog = append(s.stats.moveLog, m)
	if n := len(s.stats.moveLog); n > maxMoveLog {
		s.stats.moveLog = append([]api.Move(nil), s.stats.moveLog[n-maxMoveLog:]...)
	}
}

// New returns a Service on store. Call Close when done (it stops GARP
// bursts in flight; the store is the caller's to close).
func New(ctx context.Context, store registry.Store, opts Options) (*Service, error) {
	s := &Service{
		store:            store,
		log:              opts.Logger,
		announcer:        opts.Announcer,
		backend:          opts.Backend,
		allowEmpty:       opts.AllowEmptyDataPlane,
		hosts:            opts.Hosts,
		metrics:          opts.Metrics,
		now:              opts.Now,
		intn:             opts.Intn,
		window:           opts.SplitBrainWindow,
		staleAge:         opts.StaleClaimAge,
		announceLimit:    opts.AnnounceTimeout,
		applyLimit:       opts.ApplyTimeout,
		announcing:       map[string]*announcement{},
		rounds:           map[netip.Addr]*probeRound{},
		holds:            map[netip.Addr]*splitHold{},
		probeKick:        make(chan struct{}, 1),
		queue:            opts.Queue,
		unreachableAfter: opts.UnreachableAfter,
		queueKick:        make(chan struct{}, 1),
		lastMetadata:     map[netip.Addr]cachedMetadata{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.intn == nil {
		s.intn = rand.IntN
	}
	if s.window <= 0 {
		s.window = 10 * time.Second
	}
	if s.staleAge <= 0 {
		s.staleAge = 2 * time.Minute
	}
	if s.announceLimit <= 0 {
		s.announceLimit = 10 * time.Second
	}
	if s.unreachableAfter <= 0 {
		s.unreachableAfter = DefaultUnreachableAfter
	}
	if s.applyLimit <= 0 {
		s.applyLimit = 30 * time.Second
	}
	err := s.bounded(ctx, s.refreshVIPs)
	if err != nil && s.queue != nil && errors.Is(err, registry.ErrUnavailable) {
		err = s.startFromView(err)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Close cancels GARP bursts in flight and waits for them.
func (s *Service) Close() error {
	s.mu.Lock()
	s.closed = true
	for g, a := range s.announcing {
		a.cancel()
		delete(s.announcing, g)
	}
	s.mu.Unlock()
	s.announces.Wait()
	return nil
}

func (s *Service) nowUTC() time.Time { return s.now().UTC() }

// Names and ids end up in keepalived.conf and the metadata; these are
// vrrp's patterns (group.id, group.name, members[].name).
var (
	reID        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	reGroupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
	reGuestName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	reAttr      = regexp.MustCompile(`^[A-Za-z0-9._-]{0,64}$`)
)

func checkID(field, v string) error {
	if !reID.MatchString(v) {
		return invalid(field, "%q is not an id (1–64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", v)
	}
	return nil
}

// findGroup reads a group by id, then by name.
func findGroup(tx registry.Tx, ref string) (registry.Group, error) {
	g, err := registry.Get[registry.Group](tx, ref)
	if err == nil || !errors.Is(err, registry.ErrNotFound) {
		return g, err
	}
	groups, err := registry.List[registry.Group](tx, "")
	if err != nil {
		return registry.Group{}, err
	}
	for _, g := range groups {
		if g.Name == ref {
			return g, nil
		}
	}
	return registry.Group{}, fmt.Errorf("%w: no group with id or name %q", ErrNotFound, ref)
}

// findGuest reads a guest by id, then by name.
func findGuest(tx registry.Tx, ref string) (registry.Guest, error) {
	g, err := registry.Get[registry.Guest](tx, ref)
	if err == nil || !errors.Is(err, registry.ErrNotFound) {
		return g, err
	}
	guests, err := registry.List[registry.Guest](tx, "")
	if err != nil {
		return registry.Guest{}, err
	}
	for _, g := range guests {
		if g.Name == ref {
			return g, nil
		}
	}
	return registry.Guest{}, fmt.Errorf("%w: no guest with id or name %q", ErrNotFound, ref)
}

func getNetwork(tx registry.Tx, id string) (registry.Network, error) {
	n, err := registry.Get[registry.Network](tx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return n, fmt.Errorf("%w: no network %q", ErrNotFound, id)
	}
	return n, err
}

func guestByAddr(tx registry.Tx, a netip.Addr) (registry.Guest, error) {
	idx, err := registry.Get[registry.AddrIndex](tx, a.Unmap().String())
	if errors.Is(err, registry.ErrNotFound) {
		return registry.Guest{}, fmt.Errorf("%w: no guest has address %s", ErrNotFound, a)
	}
	if err != nil {
		return registry.Guest{}, err
	}
	g, err := registry.Get[registry.Guest](tx, idx.GuestID)
	if errors.Is(err, registry.ErrNotFound) {
		return g, fmt.Errorf("%w: no guest has address %s", ErrNotFound, a)
	}
	return g, err
}

// members returns the group's guests in join order.
func members(tx registry.Tx, g registry.Group) ([]registry.Guest, error) {
	out := make([]registry.Guest, 0, len(g.Members))
	for _, m := range g.Members {
		gu, err := registry.Get[registry.Guest](tx, m.GuestID)
		if err != nil {
			return nil, fmt.Errorf("hostsync: member %s of group %s: %w", m.GuestID, g.Name, err)
		}
		out = append(out, gu)
	}
	return out, nil
}

// CreateNetwork registers an IPv4 subnet.
func (s *Service) CreateNetwork(ctx context.Context, req api.NetworkCreate) (api.NetworkInfo, error) {
	n, err := buildNetwork(req, s.nowUTC())
	if err != nil {
		return api.NetworkInfo{}, err
	}
	err = s.store.Update(ctx, func(tx registry.Tx) error {
		nets, err := registry.List[registry.Network](tx, "")
		if err != nil {
			return err
		}
		for _, o := range nets {
			if o.ID == n.ID {
				return refuse(ErrExists, "network %s", n.ID)
			}
			if o.CIDR.Overlaps(n.CIDR) {
				return refuse(ErrNetworkOverlap, "%s overlaps network %s (%s)", n.CIDR, o.ID, o.CIDR)
			}
		}
		return registry.Put(tx, n)
	})
	if err != nil {
		return api.NetworkInfo{}, err
	}
	s.log.Info("network created", "op", "network-create", "network", n.ID, "cidr", n.CIDR)
	return networkInfo(n, 0), nil
}

func buildNetwork(req api.NetworkCreate, now time.Time) (registry.Network, error) {
	if err := checkID("id", req.ID); err != nil {
		return registry.Network{}, err
	}
	if req.Name != "" && !reAttr.MatchString(req.Name) {
		return registry.Network{}, invalid("name", "%q is not allowed (A-Z a-z 0-9 . _ -)", req.Name)
	}
	if !req.CIDR.IsValid() {
		return registry.Network{}, invalid("cidr", "is required, e.g. 192.0.2.0/24")
	}
	if !req.CIDR.Addr().Is4() || req.CIDR.Addr().Zone() != "" {
		return registry.Network{}, invalid("cidr", "%s is not IPv4; only IPv4 networks are supported (gratuitous ARP is IPv4)", req.CIDR)
	}
	if b := req.CIDR.Bits(); b < 16 || b > 30 {
		return registry.Network{}, invalid("cidr", "%s: prefix /%d is not supported, allowed /16 to /30", req.CIDR, b)
	}
	if req.VPCID != "" && !reID.MatchString(req.VPCID) {
		return registry.Network{}, invalid("vpc_id", "%q is not an id", req.VPCID)
	}
	n := registry.Network{
		ID: req.ID, Name: req.Name, CIDR: req.CIDR.Masked(), VPCID: req.VPCID,
		Kind: registry.NetworkKind(req.Kind), CreatedAt: now,
	}
	switch n.Kind {
	case "":
		n.Kind = registry.KindGuest
	case registry.KindGuest, registry.KindEIP:
	default:
		return registry.Network{}, invalid("kind", "%q is not one of guest, eip", req.Kind)
	}
	netAddr, bcast := n.CIDR.Addr(), lastAddr(n.CIDR)
	host := func(field string, a netip.Addr) error {
		switch {
		case !n.CIDR.Contains(a):
			return invalid(field, "%s is not in %s", a, n.CIDR)
		case a == netAddr:
			return invalid(field, "%s is the network address", a)
		case a == bcast:
			return invalid(field, "%s is the broadcast address", a)
		}
		return nil
	}
	n.Gateway = req.Gateway.Unmap()
	if !n.Gateway.IsValid() {
		n.Gateway = netAddr.Next()
	}
	if err := host("gateway", n.Gateway); err != nil {
		return registry.Network{}, err
	}
	n.RangeStart, n.RangeEnd = req.RangeStart.Unmap(), req.RangeEnd.Unmap()
	if !n.RangeStart.IsValid() {
		n.RangeStart = netAddr.Next()
		if n.RangeStart == n.Gateway {
			n.RangeStart = n.RangeStart.Next()
		}
	}
	if !n.RangeEnd.IsValid() {
		n.RangeEnd = bcast.Prev()
		if n.RangeEnd == n.Gateway {
			n.RangeEnd = n.RangeEnd.Prev()
		}
	}
	if err := host("range_start", n.RangeStart); err != nil {
		return registry.Network{}, err
	}
	if err := host("range_end", n.RangeEnd); err != nil {
		return registry.Network{}, err
	}
	if n.RangeStart.Compare(n.RangeEnd) > 0 {
		return registry.Network{}, invalid("range_start", "%s is after range_end %s", n.RangeStart, n.RangeEnd)
	}
	for i, r := range req.Reserved {
		r = r.Unmap()
		field := fmt.Sprintf("reserved[%d]", i)
		if err := host(field, r); err != nil {
			return registry.Network{}, err
		}
		if r == n.Gateway {
			return registry.Network{}, invalid(field, "%s is the gateway", r)
		}
		if !n.IsReserved(r) {
			n.Reserved = append(n.Reserved, r)
		}
	}
	slices.SortFunc(n.Reserved, netip.Addr.Compare)
	return n, nil
}

// RegisterGuest registers a VM and leases its address.
func (s *Service) RegisterGuest(ctx context.Context, req api.GuestRegister) (api.GuestInfo, error) {
	if err := checkID("id", req.ID); err != nil {
		return api.GuestInfo{}, err
	}
	if !reGuestName.MatchString(req.Name) {
		return api.GuestInfo{}, invalid("name", "%q is not a guest name (1–63 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", req.Name)
	}
	if req.NICs < 1 || req.NICs > 64 {
		return api.GuestInfo{}, invalid("nics", "%d is out of range, allowed 1–64", req.NICs)
	}
	hw, err := net.ParseMAC(req.MAC)
	if err != nil || len(hw) != 6 || hw[0]&1 != 0 {
		return api.GuestInfo{}, invalid("mac", "%q is not a unicast MAC address such as 52:54:00:12:34:56", req.MAC)
	}
	if req.Host != "" && !reID.MatchString(req.Host) {
		return api.GuestInfo{}, invalid("host", "%q is not a host id", req.Host)
	}
	if !req.Address.IsValid() {
		return api.GuestInfo{}, invalid("address", "is required")
	}
	g := registry.Guest{
		ID: req.ID, Name: req.Name, NICs: req.NICs, NetworkID: req.NetworkID,
		Address: req.Address.Unmap(), MAC: hw.String(), Host: req.Host, CreatedAt: s.nowUTC(),
	}
	err = s.store.Update(ctx, func(tx registry.Tx) error {
		n, err := getNetwork(tx, g.NetworkID)
		if err != nil {
			return err
		}
		if n.Kind != registry.KindGuest {
			return refuse(ErrNotGuestNetwork, "network %s is of kind %s", n.ID, n.Kind)
		}
		guests, err := registry.List[registry.Guest](tx, "")
		if err != nil {
			return err
		}
		for _, o := range guests {
			switch {
			case o.ID == g.ID:
				return refuse(ErrExists, "guest %s", g.ID)
			case o.Name == g.Name:
				return refuse(ErrExists, "a guest named %s (%s)", g.Name, o.ID)
			case o.MAC == g.MAC:
				return refuse(ErrExists, "MAC %s is guest %s's", g.MAC, o.Name)
			}
		}
		if err := leaseExact(tx, n, g.Address, registry.LeaseGuest, g.ID); err != nil {
			return err
		}
		if err := registry.Put(tx, registry.AddrIndex{Address: g.Address, GuestID: g.ID}); err != nil {
			return err
		}
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GuestInfo{}, err
	}
	s.log.Info("guest registered", "op", "guest-register", "guest", g.Name, "address", g.Address, "network", g.NetworkID)
	return guestInfo(g), nil
}

// leaseExact leases addr (which the caller does not choose from a pool: a
// guest's or an EIP's given address).
func leaseExact(tx registry.Tx, n registry.Network, addr netip.Addr, kind registry.LeaseKind, holder string) error {
	if !n.CIDR.Contains(addr) {
		return refuse(ErrAddressNotInNetwork, "%s is not in network %s (%s)", addr, n.ID, n.CIDR)
	}
	if addr == n.CIDR.Addr() || addr == lastAddr(n.CIDR) || addr == n.Gateway {
		return refuse(ErrAddressUnavailable, "%s is the network, broadcast or gateway address of network %s", addr, n.ID)
	}
	l, err := registry.Get[registry.Lease](tx, registry.LeaseKey(n.ID, addr))
	switch {
	case err == nil:
		return refuse(ErrAddressInUse, "%s in network %s is in use by %s %s", addr, n.ID, l.Kind, l.Holder)
	case !errors.Is(err, registry.ErrNotFound):
		return err
	}
	return registry.Put(tx, registry.Lease{NetworkID: n.ID, Address: addr, Kind: kind, Holder: holder})
}

// CreateEIP allocates a public address from an EIP network.
func (s *Service) CreateEIP(ctx context.Context, req api.EIPCreate) (api.EIPInfo, error) {
	if err := checkEIPAttrs(req.Bandwidth, req.BGPType, req.ChargeType); err != nil {
		return api.EIPInfo{}, err
	}
	if req.ID != "" {
		if err := checkID("id", req.ID); err != nil {
			return api.EIPInfo{}, err
		}
	}
	var e registry.EIP
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		e, err = s.allocEIP(tx, req)
		return err
	})
	if err != nil {
		return api.EIPInfo{}, err
	}
	s.log.Info("eip created", "op", "eip-create", "eip", e.ID, "address", e.Address)
	return eipInfo(e), nil
}

func checkEIPAttrs(bw int, bgp, charge string) error {
	if bw < 0 || bw > 1_000_000 {
		return invalid("bandwidth", "%d is out of range, allowed 0–1000000 Mbit/s", bw)
	}
	if !reAttr.MatchString(bgp) {
		return invalid("bgp_type", "%q is not allowed (A-Z a-z 0-9 . _ -)", bgp)
	}
	switch charge {
	case "", "traffic", "bandwidth":
	default:
		return invalid("charge_type", "%q is not one of traffic, bandwidth", charge)
	}
	return nil
}

// allocEIP allocates and writes an EIP record and its lease (inside Update).
func (s *Service) allocEIP(tx registry.Tx, req api.EIPCreate) (registry.EIP, error) {
	nets, err := registry.List[registry.Network](tx, "")
	if err != nil {
		return registry.EIP{}, err
	}
	var cands []registry.Network
	for _, n := range nets {
		switch {
		case req.NetworkID != "" && n.ID == req.NetworkID:
			if n.Kind != registry.KindEIP {
				return registry.EIP{}, refuse(ErrNotEIPNetwork, "network %s is of kind %s", n.ID, n.Kind)
			}
			cands = append(cands, n)
		case req.NetworkID == "" && n.Kind == registry.KindEIP &&
			(!req.IPAddr.IsValid() || n.CIDR.Contains(req.IPAddr.Unmap())):
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		switch {
		case req.NetworkID != "":
			return registry.EIP{}, fmt.Errorf("%w: no network %q", ErrNotFound, req.NetworkID)
		case req.IPAddr.IsValid():
			return registry.EIP{}, refuse(ErrAddressNotInNetwork, "%s is in no EIP network", req.IPAddr)
		}
		return registry.EIP{}, refuse(ErrNotEIPNetwork, "no EIP network is registered (network-create --kind eip)")
	}
	var lastErr error
	for _, n := range cands {
		addr, err := allocate(tx, n, allocRequest{Want: req.IPAddr, Require: req.IPAddr.IsValid()}, s.intn)
		if errors.Is(err, ErrNetworkFull) {
			lastErr = err
			continue
		}
		if err != nil {
			return registry.EIP{}, err
		}
		id := req.ID
		if id == "" {
			id = "eip-" + strings.ReplaceAll(addr.String(), ".", "-")
		}
		if _, err := registry.Get[registry.EIP](tx, id); err == nil {
			return registry.EIP{}, refuse(ErrExists, "EIP %s", id)
		} else if !errors.Is(err, registry.ErrNotFound) {
			return registry.EIP{}, err
		}
		e := registry.EIP{
			ID: id, Address: addr, NetworkID: n.ID, Bandwidth: req.Bandwidth, BGPType: req.BGPType,
			ChargeType: req.ChargeType, AutoDeallocate: req.AutoDeallocate, CreatedAt: s.nowUTC(),
		}
		if err := registry.Put(tx, registry.Lease{NetworkID: n.ID, Address: addr, Kind: registry.LeaseEIP, Holder: id}); err != nil {
			return registry.EIP{}, err
		}
		return e, registry.Put(tx, e)
	}
	return registry.EIP{}, lastErr
}

// CreateGroup creates an instance group with its VRRP settings.
func (s *Service) CreateGroup(ctx context.Context, req api.GroupCreate) (api.GroupView, error) {
	g, err := s.buildGroup(req)
	if err != nil {
		return api.GroupView{}, err
	}
	err = s.store.Update(ctx, func(tx registry.Tx) error {
		groups, err := registry.List[registry.Group](tx, "")
		if err != nil {
			return err
		}
		for _, o := range groups {
			if o.ID == g.ID || o.Name == g.Name || o.ID == g.Name || o.Name == g.ID {
				return refuse(ErrExists, "group %s (%s)", o.Name, o.ID)
			}
		}
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("group created", "op", "instancegroup-create", "group", g.Name)
	return s.ShowGroup(ctx, g.ID)
}

func (s *Service) buildGroup(req api.GroupCreate) (registry.Group, error) {
	if !reGroupName.MatchString(req.Name) {
		return registry.Group{}, invalid("name", "%q is not a group name (1–32 of A-Z a-z 0-9 . _ -, starting with a letter or digit)", req.Name)
	}
	id := req.ID
	if id == "" {
		id = "ig-" + req.Name
	}
	if err := checkID("id", id); err != nil {
		return registry.Group{}, err
	}
	set := registry.Settings{
		VRRPVersion: req.VRRPVersion, AdvertInt: req.AdvertInt, AuthPass: req.AuthPass, Unicast: req.Unicast,
		NoPreempt: req.NoPreempt, PreemptDelay: req.PreemptDelay, Checks: req.Checks,
	}
	if set.VRRPVersion == 0 {
		set.VRRPVersion = 2
	}
	if set.VRRPVersion == 3 && set.AuthPass != "" {
		return registry.Group{}, invalid("auth_pass", "authentication is only defined for VRRPv2")
	}
	if set.VRRPVersion == 2 && set.AuthPass == "" {
		set.AuthPass = randomPass()
	}
	g := registry.Group{ID: id, Name: req.Name, Settings: set, Revision: 1, CreatedAt: s.nowUTC()}
	// The settings are checked by vrrp's own rules on a probe document, so
	// a group can never be created with settings its metadata would fail.
	probe := buildMetadata(g, &registry.VIPBinding{Address: netip.MustParseAddr("192.0.2.10"), VRID: 1},
		netip.MustParsePrefix("192.0.2.0/24"), []registry.Guest{{ID: "probe", Name: "probe", Address: netip.MustParseAddr("192.0.2.11")}},
		[]registry.Member{{GuestID: "probe", Priority: 100}}, nil)
	if err := probe.Validate(); err != nil {
		var fe *vrrp.FieldError
		if errors.As(err, &fe) {
			return registry.Group{}, invalid(fe.Path, "%s", fe.Msg)
		}
		return registry.Group{}, invalid("", "%v", err)
	}
	return g, nil
}

// passAlphabet is what a generated VRRP password is made of (a subset of
// what vrrp accepts).
const passAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"

// randomPass returns 8 random characters for VRRPv2 PASS authentication
// (keepalived uses at most 8).
func randomPass() string {
	var b [8]byte
	// crypto/rand.Read never returns an error (Go 1.24+).
	_, _ = crand.Read(b[:])
	for i := range b {
		b[i] = passAlphabet[int(b[i])%len(passAlphabet)]
	}
	return string(b[:])
}

// DeleteGroup deletes a group without members and EIP, releasing its VIP.
func (s *Service) DeleteGroup(ctx context.Context, ref string) error {
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = findGroup(tx, ref); err != nil {
			return err
		}
		if err := checkDelete(g); err != nil {
			return err
		}
		if g.VIP != nil {
			if err := tx.Delete(registry.BucketLeases, registry.LeaseKey(g.VIP.NetworkID, g.VIP.Address)); err != nil {
				return err
			}
		}
		if err := tx.Delete(registry.BucketOwners, g.ID); err != nil {
			return err
		}
		if err := deleteRoles(tx, g.ID); err != nil {
			return err
		}
		return tx.Delete(registry.BucketGroups, g.ID)
	})
	if err != nil {
		return err
	}
	s.stopAnnounce(g.ID)
	s.log.Info("group deleted", "op", "instancegroup-delete", "group", g.Name)
	return s.refreshVIPs(ctx)
}

func deleteRoles(tx registry.Tx, group string) error {
	var keys []string
	if err := tx.ForEach(registry.BucketRoles, group+"/", func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.Delete(registry.BucketRoles, k); err != nil {
			return err
		}
	}
	return nil
}

// nextPriority is the priority of a new member: one below the lowest
// present (first member 100, next 99, ...), so priorities are unique and
// stable; when that would fall below 1, the highest free one.
func nextPriority(ms []registry.Member) int {
	if len(ms) == 0 {
		return 100
	}
	used := map[int]bool{}
	low := 255
	for _, m := range ms {
		used[m.Priority] = true
		low = min(low, m.Priority)
	}
	if low > 1 {
		return low - 1
	}
	for p := 254; p >= 1; p-- {
		if !used[p] {
			return p
		}
	}
	return 0 // unreachable: MaxMembers < 254
}

// Join adds guests (ids or names) to a group, all or none.
func (s *Service) Join(ctx context.Context, ref string, guests []string) (api.GroupView, error) {
	if len(guests) == 0 {
		return api.GroupView{}, invalid("guests", "name at least one guest")
	}
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = findGroup(tx, ref); err != nil {
			return err
		}
		for _, gr := range guests {
			gu, err := findGuest(tx, gr)
			if err != nil {
				return err
			}
			if err := checkJoin(g, gu); err != nil {
				return err
			}
			g.Members = append(g.Members, registry.Member{GuestID: gu.ID, Priority: nextPriority(g.Members), JoinedAt: s.nowUTC()})
			gu.Group = g.ID
			if err := registry.Put(tx, gu); err != nil {
				return err
			}
		}
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("guests joined", "op", "instancegroup-join", "group", g.Name, "guests", guests)
	return s.ShowGroup(ctx, g.ID)
}

// Leave removes guests (ids or names) from a group, all or none. When the
// VIP's owner leaves, the group has no owner until the next MASTER claim.
func (s *Service) Leave(ctx context.Context, ref string, guests []string) (api.GroupView, error) {
	if len(guests) == 0 {
		return api.GroupView{}, invalid("guests", "name at least one guest")
	}
	var g registry.Group
	ownerLeft := false
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		ownerLeft = false
		var err error
		if g, err = findGroup(tx, ref); err != nil {
			return err
		}
		owner, err := getOwner(tx, g.ID)
		if err != nil {
			return err
		}
		for _, gr := range guests {
			gu, err := findGuest(tx, gr)
			if err != nil {
				return err
			}
			if _, ok := g.Member(gu.ID); !ok {
				return refuse(ErrNotMember, "guest %s is not in group %s", gu.Name, g.Name)
			}
			g.Members = slices.DeleteFunc(g.Members, func(m registry.Member) bool { return m.GuestID == gu.ID })
			gu.Group = ""
			if err := registry.Put(tx, gu); err != nil {
				return err
			}
			if err := tx.Delete(registry.BucketRoles, registry.RoleKey(g.ID, gu.ID)); err != nil {
				return err
			}
			if owner.GuestID == gu.ID {
				if _, err := registry.SwapOwner(tx, owner.Revision, registry.Owner{Group: g.ID, Since: s.nowUTC(), Source: "leave"}); err != nil {
					return err
				}
				ownerLeft = true
			}
		}
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("guests left", "op", "instancegroup-leave", "group", g.Name, "guests", guests)
	if ownerLeft {
		s.stopAnnounce(g.ID)
		s.applyDataPlane(ctx)
	}
	return s.ShowGroup(ctx, g.ID)
}

// getOwner reads the owner record; a group never owned has the zero owner
// at revision 0.
func getOwner(tx registry.Tx, group string) (registry.Owner, error) {
	o, err := registry.Get[registry.Owner](tx, group)
	if errors.Is(err, registry.ErrNotFound) {
		return registry.Owner{Group: group}, nil
	}
	return o, err
}

// AttachNetwork binds a VIP to a group (climc instancegroup-attachnetwork).
func (s *Service) AttachNetwork(ctx context.Context, ref string, req api.AttachNetwork) (api.GroupView, error) {
	switch req.AllocDir {
	case "", api.AllocStepUp, api.AllocStepDown, api.AllocRandom:
	default:
		return api.GroupView{}, invalid("alloc_dir", "%q is not one of stepup, stepdown, random", req.AllocDir)
	}
	if req.RequireDesignatedIP && !req.IPAddr.IsValid() {
		return api.GroupView{}, invalid("require_designated_ip", "needs ip_addr (--ip-addr)")
	}
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = findGroup(tx, ref); err != nil {
			return err
		}
		ms, err := members(tx, g)
		if err != nil {
			return err
		}
		if len(ms) == 0 && req.NetworkID == "" && req.IPAddr.IsValid() && g.VIP == nil {
			// A group without members given only an address: the guest
			// network holding that address is the one chosen.
			if req.NetworkID, err = networkOf(tx, req.IPAddr); err != nil {
				return err
			}
		}
		netID, err := checkAttach(g, ms, req)
		if err != nil {
			return err
		}
		n, err := getNetwork(tx, netID)
		if err != nil {
			return err
		}
		if n.Kind != registry.KindGuest {
			return refuse(ErrNotGuestNetwork, "network %s is of kind %s", n.ID, n.Kind)
		}
		addr, err := allocate(tx, n, allocRequest{Want: req.IPAddr, Dir: req.AllocDir, Reserved: req.Reserved, Require: req.RequireDesignatedIP}, s.intn)
		if err != nil {
			return err
		}
		vrid, err := pickVRID(tx, g, n.ID)
		if err != nil {
			return err
		}
		if err := registry.Put(tx, registry.Lease{NetworkID: n.ID, Address: addr, Kind: registry.LeaseVIP, Holder: g.ID}); err != nil {
			return err
		}
		g.VIP = &registry.VIPBinding{Address: addr, NetworkID: n.ID, Reserved: req.Reserved, VRID: vrid, BoundAt: s.nowUTC()}
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("vip attached", "op", "instancegroup-attachnetwork", "group", g.Name, "vip", g.VIP.Address, "network", g.VIP.NetworkID)
	if err := s.refreshVIPs(ctx); err != nil {
		return api.GroupView{}, err
	}
	return s.ShowGroup(ctx, g.ID)
}

// networkOf finds the guest network holding a.
func networkOf(tx registry.Tx, a netip.Addr) (string, error) {
	nets, err := registry.List[registry.Network](tx, "")
	if err != nil {
		return "", err
	}
	for _, n := range nets {
		if n.Kind == registry.KindGuest && n.CIDR.Contains(a.Unmap()) {
			return n.ID, nil
		}
	}
	return "", refuse(ErrAddressNotInNetwork, "%s is in no guest network", a)
}

// pickVRID derives the group's virtual_router_id from its id (as vrrp
// does) and, when another group with a VIP in the same network already
// uses it, takes the next free one: two VRRP instances with one id on one
// segment would fight.
func pickVRID(tx registry.Tx, g registry.Group, network string) (int, error) {
	groups, err := registry.List[registry.Group](tx, "")
	if err != nil {
		return 0, err
	}
	used := map[int]bool{}
	for _, o := range groups {
		if o.ID != g.ID && o.VIP != nil && o.VIP.NetworkID == network {
			used[o.VIP.VRID] = true
		}
	}
	first := vrrp.DeriveVRID(g.ID)
	for k := range 255 {
		if id := (first-1+k)%255 + 1; !used[id] {
			return id, nil
		}
	}
	return 0, refuse(ErrNetworkFull, "all 255 virtual_router_ids of network %s are in use", network)
}

// DetachNetwork unbinds a group's VIP (refused while an EIP is bound).
func (s *Service) DetachNetwork(ctx context.Context, ref string, req api.DetachNetwork) (api.GroupView, error) {
	var g registry.Group
	var vip netip.Addr
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = findGroup(tx, ref); err != nil {
			return err
		}
		if err := checkDetach(g, req); err != nil {
			return err
		}
		vip = g.VIP.Address
		if err := tx.Delete(registry.BucketLeases, registry.LeaseKey(g.VIP.NetworkID, g.VIP.Address)); err != nil {
			return err
		}
		owner, err := getOwner(tx, g.ID)
		if err != nil {
			return err
		}
		if owner.GuestID != "" {
			if _, err := registry.SwapOwner(tx, owner.Revision, registry.Owner{Group: g.ID, Since: s.nowUTC(), Source: "detach"}); err != nil {
				return err
			}
		}
		g.VIP = nil
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.stopAnnounce(g.ID)
	s.log.Info("vip detached", "op", "instancegroup-detachnetwork", "group", g.Name, "vip", vip)
	if err := s.refreshVIPs(ctx); err != nil {
		return api.GroupView{}, err
	}
	return s.ShowGroup(ctx, g.ID)
}

// CreateGroupEIP allocates an EIP and binds it to the group's VIP.
func (s *Service) CreateGroupEIP(ctx context.Context, ref string, req api.CreateGroupEIP) (api.GroupView, error) {
	if err := checkEIPAttrs(req.Bandwidth, req.BGPType, req.ChargeType); err != nil {
		return api.GroupView{}, err
	}
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = findGroup(tx, ref); err != nil {
			return err
		}
		vipNet, err := vipNetwork(tx, g)
		if err != nil {
			return err
		}
		if err := checkBindEIP(g, vipNet, nil); err != nil {
			return err
		}
		e, err := s.allocEIP(tx, api.EIPCreate{
			IPAddr: req.IPAddr, NetworkID: req.NetworkID, Bandwidth: req.Bandwidth, BGPType: req.BGPType,
			ChargeType: req.ChargeType, AutoDeallocate: req.AutoDeallocate,
		})
		if err != nil {
			return err
		}
		return s.bindEIP(tx, &g, e)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("eip created and associated", "op", "instancegroup-create-eip", "group", g.Name, "eip", g.EIP.Address)
	s.applyDataPlane(ctx)
	return s.ShowGroup(ctx, g.ID)
}

func vipNetwork(tx registry.Tx, g registry.Group) (registry.Network, error) {
	if g.VIP == nil {
		return registry.Network{}, nil
	}
	return getNetwork(tx, g.VIP.NetworkID)
}

func (s *Service) bindEIP(tx registry.Tx, g *registry.Group, e registry.EIP) error {
	e.Group = g.ID
	g.EIP = &registry.EIPBinding{EIPID: e.ID, Address: e.Address, BoundAt: s.nowUTC()}
	g.Revision++
	if err := registry.Put(tx, e); err != nil {
		return err
	}
	return registry.Put(tx, *g)
}

// AssociateEIP binds an existing EIP (by id or address) to the group.
func (s *Service) AssociateEIP(ctx context.Context, ref string, req api.AssociateEIP) (api.GroupView, error) {
	if req.EIPID == "" && !req.IPAddr.IsValid() {
		return api.GroupView{}, invalid("eip_id", "name the EIP with --eip-id or --ip-addr")
	}
	var g registry.Group
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = findGroup(tx, ref); err != nil {
			return err
		}
		e, err := findEIP(tx, req)
		if err != nil {
			return err
		}
		vipNet, err := vipNetwork(tx, g)
		if err != nil {
			return err
		}
		if err := checkBindEIP(g, vipNet, &e); err != nil {
			return err
		}
		return s.bindEIP(tx, &g, e)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("eip associated", "op", "instancegroup-associate-eip", "group", g.Name, "eip", g.EIP.Address)
	s.applyDataPlane(ctx)
	return s.ShowGroup(ctx, g.ID)
}

func findEIP(tx registry.Tx, req api.AssociateEIP) (registry.EIP, error) {
	if req.EIPID != "" {
		e, err := registry.Get[registry.EIP](tx, req.EIPID)
		if errors.Is(err, registry.ErrNotFound) {
			return e, fmt.Errorf("%w: no EIP %q", ErrNotFound, req.EIPID)
		}
		if err == nil && req.IPAddr.IsValid() && e.Address != req.IPAddr.Unmap() {
			return e, invalid("ip_addr", "EIP %s has address %s, not %s", e.ID, e.Address, req.IPAddr)
		}
		return e, err
	}
	eips, err := registry.List[registry.EIP](tx, "")
	if err != nil {
		return registry.EIP{}, err
	}
	for _, e := range eips {
		if e.Address == req.IPAddr.Unmap() {
			return e, nil
		}
	}
	return registry.EIP{}, fmt.Errorf("%w: no EIP with address %s (eip-create first)", ErrNotFound, req.IPAddr)
}

// DissociateEIP unbinds the group's EIP, deleting it when it was created
// with auto-deallocate.
func (s *Service) DissociateEIP(ctx context.Context, ref string) (api.GroupView, error) {
	var g registry.Group
	var old registry.EIPBinding
	err := s.store.Update(ctx, func(tx registry.Tx) error {
		var err error
		if g, err = findGroup(tx, ref); err != nil {
			return err
		}
		if err := checkDissociate(g); err != nil {
			return err
		}
		old = *g.EIP
		e, err := registry.Get[registry.EIP](tx, g.EIP.EIPID)
		switch {
		case errors.Is(err, registry.ErrNotFound):
		case err != nil:
			return err
		case e.AutoDeallocate:
			if err := tx.Delete(registry.BucketLeases, registry.LeaseKey(e.NetworkID, e.Address)); err != nil {
				return err
			}
			if err := tx.Delete(registry.BucketEIPs, e.ID); err != nil {
				return err
			}
		default:
			e.Group = ""
			if err := registry.Put(tx, e); err != nil {
				return err
			}
		}
		g.EIP = nil
		g.Revision++
		return registry.Put(tx, g)
	})
	if err != nil {
		return api.GroupView{}, err
	}
	s.log.Info("eip dissociated", "op", "instancegroup-dissociate-eip", "group", g.Name, "eip", old.Address)
	s.applyDataPlane(ctx)
	return s.ShowGroup(ctx, g.ID)
}

// ShowGroup returns a group with its members, VIP, EIP and owner.
func (s *Service) ShowGroup(ctx context.Context, ref string) (api.GroupView, error) {
	var v api.GroupView
	err := s.store.View(ctx, func(tx registry.Tx) error {
		g, err := findGroup(tx, ref)
		if err != nil {
			return err
		}
		v, err = groupView(tx, g)
		return err
	})
	return v, err
}

// ListGroups returns every group, by id.
func (s *Service) ListGroups(ctx context.Context) ([]api.GroupView, error) {
	var out []api.GroupView
	err := s.store.View(ctx, func(tx registry.Tx) error {
		groups, err := registry.List[registry.Group](tx, "")
		if err != nil {
			return err
		}
		for _, g := range groups {
			v, err := groupView(tx, g)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

func groupView(tx registry.Tx, g registry.Group) (api.GroupView, error) {
	set := g.Settings
	v := api.GroupView{
		ID: g.ID, Name: g.Name, Revision: g.Revision, Members: []api.MemberView{},
		Settings: api.GroupSettings{
			VRRPVersion: set.VRRPVersion, AdvertInt: set.AdvertInt, Unicast: set.Unicast,
			Preempt: !set.NoPreempt, PreemptDelay: set.PreemptDelay, Auth: set.AuthPass != "", Checks: set.Checks,
		},
	}
	if v.Settings.AdvertInt == 0 {
		v.Settings.AdvertInt = 1000
	}
	names := map[string]string{}
	for _, m := range g.Members {
		gu, err := registry.Get[registry.Guest](tx, m.GuestID)
		if err != nil {
			return v, fmt.Errorf("hostsync: member %s of group %s: %w", m.GuestID, g.Name, err)
		}
		names[gu.ID] = gu.Name
		mv := api.MemberView{
			GuestID: gu.ID, Name: gu.Name, Address: gu.Address, MAC: gu.MAC, NetworkID: gu.NetworkID,
			NICs: gu.NICs, Host: gu.Host, Priority: m.Priority,
		}
		if rs, err := registry.Get[registry.RoleState](tx, registry.RoleKey(g.ID, gu.ID)); err == nil {
			mv.Role, mv.RoleAt = rs.Role, rs.At
		}
		v.Members = append(v.Members, mv)
	}
	if g.VIP != nil {
		n, err := getNetwork(tx, g.VIP.NetworkID)
		if err != nil {
			return v, err
		}
		v.VIP = &api.VIPView{Address: netip.PrefixFrom(g.VIP.Address, n.CIDR.Bits()), NetworkID: n.ID, VRID: g.VIP.VRID, Reserved: g.VIP.Reserved}
	}
	if g.EIP != nil {
		v.EIP = &api.EIPView{ID: g.EIP.EIPID, Address: g.EIP.Address}
	}
	o, err := getOwner(tx, g.ID)
	if err != nil {
		return v, err
	}
	if o.GuestID != "" {
		v.Owner = &api.OwnerView{GuestID: o.GuestID, Name: names[o.GuestID], Revision: o.Revision, Since: o.Since, Source: o.Source}
	}
	return v, nil
}

// ListNetworks returns every network with its lease count.
func (s *Service) ListNetworks(ctx context.Context) ([]api.NetworkInfo, error) {
	var out []api.NetworkInfo
	err := s.store.View(ctx, func(tx registry.Tx) error {
		nets, err := registry.List[registry.Network](tx, "")
		if err != nil {
			return err
		}
		for _, n := range nets {
			used := 0
			if err := tx.ForEach(registry.BucketLeases, n.ID+"/", func(string, []byte) error { used++; return nil }); err != nil {
				return err
			}
			out = append(out, networkInfo(n, used))
		}
		return nil
	})
	return out, err
}

// ListGuests returns every guest.
func (s *Service) ListGuests(ctx context.Context) ([]api.GuestInfo, error) {
	var out []api.GuestInfo
	err := s.store.View(ctx, func(tx registry.Tx) error {
		guests, err := registry.List[registry.Guest](tx, "")
		for _, g := range guests {
			out = append(out, guestInfo(g))
		}
		return err
	})
	return out, err
}

// ListEIPs returns every EIP.
func (s *Service) ListEIPs(ctx context.Context) ([]api.EIPInfo, error) {
	var out []api.EIPInfo
	err := s.store.View(ctx, func(tx registry.Tx) error {
		eips, err := registry.List[registry.EIP](tx, "")
		for _, e := range eips {
			out = append(out, eipInfo(e))
		}
		return err
	})
	return out, err
}

func networkInfo(n registry.Network, used int) api.NetworkInfo {
	return api.NetworkInfo{
		ID: n.ID, Name: n.Name, CIDR: n.CIDR, Gateway: n.Gateway, RangeStart: n.RangeStart, RangeEnd: n.RangeEnd,
		VPCID: n.VPCID, Kind: string(n.Kind), Reserved: n.Reserved, Used: used,
	}
}

func guestInfo(g registry.Guest) api.GuestInfo {
	return api.GuestInfo{
		ID: g.ID, Name: g.Name, NICs: g.NICs, NetworkID: g.NetworkID, Address: g.Address,
		MAC: g.MAC, Host: g.Host, Group: g.Group,
	}
}

func eipInfo(e registry.EIP) api.EIPInfo {
	return api.EIPInfo{
		ID: e.ID, Address: e.Address, NetworkID: e.NetworkID, Bandwidth: e.Bandwidth, BGPType: e.BGPType,
		ChargeType: e.ChargeType, AutoDeallocate: e.AutoDeallocate, Group: e.Group,
	}
}
