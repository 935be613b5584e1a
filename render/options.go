package render

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Defaults applied to zero Options fields.
const (
	DefaultInterface    = "eth0"
	DefaultScriptsDir   = "/etc/keepalived/vipkeeper"
	DefaultVipctl       = "/usr/bin/vipctl"
	DefaultNotifySocket = "/run/vipkeeper/agent.sock"
	DefaultSpoolDir     = "/var/lib/vipkeeper/spool"
	DefaultTrackDir     = "/run/vipkeeper/track"
	// DefaultBackstopInterval is how often keepalived runs the backstop
	// vrrp_script of a resign check.
	DefaultBackstopInterval = vrrp.Seconds(3000)
)

// MaxBackstopInterval bounds Options.BackstopInterval (keepalived reads a
// vrrp_script interval as whole seconds).
const MaxBackstopInterval = vrrp.Seconds(3600 * 1000)

// TrackFile is the track file of the resign check named name in dir: the
// file the agent writes the check's verdict to ("0" healthy, "1" failing)
// and keepalived.conf's vrrp_track_file refers to.
func TrackFile(dir, name string) string { return path.Join(dir, name) }

// EffectiveChecks returns the checks rendered for a member: m's checks with
// same-named extra (local) checks replacing them in place, followed by the
// remaining extra checks in order.
func EffectiveChecks(m *vrrp.Metadata, extra []vrrp.Check) []vrrp.Check {
	var group []vrrp.Check
	if m != nil {
		group = m.Checks
	}
	return mergeChecks(group, extra)
}

// OptionError says which rendering option is wrong and what is allowed.
// Render returns it (as error) for invalid Options other than ExtraChecks,
// whose errors are *vrrp.FieldError with the path "local_checks[i]...".
type OptionError struct {
	Option string // "self", "interface", "scripts_dir", "vipctl", "notify_socket", "spool_dir", "track_dir", "backstop_interval"
	Msg    string
}

func (e *OptionError) Error() string { return "render: " + e.Option + ": " + e.Msg }

// maxPath bounds every path option.
const maxPath = 1024

var (
	// rePath is deliberately narrow: the paths land unquoted-by-keepalived
	// inside "script" and "notify" strings (which keepalived splits on
	// spaces), so quotes, whitespace, control characters, comment starters
	// (# !), braces and $ (keepalived's parameter substitution) are refused.
	rePath = regexp.MustCompile(`^/[A-Za-z0-9._/@+:,=~-]*$`)
)

// withDefaults returns o with every empty field set to its default.
func (o Options) withDefaults() Options {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&o.Interface, DefaultInterface)
	def(&o.ScriptsDir, DefaultScriptsDir)
	def(&o.Vipctl, DefaultVipctl)
	def(&o.NotifySocket, DefaultNotifySocket)
	def(&o.SpoolDir, DefaultSpoolDir)
	def(&o.TrackDir, DefaultTrackDir)
	if o.BackstopInterval == 0 {
		o.BackstopInterval = DefaultBackstopInterval
	}
	return o
}

// validate checks options that already carry their defaults against m.
func (o Options) validate(m *vrrp.Metadata) error {
	if o.Self == "" {
		return &OptionError{Option: "self", Msg: "is required, the name of this member"}
	}
	if _, ok := m.Member(o.Self); !ok {
		names := make([]string, len(m.Members))
		for i, mem := range m.Members {
			names[i] = mem.Name
		}
		return &OptionError{Option: "self", Msg: fmt.Sprintf("%q is not a member of group %s (members: %s)", o.Self, m.Group.Name, strings.Join(names, ", "))}
	}
	if !vrrp.ValidInterfaceName(o.Interface) {
		return &OptionError{Option: "interface", Msg: fmt.Sprintf("%q is not an interface name (%s)", o.Interface, vrrp.InterfaceNameRule)}
	}
	for _, p := range []struct{ opt, v string }{
		{"scripts_dir", o.ScriptsDir},
		{"vipctl", o.Vipctl},
		{"notify_socket", o.NotifySocket},
		{"spool_dir", o.SpoolDir},
		{"track_dir", o.TrackDir},
	} {
		if len(p.v) > maxPath || !rePath.MatchString(p.v) || path.Clean(p.v) != p.v {
			return &OptionError{Option: p.opt, Msg: fmt.Sprintf("%q is not a clean absolute path of at most %d of A-Z a-z 0-9 . _ / @ + : , = ~ -", p.v, maxPath)}
		}
	}
	if b := o.BackstopInterval; b < 1000 || b%1000 != 0 || b > MaxBackstopInterval {
		return &OptionError{Option: "backstop_interval", Msg: fmt.Sprintf("%s s is not allowed, use whole seconds 1–%s (keepalived's vrrp_script interval)", b, MaxBackstopInterval)}
	}
	names := map[string]int{}
	for i, c := range o.ExtraChecks {
		p := "local_checks[" + strconv.Itoa(i) + "]"
		if err := vrrp.ValidateCheck(p, c); err != nil {
			return err
		}
		if j, dup := names[c.Name]; dup {
			return &vrrp.FieldError{Path: p + ".name", Msg: fmt.Sprintf("%q is already used by local_checks[%d]", c.Name, j)}
		}
		names[c.Name] = i
	}
	return nil
}

// mergeChecks returns the group's checks with same-named local checks
// replacing them in place, followed by the remaining local checks in order.
func mergeChecks(group, local []vrrp.Check) []vrrp.Check {
	byName := make(map[string]int, len(local))
	for i, c := range local {
		byName[c.Name] = i
	}
	used := make([]bool, len(local))
	out := make([]vrrp.Check, 0, len(group)+len(local))
	for _, c := range group {
		if i, ok := byName[c.Name]; ok {
			out = append(out, local[i])
			used[i] = true
			continue
		}
		out = append(out, c)
	}
	for i, c := range local {
		if !used[i] {
			out = append(out, c)
		}
	}
	return out
}
