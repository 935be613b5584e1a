package hostsync

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/internal/config"
)

// DefaultConfigPath is where vipkeeper-hostsync reads its configuration.
const DefaultConfigPath = "/etc/vipkeeper/hostsync.toml"

// Defaults of the configuration.
const (
	DefaultStateDir         = "/var/lib/vipkeeper"
	DefaultDBFile           = "hostsync.db"
	DefaultGuestListen      = ":8750"
	DefaultDBTimeout        = 5 * time.Second
	DefaultReapplyInterval  = time.Minute
	DefaultSplitBrainWindow = 10 * time.Second
	DefaultStaleClaimAge    = 2 * time.Minute
	DefaultLeaseTTL         = 10 * time.Second
	// DefaultGuestIdleTimeout closes a keep-alive guest connection idle
	// this long; an agent asks every few seconds at most.
	DefaultGuestIdleTimeout = 30 * time.Second
)

// Registry stores (Config.Store).
const (
	StoreBolt = "bbolt"
	StoreEtcd = "etcd"
)

// Roles of the daemon (Config.Role).
const (
	// RoleHost is a hypervisor host: registry, guest and admin APIs,
	// GARP and the data plane.
	RoleHost = "host"
	// RoleGateway is an EIP gateway: it only watches the shared registry
	// (store "etcd") and programs its data plane; several may run.
	RoleGateway = "gateway"
)

// Data-plane backends.
const (
	BackendNFTables = "nftables"
	BackendCommand  = "command"
	BackendNone     = "none"
)

// ErrConfig matches (errors.Is) every configuration error. Each is a
// *config.Error naming the file, the key, the line where known and what is
// allowed.
var ErrConfig = config.ErrInvalid

// Config is /etc/vipkeeper/hostsync.toml. Unknown keys are rejected.
type Config struct {
	// StateDir holds the registry (default /var/lib/vipkeeper).
	StateDir string `toml:"state_dir"`
	// DBPath is the bbolt file (default StateDir/hostsync.db).
	DBPath string `toml:"db_path"`
	// DBTimeout bounds the wait for the database lock (default 5s).
	DBTimeout time.Duration `toml:"db_timeout"`
	// AdminSocket is the admin API's unix socket (default
	// /run/vipkeeper/hostsync.sock), created 0600.
	AdminSocket string `toml:"admin_socket"`
	// GuestListen is the guest API's host:port, an address the guests
	// reach (default ":8750").
	GuestListen string `toml:"guest_listen"`
	// GuestConnsPerSource caps the guest API's connections open at once
	// from one source address (default httpapi.DefaultGuestConnsPerSource, 32);
	// more are closed as soon as they are accepted.
	GuestConnsPerSource int `toml:"guest_conns_per_source"`
	// GuestIdleTimeout closes a guest API keep-alive connection idle this
	// long (default 30s).
	GuestIdleTimeout time.Duration `toml:"guest_idle_timeout"`
	// GARPInterface is where gratuitous ARP is sent and listened for,
	// usually the bridge of the guests' network; empty disables both.
	GARPInterface string `toml:"garp_interface"`
	// MetricsListen serves Prometheus /metrics on host:port; empty is off.
	MetricsListen string `toml:"metrics_listen"`
	// ReapplyInterval re-applies the data plane from the registry (default 1m).
	ReapplyInterval time.Duration `toml:"reapply_interval"`
	// ProbeInterval is how often every VIP is probed with an ARP request on
	// GARPInterface to learn who holds it (default 10s; also at start and
	// when an owner reports leaving MASTER). "0s" turns probing off.
	ProbeInterval time.Duration `toml:"probe_interval"`
	// SplitBrainWindow: see Options.SplitBrainWindow (default 10s).
	SplitBrainWindow time.Duration `toml:"split_brain_window"`
	// StaleClaimAge: see Options.StaleClaimAge (default 2m).
	StaleClaimAge time.Duration `toml:"stale_claim_age"`
	// DataPlane selects and configures the EIP backend.
	DataPlane DataPlaneConfig `toml:"dataplane"`
	// Hosts maps a host id (a guest's host) to the address the VIP is
	// routed through when a guest on that host owns it.
	Hosts map[string]netip.Addr `toml:"hosts"`
	// Store is where the registry lives: "bbolt" (default, the file at
	// DBPath, one host) or "etcd" (shared by every host and gateway).
	Store string `toml:"store"`
	// Role is "host" (default) or "gateway".
	Role string `toml:"role"`
	// Etcd configures store "etcd".
	Etcd EtcdConfig `toml:"etcd"`
}

// EtcdConfig is the [etcd] table.
type EtcdConfig struct {
	// Endpoints are etcd's client URLs, http:// or https://, or
	// unix:///PATH for an etcd on the same machine.
	Endpoints []string `toml:"endpoints"`
	// DialTimeout bounds the first connection (default 5s).
	DialTimeout time.Duration `toml:"dial_timeout"`
	// CAFile verifies etcd's certificates (PEM); empty uses the system's.
	CAFile string `toml:"ca_file"`
	// CertFile and KeyFile are the client certificate (PEM), both or none.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Prefix of every key (default "/vipkeeper/"), "/" at both ends.
	Prefix string `toml:"prefix"`
	// HostID names this host's lease key PREFIX "_hosts/" HOST_ID (role
	// host; default the machine's hostname); unique per host.
	HostID string `toml:"host_id"`
	// LeaseTTL is the TTL of the host's etcd lease (role host; default
	// 10s, whole seconds, 2s to 1h): a host cut off from etcd for longer
	// can write nothing until it has a new lease.
	LeaseTTL time.Duration `toml:"lease_ttl"`
}

// DataPlaneConfig is the [dataplane] table.
type DataPlaneConfig struct {
	// Backend is "nftables" (default), "command" or "none".
	Backend string `toml:"backend"`
	// Table is the nftables table (default "vipkeeper").
	Table string `toml:"table"`
	// NFT, when set, selects the older nft -f script backend with this
	// nft binary, in hostsync's own network namespace (not with Netns).
	NFT string `toml:"nft"`
	// RouteTable is the routing table for VIP routes (default main).
	RouteTable int `toml:"route_table"`
	// Command is the hook's absolute path (backend "command"); it gets
	// the mappings as JSON on stdin.
	Command string `toml:"command"`
	// Args are the hook's fixed arguments.
	Args []string `toml:"args"`
	// Timeout bounds one apply (default 30s).
	Timeout time.Duration `toml:"timeout"`
	// Netns is the name of a network namespace (as in /run/netns/NAME)
	// that the nftables backend programs instead of hostsync's own, e.g.
	// a gateway namespace on the same machine, through netlink (the maps
	// backend; no process enters it). Empty means hostsync's own.
	Netns string `toml:"netns"`
	// AllowEmpty lets hostsync apply an empty set from a registry that
	// holds no group to a data plane that holds mappings (default false:
	// that apply is held, so a mistyped db_path or an empty etcd prefix
	// cannot remove every EIP mapping). Set it, or start with
	// -allow-empty-dataplane, once, when the registry is meant to be new.
	AllowEmpty bool `toml:"allow_empty"`
}

// LoadConfig reads, defaults and validates the file at path.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, &config.Error{File: path, Msg: err.Error(), Err: err}
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes data (named path in errors) through internal/config,
// which refuses keys Config does not declare, then applies defaults and
// Validate. Errors are *config.Error.
func ParseConfig(path string, data []byte) (Config, error) {
	var c Config
	md, err := config.Load(path, data, &c)
	if err != nil {
		return Config{}, err
	}
	c.SetDefaults()
	if !md.IsDefined("probe_interval") {
		c.ProbeInterval = ownership.DefaultProbeInterval
	}
	if err := c.Validate(); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			ce.File = path
		}
		return Config{}, err
	}
	return c, nil
}

var reNetns = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// SetDefaults fills unset fields.
func (c *Config) SetDefaults() {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.DBPath == "" {
		c.DBPath = filepath.Join(c.StateDir, DefaultDBFile)
	}
	if c.DBTimeout == 0 {
		c.DBTimeout = DefaultDBTimeout
	}
	if c.AdminSocket == "" {
		c.AdminSocket = api.DefaultAdminSocket
	}
	if c.GuestListen == "" {
		c.GuestListen = DefaultGuestListen
	}
	if c.GuestConnsPerSource == 0 {
		c.GuestConnsPerSource = httpapi.DefaultGuestConnsPerSource
	}
	if c.GuestIdleTimeout == 0 {
		c.GuestIdleTimeout = DefaultGuestIdleTimeout
	}
	if c.ReapplyInterval == 0 {
		c.ReapplyInterval = DefaultReapplyInterval
	}
	if c.SplitBrainWindow == 0 {
		c.SplitBrainWindow = DefaultSplitBrainWindow
	}
	if c.StaleClaimAge == 0 {
		c.StaleClaimAge = DefaultStaleClaimAge
	}
	if c.DataPlane.Backend == "" {
		c.DataPlane.Backend = BackendNFTables
	}
	if c.Store == "" {
		c.Store = StoreBolt
	}
	if c.Role == "" {
		c.Role = RoleHost
	}
	if c.Store == StoreEtcd {
		if c.Etcd.DialTimeout == 0 {
			c.Etcd.DialTimeout = registry.DefaultEtcdDialTimeout
		}
		if c.Etcd.Prefix == "" {
			c.Etcd.Prefix = registry.DefaultEtcdPrefix
		}
		if c.Role == RoleHost {
			if c.Etcd.LeaseTTL == 0 {
				c.Etcd.LeaseTTL = DefaultLeaseTTL
			}
			if c.Etcd.HostID == "" {
				// Validate asks for host_id when there is no hostname.
				c.Etcd.HostID, _ = os.Hostname()
			}
		}
	}
}

var (
	reIfName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,14}$`)
	reTable  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,31}$`)
)

// Validate checks every field without looking at the host (see
// CheckHost). Errors are *config.Error naming the key (not the file: see
// ParseConfig).
func (c Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return config.Errorf("", key, format, args...)
	}
	for _, p := range []struct{ key, v string }{{"state_dir", c.StateDir}, {"db_path", c.DBPath}} {
		if !filepath.IsAbs(p.v) {
			return bad(p.key, "%q is not an absolute path", p.v)
		}
	}
	if err := config.SocketPath(c.AdminSocket); err != nil {
		return bad("admin_socket", "%v", err)
	}
	if err := config.ListenAddr(c.GuestListen); err != nil {
		return bad("guest_listen", "%v", err)
	}
	if c.GuestConnsPerSource < 1 || c.GuestConnsPerSource > 65535 {
		return bad("guest_conns_per_source", "%d is out of range, allowed 1–65535", c.GuestConnsPerSource)
	}
	if c.GuestIdleTimeout <= 0 {
		return bad("guest_idle_timeout", "%s must be positive, e.g. \"30s\"", c.GuestIdleTimeout)
	}
	if c.MetricsListen != "" {
		if err := config.ListenAddr(c.MetricsListen); err != nil {
			return bad("metrics_listen", "%v", err)
		}
	}
	if c.GARPInterface != "" && !reIfName.MatchString(c.GARPInterface) {
		return bad("garp_interface", "%q is not an interface name (1–15 of A-Z a-z 0-9 . _ @ -)", c.GARPInterface)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"db_timeout", c.DBTimeout}, {"reapply_interval", c.ReapplyInterval}, {"split_brain_window", c.SplitBrainWindow}, {"stale_claim_age", c.StaleClaimAge}} {
		if err := config.Positive(d.v); err != nil {
			return bad(d.key, "%v", err)
		}
	}
	if c.ProbeInterval < 0 {
		return bad("probe_interval", "%s is negative; \"0s\" turns probing off", c.ProbeInterval)
	}
	if c.ReapplyInterval < time.Second {
		return bad("reapply_interval", "%s is shorter than 1s", c.ReapplyInterval)
	}
	dp := c.DataPlane
	switch dp.Backend {
	case BackendNFTables:
		if dp.Table != "" && !reTable.MatchString(dp.Table) {
			return bad("dataplane.table", "%q is not an nftables table name (letters, digits, _; at most 32)", dp.Table)
		}
		if dp.Command != "" || len(dp.Args) > 0 {
			return bad("dataplane.command", "is only for backend %q", BackendCommand)
		}
		if dp.RouteTable < 0 {
			return bad("dataplane.route_table", "%d is negative", dp.RouteTable)
		}
		if dp.Netns != "" && !reNetns.MatchString(dp.Netns) {
			return bad("dataplane.netns", "%q is not a network namespace name (1–64 of A-Z a-z 0-9 . _ -)", dp.Netns)
		}
		if dp.Netns != "" && dp.NFT != "" {
			// The script backend would need an nft process entering the
			// namespace; the maps backend programs it through netlink.
			return bad("dataplane.netns", "cannot be combined with dataplane.nft (the nft -f script backend runs in hostsync's own network namespace): remove nft to program namespace %q through netlink", dp.Netns)
		}
	case BackendCommand:
		if !filepath.IsAbs(dp.Command) {
			return bad("dataplane.command", "%q is not an absolute path (backend command runs it with the mappings on stdin)", dp.Command)
		}
		if dp.Table != "" || dp.NFT != "" || dp.RouteTable != 0 || dp.Netns != "" {
			return bad("dataplane.table", "table, nft, route_table and netns are only for backend %q", BackendNFTables)
		}
	case BackendNone:
	default:
		return bad("dataplane.backend", "%q is not one of nftables, command, none", dp.Backend)
	}
	if dp.Timeout < 0 {
		return bad("dataplane.timeout", "%s is negative", dp.Timeout)
	}
	if err := c.validateStore(bad); err != nil {
		return err
	}
	ids := make([]string, 0, len(c.Hosts))
	for id := range c.Hosts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		a := c.Hosts[id]
		if !inventory.ValidID(id) {
			return bad("hosts", "%q is not a host id", id)
		}
		if !a.Is4() || a.IsUnspecified() || a.IsMulticast() {
			return bad("hosts."+id, "%s is not a unicast IPv4 address", a)
		}
	}
	return nil
}

// validateStore checks store, role and [etcd].
func (c Config) validateStore(bad func(key, format string, args ...any) error) error {
	switch c.Role {
	case RoleHost, RoleGateway:
	default:
		return bad("role", "%q is not one of host, gateway", c.Role)
	}
	if c.Role == RoleGateway && c.GARPInterface != "" {
		return bad("garp_interface", "is not used by role gateway (the host whose guest took the VIP announces it)")
	}
	e := c.Etcd
	switch c.Store {
	case StoreBolt:
		if c.Role == RoleGateway {
			return bad("role", "gateway needs store = \"etcd\" (it follows the registry the hosts share)")
		}
		if len(e.Endpoints) > 0 || e.CAFile != "" || e.CertFile != "" || e.KeyFile != "" || e.Prefix != "" || e.DialTimeout != 0 ||
			e.HostID != "" || e.LeaseTTL != 0 {
			return bad("etcd", "the [etcd] table is only for store = \"etcd\"")
		}
		return nil
	case StoreEtcd:
	default:
		return bad("store", "%q is not one of bbolt, etcd", c.Store)
	}
	if len(e.Endpoints) == 0 {
		return bad("etcd.endpoints", "is required with store = \"etcd\", e.g. [\"https://192.0.2.1:2379\"]")
	}
	for i, ep := range e.Endpoints {
		if !registry.ValidEndpoint(ep) {
			return bad(fmt.Sprintf("etcd.endpoints[%d]", i), "%q is not http://HOST:PORT, https://HOST:PORT or unix:///PATH", ep)
		}
	}
	if err := config.Positive(e.DialTimeout); err != nil {
		return bad("etcd.dial_timeout", "%v", err)
	}
	for _, f := range []struct{ key, v string }{{"etcd.ca_file", e.CAFile}, {"etcd.cert_file", e.CertFile}, {"etcd.key_file", e.KeyFile}} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			return bad(f.key, "%q is not an absolute path", f.v)
		}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		return bad("etcd.cert_file", "cert_file and key_file go together (a client certificate and its key)")
	}
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") || strings.ContainsAny(e.Prefix, " \t\n") {
		return bad("etcd.prefix", "%q must start and end with / and hold no spaces, e.g. \"/vipkeeper/\"", e.Prefix)
	}
	if c.Role == RoleGateway {
		if e.HostID != "" || e.LeaseTTL != 0 {
			return bad("etcd.host_id", "host_id and lease_ttl are not used by role gateway (it writes nothing)")
		}
		return nil
	}
	if !inventory.ValidID(e.HostID) {
		return bad("etcd.host_id", "%q is not a host id (1–64 of A-Z a-z 0-9 . _ -, unique per host; default the hostname)", e.HostID)
	}
	if e.LeaseTTL < minLeaseTTL || e.LeaseTTL > maxLeaseTTL || e.LeaseTTL%time.Second != 0 {
		return bad("etcd.lease_ttl", "%s is not whole seconds from %s to %s, e.g. \"10s\"", e.LeaseTTL, minLeaseTTL, maxLeaseTTL)
	}
	return nil
}

// Bounds of [etcd] lease_ttl: etcd itself raises a TTL below about 1.5
// election timeouts.
const (
	minLeaseTTL = 2 * time.Second
	maxLeaseTTL = time.Hour
)

// CheckHost checks what Validate cannot: the GARP interface exists.
func (c Config) CheckHost() error {
	if c.GARPInterface != "" {
		if _, err := net.InterfaceByName(c.GARPInterface); err != nil {
			return &config.Error{Key: "garp_interface", Msg: fmt.Sprintf("%q: %v", c.GARPInterface, err), Err: err}
		}
	}
	return nil
}
