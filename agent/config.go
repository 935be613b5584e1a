package agent

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/config"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// DefaultConfigPath is where vipkeeper-agent reads its configuration.
const DefaultConfigPath = "/etc/vipkeeper/agent.toml"

// DefaultTrackDir is track_dir's default, on the /run tmpfs.
const DefaultTrackDir = "/run/vipkeeper/track"

// Config is the agent's configuration (/etc/vipkeeper/agent.toml).
type Config struct {
	// Member is this VM's member name in the group; empty means detect it
	// by the addresses on Interface.
	Member string `toml:"member"`
	// Interface is the NIC keepalived runs VRRP on and the VIP lands on.
	Interface string `toml:"interface"`
	// StateDir holds the state database (agent.db) and a staging area
	// for validating rendered files.
	StateDir string `toml:"state_dir"`
	// Socket is the control socket (notify, status, history, refresh).
	Socket string `toml:"socket"`
	// SpoolDir is where the notify hook leaves events while the agent is
	// down; empty in the file means StateDir/spool.
	SpoolDir string `toml:"spool_dir"`
	// Vipctl is the vipctl binary the rendered scripts run.
	Vipctl string `toml:"vipctl"`
	// TrackDir holds the track files of the checks the agent runs itself
	// (on_failure resign), one per check, which keepalived watches. A
	// directory of the agent's own on a local file system, best a tmpfs
	// (/run): the agent removes the files of checks no longer run.
	TrackDir string `toml:"track_dir"`
	// HistoryLimit bounds the transition history kept in the state database.
	HistoryLimit int `toml:"history_limit"`
	// ReconcileInterval is how often the agent compares keepalived's
	// reported role with the VIP on the interface and keepalived's liveness.
	ReconcileInterval time.Duration `toml:"reconcile_interval"`
	// ReconcileGrace is how long a role and the VIP may disagree before the
	// disagreement is recorded (keepalived adds the VIP and runs the notify
	// hook a moment apart).
	ReconcileGrace time.Duration `toml:"reconcile_grace"`
	// MetricsListen serves Prometheus GET /metrics on this host:port, e.g.
	// "127.0.0.1:9851"; empty (the default) is off. Keep it on loopback
	// (or an address only the monitoring system reaches): the endpoint
	// has no authentication.
	MetricsListen string `toml:"metrics_listen"`

	Metadata   MetadataConfig   `toml:"metadata"`
	Report     ReportConfig     `toml:"report"`
	Keepalived KeepalivedConfig `toml:"keepalived"`

	// ChecksMode says how Checks combine with the group's checks: "add"
	// (default: added, a local check with a group check's name replaces
	// it) or "replace" (the group's checks are ignored).
	ChecksMode string `toml:"checks_mode"`
	// Checks are local health checks.
	Checks []CheckConfig `toml:"checks"`

	// path is the file the configuration was loaded from, for errors.
	path string
}

// MetadataConfig says where the group's metadata comes from: exactly one
// of URL (hostsync's guest API) and File (written by cloud-init).
type MetadataConfig struct {
	URL          string        `toml:"url"`
	File         string        `toml:"file"`
	PollInterval time.Duration `toml:"poll_interval"`
	Timeout      time.Duration `toml:"timeout"`
	// Wait is how long one request to hostsync waits for the document to
	// change (GET ?wait=, when hostsync offers it), so that a change is
	// applied at once; polling every PollInterval goes on as well. 0
	// turns waiting off.
	Wait time.Duration `toml:"wait"`
}

// ReportConfig tunes how transitions are reported to hostsync.
type ReportConfig struct {
	// URL is where claims are POSTed; empty means the metadata URL's
	// scheme://host + api.PathClaims. With a file metadata source and no
	// URL, reporting is off.
	URL string `toml:"url"`
	// Disabled turns reporting off; transitions are still recorded.
	Disabled bool `toml:"disabled"`
	// Timeout bounds one POST.
	Timeout time.Duration `toml:"timeout"`
	// MinBackoff and MaxBackoff bound the wait between failed attempts
	// (doubling from min to max).
	MinBackoff time.Duration `toml:"min_backoff"`
	MaxBackoff time.Duration `toml:"max_backoff"`
	// Interval is how often the outbox is looked at without a new event.
	Interval time.Duration `toml:"interval"`
}

// KeepalivedConfig locates keepalived's files and says how to reload it.
type KeepalivedConfig struct {
	// Binary is used for `keepalived --config-test`; validation is skipped
	// (and said so in the log) when it does not exist.
	Binary string `toml:"binary"`
	// SkipConfigTest turns validation off.
	SkipConfigTest bool `toml:"skip_config_test"`
	// Config is keepalived.conf, owned by the agent.
	Config string `toml:"config"`
	// ScriptsDir holds the rendered check and notify scripts.
	ScriptsDir string `toml:"scripts_dir"`
	// PIDFile is keepalived's main pid file (SIGHUP reloads, liveness).
	PIDFile string `toml:"pid_file"`
	// Unit is keepalived's systemd unit.
	Unit string `toml:"unit"`
	// Reload is "auto" (systemd when the unit is known to a running
	// systemd, else the pid file), "systemd", "signal" or "none".
	Reload string `toml:"reload"`
	// MinReloadInterval is the least time between two reloads of
	// keepalived. Revisions arriving faster are coalesced: the agent
	// installs the latest one when the interval has passed. Frequent
	// SIGHUPs make keepalived re-run its state machine and can flap the
	// VIP (Neutron LP#1731595).
	MinReloadInterval time.Duration `toml:"min_reload_interval"`
}

// CheckConfig is a local health check; the fields mean what they mean in
// the group metadata (vrrp.Check).
type CheckConfig struct {
	Name         string        `toml:"name"`
	Kind         string        `toml:"kind"`
	Interval     time.Duration `toml:"interval"`
	Timeout      time.Duration `toml:"timeout"`
	Weight       int           `toml:"weight"`
	Fall         int           `toml:"fall"`
	Rise         int           `toml:"rise"`
	Process      string        `toml:"process"`
	URL          string        `toml:"url"`
	ExpectStatus int           `toml:"expect_status"`
	Address      string        `toml:"address"`
	Command      []string      `toml:"command"`
	RestartUnit  string        `toml:"restart_unit"`
	// OnFailure is "resign" (the agent runs the check; the default
	// without a weight) or "lower_priority" (a keepalived vrrp_script
	// with the weight; the default with one).
	OnFailure string `toml:"on_failure"`
}

// Reload modes.
const (
	ReloadAuto    = "auto"
	ReloadSystemd = "systemd"
	ReloadSignal  = "signal"
	ReloadNone    = "none"
)

// Checks modes.
const (
	ChecksAdd     = "add"
	ChecksReplace = "replace"
)

// DefaultConfig is the configuration before the file is applied.
func DefaultConfig() Config {
	return Config{
		Interface:         "eth0",
		StateDir:          "/var/lib/vipkeeper",
		Socket:            control.DefaultSocket,
		Vipctl:            "/usr/bin/vipctl",
		TrackDir:          DefaultTrackDir,
		HistoryLimit:      1000,
		ReconcileInterval: 2 * time.Second,
		ReconcileGrace:    5 * time.Second,
		ChecksMode:        ChecksAdd,
		Metadata: MetadataConfig{
			PollInterval: 10 * time.Second,
			Timeout:      5 * time.Second,
			Wait:         30 * time.Second,
		},
		Report: ReportConfig{
			Timeout:    5 * time.Second,
			MinBackoff: 500 * time.Millisecond,
			MaxBackoff: 30 * time.Second,
			Interval:   30 * time.Second,
		},
		Keepalived: KeepalivedConfig{
			Binary:     "/usr/sbin/keepalived",
			Config:     "/etc/keepalived/keepalived.conf",
			ScriptsDir: "/etc/keepalived/vipkeeper",
			PIDFile:    "/run/keepalived.pid",
			Unit:       "keepalived.service",
			Reload:     ReloadAuto,
			// With 3 s a burst of revisions over 5 s reloads keepalived
			// at most 3 times (at 0 s, 3 s and 6 s).
			MinReloadInterval: 3 * time.Second,
		},
	}
}

// ConfigError is the error of every configuration check: it names the
// file, the key, the line where known and what is wrong or allowed.
type ConfigError = config.Error

// ErrUnknownKey is the Err of a *ConfigError for a key the agent does not
// know.
var ErrUnknownKey = config.ErrUnknownKey

// LoadConfig reads, decodes strictly (internal/config: unknown keys are
// refused) and validates a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agent: read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes and validates a configuration; path is only used in
// errors and may be empty.
func ParseConfig(path string, data []byte) (*Config, error) {
	cfg := DefaultConfig()
	cfg.path = path
	if _, err := config.Load(path, data, &cfg); err != nil {
		return nil, err
	}
	if cfg.SpoolDir == "" && cfg.StateDir != "" {
		cfg.SpoolDir = filepath.Join(cfg.StateDir, "spool")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Path is the file the configuration came from ("" when built in code).
func (c *Config) Path() string { return c.path }

var reUnitName = regexp.MustCompile(`^[A-Za-z0-9@._-]{1,200}\.service$`)

// systemDirs are directories that must never be keepalived.scripts_dir:
// the agent owns what it creates there and removes older script sets.
var systemDirs = []string{
	"/", "/bin", "/boot", "/dev", "/etc", "/etc/keepalived", "/etc/systemd", "/etc/vipkeeper",
	"/home", "/lib", "/lib32", "/lib64", "/media", "/mnt", "/opt", "/proc", "/root", "/run",
	"/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/bin", "/usr/lib", "/usr/lib64", "/usr/libexec",
	"/usr/local", "/usr/local/bin", "/usr/local/lib", "/usr/local/sbin", "/usr/sbin", "/usr/share",
	"/var", "/var/lib", "/var/log", "/var/run", "/var/tmp",
}

// within reports whether the clean absolute path p is dir or under it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// Validate checks the configuration without looking at the host (whether
// the interface exists is checked when the agent starts). Errors are
// *ConfigError.
func (c *Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return config.Errorf(c.path, key, format, args...)
	}
	if c.Member != "" && !vrrp.ValidMemberName(c.Member) {
		return bad("member", "%q is not a member name (%s), or leave it empty to detect it by address", c.Member, vrrp.MemberNameRule)
	}
	// The rule render applies: a name accepted here renders.
	if !vrrp.ValidInterfaceName(c.Interface) {
		return bad("interface", "%q is not an interface name (%s)", c.Interface, vrrp.InterfaceNameRule)
	}
	for _, p := range []struct{ key, v string }{
		{"state_dir", c.StateDir},
		{"socket", c.Socket},
		{"spool_dir", c.SpoolDir},
		{"vipctl", c.Vipctl},
		{"track_dir", c.TrackDir},
		{"keepalived.binary", c.Keepalived.Binary},
		{"keepalived.config", c.Keepalived.Config},
		{"keepalived.scripts_dir", c.Keepalived.ScriptsDir},
		{"keepalived.pid_file", c.Keepalived.PIDFile},
	} {
		if err := config.AbsPath(p.v); err != nil {
			return bad(p.key, "%v", err)
		}
	}
	if err := c.checkPathsApart(); err != nil {
		return err
	}
	if err := config.SocketPath(c.Socket); err != nil {
		return bad("socket", "%v", err)
	}
	if c.MetricsListen != "" {
		if err := config.ListenAddr(c.MetricsListen); err != nil {
			return bad("metrics_listen", "%v", err)
		}
	}
	if c.HistoryLimit < 1 || c.HistoryLimit > 100000 {
		return bad("history_limit", "%d is out of range, allowed 1–100000", c.HistoryLimit)
	}
	for _, d := range []struct {
		key      string
		v        time.Duration
		min, max time.Duration
	}{
		{"reconcile_interval", c.ReconcileInterval, 100 * time.Millisecond, time.Hour},
		{"reconcile_grace", c.ReconcileGrace, 0, time.Hour},
		{"metadata.poll_interval", c.Metadata.PollInterval, 100 * time.Millisecond, 24 * time.Hour},
		{"metadata.timeout", c.Metadata.Timeout, 100 * time.Millisecond, 5 * time.Minute},
		{"metadata.wait", c.Metadata.Wait, 0, 10 * time.Minute},
		{"report.timeout", c.Report.Timeout, 100 * time.Millisecond, 5 * time.Minute},
		{"report.min_backoff", c.Report.MinBackoff, 10 * time.Millisecond, time.Hour},
		{"report.max_backoff", c.Report.MaxBackoff, 10 * time.Millisecond, 24 * time.Hour},
		{"report.interval", c.Report.Interval, 100 * time.Millisecond, 24 * time.Hour},
		{"keepalived.min_reload_interval", c.Keepalived.MinReloadInterval, 0, 10 * time.Minute},
	} {
		if err := config.Duration(d.v, d.min, d.max); err != nil {
			return bad(d.key, "%v", err)
		}
	}
	if c.Report.MaxBackoff < c.Report.MinBackoff {
		return bad("report.max_backoff", "%s is below report.min_backoff %s", c.Report.MaxBackoff, c.Report.MinBackoff)
	}
	switch {
	case c.Metadata.URL == "" && c.Metadata.File == "":
		return bad("metadata", "set url (hostsync's guest API, e.g. http://192.0.2.1:8750%s) or file (written by cloud-init)", api.PathMetadata)
	case c.Metadata.URL != "" && c.Metadata.File != "":
		return bad("metadata", "url and file are both set; set exactly one")
	case c.Metadata.URL != "":
		if err := checkHTTPURL(c.Metadata.URL); err != nil {
			return bad("metadata.url", "%v", err)
		}
	default:
		if err := config.AbsPath(c.Metadata.File); err != nil {
			return bad("metadata.file", "%v", err)
		}
	}
	if c.Report.URL != "" {
		if err := checkHTTPURL(c.Report.URL); err != nil {
			return bad("report.url", "%v", err)
		}
	}
	if !slices.Contains([]string{ReloadAuto, ReloadSystemd, ReloadSignal, ReloadNone}, c.Keepalived.Reload) {
		return bad("keepalived.reload", "%q is not allowed, use auto, systemd, signal or none", c.Keepalived.Reload)
	}
	if c.Keepalived.Unit != "" && !reUnitName.MatchString(c.Keepalived.Unit) {
		return bad("keepalived.unit", "%q is not a systemd service name such as keepalived.service", c.Keepalived.Unit)
	}
	if c.Keepalived.Reload == ReloadSystemd && c.Keepalived.Unit == "" {
		return bad("keepalived.unit", "is required with reload = \"systemd\"")
	}
	if c.ChecksMode != ChecksAdd && c.ChecksMode != ChecksReplace {
		return bad("checks_mode", "%q is not allowed, use add or replace", c.ChecksMode)
	}
	names := map[string]int{}
	for i, cc := range c.Checks {
		key := fmt.Sprintf("checks[%d]", i)
		chk, err := cc.toCheck(key)
		if err != nil {
			return bad(key, "%v", err)
		}
		if err := vrrp.ValidateCheck(key, chk); err != nil {
			var fe *vrrp.FieldError
			if errors.As(err, &fe) {
				return bad(fe.Path, "%s", fe.Msg)
			}
			return bad(key, "%v", err)
		}
		if j, dup := names[chk.Name]; dup {
			return bad(key+".name", "%q is already used by checks[%d]", chk.Name, j)
		}
		names[chk.Name] = i
	}
	return nil
}

// checkPathsApart refuses paths that would make the agent overwrite or
// delete what is not its own: a system directory as scripts_dir, the pid
// file on a file the agent writes, its state inside the scripts directory.
func (c *Config) checkPathsApart() error {
	bad := func(key, format string, args ...any) error {
		return config.Errorf(c.path, key, format, args...)
	}
	k := c.Keepalived
	if slices.Contains(systemDirs, k.ScriptsDir) {
		return bad("keepalived.scripts_dir", "%q is a system directory; the agent creates and removes script sets in it: use a directory of its own such as /etc/keepalived/vipkeeper", k.ScriptsDir)
	}
	if k.ScriptsDir == filepath.Dir(k.Config) {
		return bad("keepalived.scripts_dir", "%q is the directory of keepalived.config; use a directory of its own such as %s", k.ScriptsDir, filepath.Join(filepath.Dir(k.Config), "vipkeeper"))
	}
	if within(k.Config, k.ScriptsDir) {
		return bad("keepalived.config", "%q is inside keepalived.scripts_dir %q; keep keepalived.conf outside it", k.Config, k.ScriptsDir)
	}
	for _, p := range []struct{ key, v string }{
		{"keepalived.config", k.Config},
		{"keepalived.binary", k.Binary},
		{"socket", c.Socket},
		{"metadata.file", c.Metadata.File},
	} {
		if k.PIDFile == p.v {
			return bad("keepalived.pid_file", "%q is also %s; the pid file is keepalived's own file (e.g. /run/keepalived.pid)", k.PIDFile, p.key)
		}
	}
	for _, p := range []struct{ key, v string }{
		{"keepalived.pid_file", k.PIDFile},
		{"state_dir", c.StateDir},
		{"spool_dir", c.SpoolDir},
		{"socket", c.Socket},
	} {
		if within(p.v, k.ScriptsDir) {
			return bad(p.key, "%q is inside keepalived.scripts_dir %q, where the agent replaces and removes files; put it elsewhere", p.v, k.ScriptsDir)
		}
	}
	if within(k.ScriptsDir, c.StateDir) {
		return bad("keepalived.scripts_dir", "%q is inside state_dir %q; keep the scripts and the agent's state apart", k.ScriptsDir, c.StateDir)
	}
	return c.checkTrackDirApart()
}

// checkTrackDirApart refuses a track_dir that holds or is anything else:
// the agent removes the files of checks it no longer runs from it.
func (c *Config) checkTrackDirApart() error {
	bad := func(format string, args ...any) error {
		return config.Errorf(c.path, "track_dir", format, args...)
	}
	td, k := c.TrackDir, c.Keepalived
	if slices.Contains(systemDirs, td) {
		return bad("%q is a system directory; the agent removes the track files of checks no longer run from it: use a directory of its own such as %s", td, DefaultTrackDir)
	}
	for _, p := range []struct{ key, v string }{
		{"keepalived.config", k.Config},
		{"keepalived.pid_file", k.PIDFile},
		{"keepalived.binary", k.Binary},
		{"keepalived.scripts_dir", k.ScriptsDir},
		{"vipctl", c.Vipctl},
		{"socket", c.Socket},
		{"state_dir", c.StateDir},
		{"spool_dir", c.SpoolDir},
		{"metadata.file", c.Metadata.File},
	} {
		if p.v != "" && within(p.v, td) {
			return bad("%q holds %s %q; use a directory of its own such as %s", td, p.key, p.v, DefaultTrackDir)
		}
	}
	for _, p := range []struct{ key, v string }{
		{"keepalived.scripts_dir", k.ScriptsDir},
		{"state_dir", c.StateDir},
		{"spool_dir", c.SpoolDir},
	} {
		if within(td, p.v) {
			return bad("%q is inside %s %q; use a directory of its own such as %s", td, p.key, p.v, DefaultTrackDir)
		}
	}
	return nil
}

// LocalChecks converts the local checks to vrrp checks (valid after Validate).
func (c *Config) LocalChecks() []vrrp.Check {
	out := make([]vrrp.Check, 0, len(c.Checks))
	for i, cc := range c.Checks {
		chk, _ := cc.toCheck(fmt.Sprintf("checks[%d]", i))
		out = append(out, chk)
	}
	return out
}

// ReportURL is where transitions are reported, or "" when reporting is off.
func (c *Config) ReportURL() string {
	if c.Report.Disabled {
		return ""
	}
	if c.Report.URL != "" {
		return c.Report.URL
	}
	if c.Metadata.URL == "" {
		return ""
	}
	u, err := url.Parse(c.Metadata.URL)
	if err != nil {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: api.PathClaims}).String()
}

func (cc CheckConfig) toCheck(key string) (vrrp.Check, error) {
	iv, err := toSeconds(cc.Interval)
	if err != nil {
		return vrrp.Check{}, fmt.Errorf("interval: %w", err)
	}
	to, err := toSeconds(cc.Timeout)
	if err != nil {
		return vrrp.Check{}, fmt.Errorf("timeout: %w", err)
	}
	return vrrp.Check{
		Name: cc.Name, Kind: vrrp.CheckKind(cc.Kind),
		Interval: iv, Timeout: to, Weight: cc.Weight, Fall: cc.Fall, Rise: cc.Rise,
		Process: cc.Process, URL: cc.URL, ExpectStatus: cc.ExpectStatus,
		Address: cc.Address, Command: slices.Clone(cc.Command), RestartUnit: cc.RestartUnit,
		OnFailure: cc.OnFailure,
	}, nil
}

func toSeconds(d time.Duration) (vrrp.Seconds, error) {
	if d < 0 || d%time.Millisecond != 0 || d > vrrp.MaxSeconds.Duration() {
		return 0, fmt.Errorf("%s is not a whole number of milliseconds between 0 and 24h", d)
	}
	return vrrp.Seconds(d / time.Millisecond), nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fmt.Errorf("%q is not an http(s) URL with a host and without credentials", s)
	}
	return nil
}
