package vrrp

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// FieldError says which field of the document is wrong and what is allowed.
type FieldError struct {
	Path string // e.g. "members[1].priority"
	Msg  string // e.g. "300 is out of range, allowed 1–254"
}

func (e *FieldError) Error() string { return "vrrp: " + e.Path + ": " + e.Msg }

func fieldErr(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Patterns for names that end up in keepalived.conf, file names or shell
// scripts. They are deliberately narrow: anything else is refused, never
// escaped, so no name can carry keepalived syntax or shell code.
var (
	reID        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	reGroupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
	reMember    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	reCheck     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,31}$`)
	reProcess   = regexp.MustCompile(`^[A-Za-z0-9._+-]{1,15}$`)
	reUnit      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:_.@-]{0,240}\.service$`)
	reURL       = regexp.MustCompile(`^[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]{1,512}$`)
	reHost      = regexp.MustCompile(`^[A-Za-z0-9.-]{1,253}$`)
	// No $: keepalived expands $NAME and ${NAME} in its config.
	rePass = regexp.MustCompile(`^[A-Za-z0-9_.,:;=+*/%@^~?()\[\]<>|&-]{1,8}$`)
)

const (
	maxMembers = 32
	maxChecks  = 16
	maxArgs    = 32
	maxArgLen  = 256
)

// Validate checks every rule of the document and returns the first
// violation as a *FieldError (or nil).
func (m *Metadata) Validate() error {
	if m.Version != CurrentVersion {
		return fieldErr("version", "%d is not supported, this build reads version %d", m.Version, CurrentVersion)
	}
	if err := matchName("group.id", m.Group.ID, reID, "1–64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"); err != nil {
		return err
	}
	if err := matchName("group.name", m.Group.Name, reGroupName, "1–32 of A-Z a-z 0-9 . _ -, starting with a letter or digit"); err != nil {
		return err
	}
	if m.NetworkID != "" {
		if err := matchName("network_id", m.NetworkID, reID, "1–64 of A-Z a-z 0-9 . _ -"); err != nil {
			return err
		}
	}
	ver := m.EffectiveVRRPVersion()
	if err := m.validateVIP(ver); err != nil {
		return err
	}
	if err := m.validateVIP6(); err != nil {
		return err
	}
	if m.VirtualRouterID < 0 || m.VirtualRouterID > 255 {
		return fieldErr("virtual_router_id", "%d is out of range, allowed 1–255 (or absent to derive it from group.id)", m.VirtualRouterID)
	}
	if m.VRRPVersion != 0 && m.VRRPVersion != 2 && m.VRRPVersion != 3 {
		return fieldErr("vrrp_version", "%d is not supported, allowed 2 or 3", m.VRRPVersion)
	}
	if err := validateAdvert(ver, m.AdvertInt); err != nil {
		return err
	}
	if m.PreemptDelay > 1000*1000 {
		return fieldErr("preempt_delay", "%s s is out of range, allowed 0–1000 seconds", m.PreemptDelay)
	}
	if m.PreemptDelay != 0 && !m.PreemptEnabled() {
		return fieldErr("preempt_delay", "is set but preempt is false; a delay only applies when preempting")
	}
	if m.Auth != nil {
		if err := validateAuth(ver, *m.Auth); err != nil {
			return err
		}
	}
	if m.Garp != nil {
		if err := validateGarp(*m.Garp); err != nil {
			return err
		}
	}
	if err := m.validateMembers(); err != nil {
		return err
	}
	if err := validateChecks(m.Checks); err != nil {
		return err
	}
	if m.EIP.IsValid() && (m.EIP.Zone() != "" || m.EIP.IsUnspecified()) {
		return fieldErr("eip", "%s is not a usable address", m.EIP)
	}
	return nil
}

func matchName(path, v string, re *regexp.Regexp, allowed string) error {
	if v == "" {
		return fieldErr(path, "is required (%s)", allowed)
	}
	if !re.MatchString(v) {
		return fieldErr(path, "%q is not allowed, use %s", v, allowed)
	}
	return nil
}

func (m *Metadata) validateVIP(ver int) error {
	if !m.VIP.IsValid() {
		return fieldErr("vip", "is required, an address with prefix such as 192.0.2.10/24")
	}
	a := m.VIP.Addr()
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return fieldErr("vip", "%s is not a usable unicast address", a)
	}
	if a.Is6() && ver != 3 {
		return fieldErr("vip", "%s is IPv6, which needs vrrp_version 3", m.VIP)
	}
	bits := m.VIP.Bits()
	if lo, hi := vipPrefixBounds(a); bits < lo || bits > hi {
		return fieldErr("vip", "prefix /%d of %s is not a plausible subnet, allowed /%d to /%d", bits, m.VIP, lo, hi)
	}
	if a.Is4() && bits < 31 {
		net := m.VIP.Masked().Addr()
		if a == net {
			return fieldErr("vip", "%s is the network address of its subnet", a)
		}
		if a == lastAddr(m.VIP) {
			return fieldErr("vip", "%s is the broadcast address of its subnet", a)
		}
	}
	return nil
}

// validateVIP6 checks the IPv6 VIP of a dual-stack group: an IPv6
// unicast address that a host may hold, on a plausible LAN prefix, beside
// an IPv4 VIP (whose instance carries it).
func (m *Metadata) validateVIP6() error {
	if !m.VIP6.IsValid() {
		return nil
	}
	a := m.VIP6.Addr()
	if !a.Is6() || a.Is4In6() {
		return fieldErr("vip6", "%s is not an IPv6 address; the IPv4 VIP goes in vip", m.VIP6)
	}
	if !m.VIP.Addr().Is4() {
		return fieldErr("vip6", "is set but vip %s is not IPv4; a group with only an IPv6 VIP puts it in vip", m.VIP)
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return fieldErr("vip6", "%s is not a usable unicast address", a)
	}
	if bits := m.VIP6.Bits(); bits < minVIPBits6 || bits > maxVIPBits6 {
		return fieldErr("vip6", "prefix /%d of %s is not a plausible subnet, allowed /%d to /%d", bits, m.VIP6, minVIPBits6, maxVIPBits6)
	}
	return notSubnetSpecial("vip6", a, m.VIP6)
}

// Bounds of the VIP's prefix length: the prefix is the subnet the VIP and
// the members share (keepalived puts the VIP on the interface with it), so
// it must be a plausible LAN. IPv4: /8 (the largest network a segment is
// ever given) to /32 (a host route: the VIP alone, members elsewhere is not
// possible then, see validateMembers). IPv6: /48 (a site) to /128; the
// usual LAN is /64. Anything shorter, /0 above all, would make every
// address a "member of the subnet".
const (
	minVIPBits4, maxVIPBits4 = 8, 32
	minVIPBits6, maxVIPBits6 = 48, 128
)

func vipPrefixBounds(a netip.Addr) (lo, hi int) {
	if a.Is4() {
		return minVIPBits4, maxVIPBits4
	}
	return minVIPBits6, maxVIPBits6
}

// lastAddr is the highest address of p's subnet.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// notSubnetSpecial refuses the addresses of vip's subnet no host may hold:
// for IPv4 up to /30 the network and the broadcast address, for IPv6 up to
// /126 the Subnet-Router anycast address (all host bits zero, RFC 4291
// 2.6.1). /31 and /32 (RFC 3021) and /127, /128 have none.
func notSubnetSpecial(path string, a netip.Addr, vip netip.Prefix) error {
	bits := vip.Bits()
	switch {
	case a.Is4() && bits < 31:
		if a == vip.Masked().Addr() {
			return fieldErr(path, "%s is the network address of the VIP's subnet %s", a, vip.Masked())
		}
		if a == lastAddr(vip) {
			return fieldErr(path, "%s is the broadcast address of the VIP's subnet %s", a, vip.Masked())
		}
	case a.Is6() && bits < 127:
		if a == vip.Masked().Addr() {
			return fieldErr(path, "%s is the Subnet-Router anycast address of the VIP's subnet %s", a, vip.Masked())
		}
	}
	return nil
}

func validateAdvert(ver int, adv Seconds) error {
	if adv == 0 {
		return nil
	}
	switch ver {
	case 2:
		if adv%1000 != 0 || adv < 1000 || adv > 255*1000 {
			return fieldErr("advert_int", "%s is not allowed with VRRPv2, use whole seconds 1–255", adv)
		}
	case 3:
		if adv%10 != 0 || adv < 10 || adv > 40950 {
			return fieldErr("advert_int", "%s is not allowed with VRRPv3, use steps of 0.01 s from 0.01 to 40.95", adv)
		}
	}
	return nil
}

func validateAuth(ver int, a Auth) error {
	if ver != 2 {
		return fieldErr("auth", "authentication is only defined for VRRPv2; remove it or use vrrp_version 2")
	}
	if a.Type != "PASS" {
		return fieldErr("auth.type", "%q is not supported, allowed PASS", a.Type)
	}
	if a.Pass == "" || len(a.Pass) > 8 {
		return fieldErr("auth.pass", "must be 1–8 characters, got %d", len(a.Pass))
	}
	if !rePass.MatchString(a.Pass) {
		return fieldErr("auth.pass", "has a character that is not allowed; use printable ASCII without space, quotes, backslash, braces, $, # or !")
	}
	return nil
}

func validateGarp(g Garp) error {
	if g.MasterDelay < 0 || g.MasterDelay > 255 {
		return fieldErr("garp.master_delay", "%d is out of range, allowed 0–255 seconds", g.MasterDelay)
	}
	if g.MasterRepeat < 0 || g.MasterRepeat > 255 {
		return fieldErr("garp.master_repeat", "%d is out of range, allowed 0–255", g.MasterRepeat)
	}
	if g.MasterRefresh < 0 || g.MasterRefresh > 86400 {
		return fieldErr("garp.master_refresh", "%d is out of range, allowed 0–86400 seconds", g.MasterRefresh)
	}
	return nil
}

func (m *Metadata) validateMembers() error {
	if len(m.Members) == 0 {
		return fieldErr("members", "at least one member is required")
	}
	if len(m.Members) > maxMembers {
		return fieldErr("members", "%d members, at most %d are allowed", len(m.Members), maxMembers)
	}
	subnet := m.VIP.Masked()
	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	for i, mem := range m.Members {
		p := "members[" + strconv.Itoa(i) + "]"
		if err := matchName(p+".name", mem.Name, reMember, "1–63 of A-Z a-z 0-9 . _ -, starting with a letter or digit"); err != nil {
			return err
		}
		if j, dup := names[mem.Name]; dup {
			return fieldErr(p+".name", "%q is already used by members[%d]", mem.Name, j)
		}
		names[mem.Name] = i
		if mem.GuestID != "" {
			if err := matchName(p+".guest_id", mem.GuestID, reID, "1–64 of A-Z a-z 0-9 . _ -"); err != nil {
				return err
			}
		}
		if !mem.Address.IsValid() {
			return fieldErr(p+".address", "is required")
		}
		if mem.Address.Zone() != "" || !subnet.Contains(mem.Address) {
			return fieldErr(p+".address", "%s is not inside the VIP's subnet %s", mem.Address, subnet)
		}
		if mem.Address == m.VIP.Addr() {
			return fieldErr(p+".address", "%s is the VIP itself", mem.Address)
		}
		if err := notSubnetSpecial(p+".address", mem.Address, m.VIP); err != nil {
			return err
		}
		if j, dup := addrs[mem.Address]; dup {
			return fieldErr(p+".address", "%s is already used by members[%d]", mem.Address, j)
		}
		addrs[mem.Address] = i
		if mem.MAC != "" {
			hw, err := net.ParseMAC(mem.MAC)
			if err != nil || len(hw) != 6 || hw.String() != mem.MAC {
				return fieldErr(p+".mac", "%q is not a MAC address in the form 52:54:00:12:34:56 (lower case)", mem.MAC)
			}
		}
		// Equal priorities are allowed: VRRP breaks a tie by the higher
		// address (RFC 5798 6.4.3), and a symmetric group with nopreempt
		// leaves the VIP wherever it is.
		if mem.Priority < 1 || mem.Priority > 254 {
			return fieldErr(p+".priority", "%d is out of range, allowed 1–254", mem.Priority)
		}
	}
	return nil
}

func validateChecks(checks []Check) error {
	if len(checks) > maxChecks {
		return fieldErr("checks", "%d checks, at most %d are allowed", len(checks), maxChecks)
	}
	names := map[string]int{}
	for i, c := range checks {
		p := "checks[" + strconv.Itoa(i) + "]"
		if err := ValidateCheck(p, c); err != nil {
			return err
		}
		if j, dup := names[c.Name]; dup {
			return fieldErr(p+".name", "%q is already used by checks[%d]", c.Name, j)
		}
		names[c.Name] = i
	}
	return nil
}

// ValidateCheck validates one check; p is the field path prefix used in
// errors (e.g. "checks[0]"). The agent uses it for its local checks too.
func ValidateCheck(p string, c Check) error {
	if err := matchName(p+".name", c.Name, reCheck, "1–32 of A-Z a-z 0-9 _ -, starting with a letter or _"); err != nil {
		return err
	}
	if err := validatePolicy(p, c); err != nil {
		return err
	}
	if c.Fall < 0 || c.Fall > 255 {
		return fieldErr(p+".fall", "%d is out of range, allowed 1–255 (0 means 1)", c.Fall)
	}
	if c.Rise < 0 || c.Rise > 255 {
		return fieldErr(p+".rise", "%d is out of range, allowed 1–255 (0 means 1)", c.Rise)
	}
	if c.RestartUnit != "" && !reUnit.MatchString(c.RestartUnit) {
		return fieldErr(p+".restart_unit", "%q is not a systemd service name such as nginx.service", c.RestartUnit)
	}
	only := func(field string, set bool, kind CheckKind) error {
		if set && c.Kind != kind {
			return fieldErr(p+"."+field, "is only for kind %s, this check is kind %q", kind, c.Kind)
		}
		return nil
	}
	for _, o := range []struct {
		f    string
		set  bool
		kind CheckKind
	}{
		{"process", c.Process != "", CheckProcess},
		{"url", c.URL != "", CheckHTTP},
		{"expect_status", c.ExpectStatus != 0, CheckHTTP},
		{"address", c.Address != "", CheckTCP},
		{"command", len(c.Command) != 0, CheckExec},
	} {
		if err := only(o.f, o.set, o.kind); err != nil {
			return err
		}
	}
	switch c.Kind {
	case CheckProcess:
		return matchName(p+".process", c.Process, reProcess, "a process name of 1–15 of A-Z a-z 0-9 . _ + -")
	case CheckHTTP:
		return validateURL(p, c)
	case CheckTCP:
		return validateHostPort(p+".address", c.Address)
	case CheckExec:
		return validateCommand(p+".command", c.Command)
	case "":
		return fieldErr(p+".kind", "is required, allowed process, http, tcp, exec")
	default:
		return fieldErr(p+".kind", "%q is not supported, allowed process, http, tcp, exec", c.Kind)
	}
}

// Interval and timeout bounds per policy. A resign check runs in the
// agent, which can probe more often than once a second (the floor keeps a
// check from spinning); a lower_priority check is a keepalived
// vrrp_script, whose interval and timeout keepalived reads as whole seconds.
const (
	minResignSeconds = Seconds(50)
	resignStep       = Seconds(10)
	maxCheckSeconds  = Seconds(3600 * 1000)
)

// validatePolicy checks on_failure, the weight that goes with it and the
// interval and timeout the policy allows.
func validatePolicy(p string, c Check) error {
	switch c.OnFailure {
	case "", OnFailureResign, OnFailureLowerPriority:
	default:
		return fieldErr(p+".on_failure", "%q is not supported, allowed %s or %s", c.OnFailure, OnFailureResign, OnFailureLowerPriority)
	}
	if c.Weight < -253 || c.Weight > 253 {
		return fieldErr(p+".weight", "%d is out of range, allowed -253–253", c.Weight)
	}
	policy := c.EffectiveOnFailure()
	switch {
	case policy == OnFailureResign && c.Weight != 0:
		return fieldErr(p+".weight", "%d is set but on_failure is resign; weight applies only with on_failure lower_priority", c.Weight)
	case policy == OnFailureLowerPriority && c.Weight == 0:
		return fieldErr(p+".weight", "is required with on_failure lower_priority: the priority change -253–253, not 0")
	}
	for _, f := range []struct {
		name string
		v    Seconds
	}{{"interval", c.Interval}, {"timeout", c.Timeout}} {
		if f.v == 0 {
			continue
		}
		if policy == OnFailureResign {
			if f.v%resignStep != 0 || f.v < minResignSeconds || f.v > maxCheckSeconds {
				return fieldErr(p+"."+f.name, "%s is not allowed with on_failure resign, use steps of 0.01 s from 0.05 to 3600", f.v)
			}
			continue
		}
		if f.v%1000 != 0 || f.v > maxCheckSeconds {
			return fieldErr(p+"."+f.name, "%s is not allowed with on_failure lower_priority (a keepalived vrrp_script), use whole seconds 1–3600", f.v)
		}
	}
	return nil
}

func validateURL(p string, c Check) error {
	if c.URL == "" {
		return fieldErr(p+".url", "is required for kind http, e.g. http://127.0.0.1/healthz")
	}
	u, err := url.Parse(c.URL)
	if err != nil || !reURL.MatchString(c.URL) || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fieldErr(p+".url", "%q is not an http(s) URL with a host and without credentials, quotes, spaces or backslashes", c.URL)
	}
	if c.ExpectStatus != 0 && (c.ExpectStatus < 100 || c.ExpectStatus > 599) {
		return fieldErr(p+".expect_status", "%d is out of range, allowed 100–599", c.ExpectStatus)
	}
	return nil
}

func validateHostPort(p, v string) error {
	if v == "" {
		return fieldErr(p, "is required for kind tcp, e.g. 127.0.0.1:80")
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fieldErr(p, "%q is not host:port", v)
	}
	if _, err := netip.ParseAddr(host); err != nil && !reHost.MatchString(host) {
		return fieldErr(p, "%q has a host that is neither an address nor a host name", v)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fieldErr(p, "%q has a port outside 1–65535", v)
	}
	return nil
}

func validateCommand(p string, cmd []string) error {
	if len(cmd) == 0 {
		return fieldErr(p, "is required for kind exec: an absolute path and its arguments")
	}
	if len(cmd) > maxArgs {
		return fieldErr(p, "has %d elements, at most %d are allowed", len(cmd), maxArgs)
	}
	if !path.IsAbs(cmd[0]) || path.Clean(cmd[0]) != cmd[0] {
		return fieldErr(p+"[0]", "%q is not a clean absolute path", cmd[0])
	}
	for i, a := range cmd {
		if len(a) > maxArgLen {
			return fieldErr(fmt.Sprintf("%s[%d]", p, i), "is %d bytes long, at most %d are allowed", len(a), maxArgLen)
		}
		if !utf8.ValidString(a) {
			return fieldErr(fmt.Sprintf("%s[%d]", p, i), "is not valid UTF-8")
		}
		for _, r := range a {
			if !unicode.IsPrint(r) {
				return fieldErr(fmt.Sprintf("%s[%d]", p, i), "contains the control or non-printable character %U", r)
			}
		}
	}
	return nil
}

var reInstance = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$`)
