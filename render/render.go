// Package render turns an instance group's VIP metadata (package vrrp) into,
// for one member, keepalived.conf, one health-check script per check and the
// notify hook script. Rendering is deterministic (same input, same bytes) and
// injection-proof: every name or string from metadata is validated by vrrp
// and quoted where it lands, so it cannot add keepalived syntax or shell code.
//
// A check renders according to its policy (vrrp.Check.EffectiveOnFailure):
//
//   - resign (the default): the agent runs the check and writes its verdict
//     to the track file TrackFile(Options.TrackDir, NAME), "0" healthy, "1"
//     failing. keepalived.conf declares it as `track_file NAME { file ...
//     weight 0 init_file 1 }` and the instance tracks it with weight 0, so
//     a failing check puts the member in FAULT as soon as the file changes
//     (keepalived watches it with inotify). A master entering FAULT sends an
//     advert with priority 0 and the best backup takes over after its skew
//     time, (256 − priority)/256 × advert_int. init_file creates a missing
//     file as "1" (failing until the agent's first verdict) and never
//     overwrites one, so a reload keeps the current verdict; the directory
//     is not versioned and must exist (keepalived drops a track file whose
//     directory is missing). A backstop `vrrp_script NAME` (weight 0,
//     every Options.BackstopInterval) runs the same check through
//     `vipctl check ... --agent-socket SOCKET`, which exits 0 while the
//     agent answers and probes itself when the agent is dead or hung.
//   - lower_priority: the check is a `vrrp_script NAME` with its weight, run
//     by keepalived, as the seed's configuration did. A failing check only
//     changes the priority; the master sends no advert for it and backups
//     discard adverts below their own priority, so the VIP moves when the
//     best backup's master-down timer runs out, 3 × advert_int + skew.
//
// In groups of three or more the policies differ when the check fails on
// every member: with resign all are in FAULT and no member holds the VIP;
// with lower_priority the member with the highest priority keeps it.
//
// A dual-stack group (vrrp.Metadata.VIP6 beside an IPv4 VIP) renders one
// VRRP instance, the IPv4 one, and its IPv6 VIP in the instance's
// virtual_ipaddress_excluded block: keepalived runs one address family per
// instance, and an excluded address is added and removed by the same state
// machine as the VIP, so both addresses always move together (a second,
// IPv6 instance in a sync group would be a second election that can
// disagree for a moment, and doubles the adverts). keepalived adds every
// IPv6 VIP, excluded ones too, with IFA_F_NODAD unless the entry says
// "-nodad" (which turns duplicate address detection on): DAD would leave
// the VIP tentative after every move, and failed for good when a
// neighbour advertisement for it arrives meanwhile (the old master's, or
// hostsync's burst). So the entries carry no option, and never -nodad.
package render

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Names and modes of the rendered files.
const (
	ConfigName       = "keepalived.conf"
	NotifyScriptName = "notify.sh"
	ConfigMode       = 0o640
	ScriptMode       = 0o700
)

// CheckScriptName is the file name of the script of the check named name.
func CheckScriptName(name string) string { return "check_" + name + ".sh" }

// ScriptsVersionPrefix starts the name of every versioned scripts
// directory (Output.ScriptsVersion).
const ScriptsVersionPrefix = "r-"

// Options are the member-local inputs to rendering.
type Options struct {
	// Self is the member name (must be in Metadata.Members).
	Self string
	// Interface is the NIC keepalived runs VRRP on (default "eth0").
	Interface string
	// ScriptsDir is the absolute directory the scripts are installed into
	// (default "/etc/keepalived/vipkeeper"); keepalived.conf refers to
	// scripts by ScriptsDir/NAME, or ScriptsDir/VERSION/NAME with
	// VersionedScripts.
	ScriptsDir string
	// VersionedScripts puts the scripts in a subdirectory of ScriptsDir
	// named after their content (Output.ScriptsVersion). A new set of
	// scripts then never overwrites the files a running keepalived.conf
	// refers to: the agent writes the new directory whole and then swaps
	// keepalived.conf, so config and scripts change together or not at all.
	VersionedScripts bool
	// Vipctl is the absolute path of the vipctl binary that check and notify
	// scripts run (default "/usr/bin/vipctl").
	Vipctl string
	// NotifySocket is the agent's control socket the notify hook writes to
	// (default "/run/vipkeeper/agent.sock").
	NotifySocket string
	// SpoolDir is where the notify hook spools events while the agent is down
	// (default "/var/lib/vipkeeper/spool").
	SpoolDir string
	// TrackDir is the absolute directory of the track files of the resign
	// checks (default "/run/vipkeeper/track"): keepalived.conf refers to
	// TrackFile(TrackDir, NAME). It is not versioned as the scripts are:
	// a verdict written there survives every new rendering.
	TrackDir string
	// BackstopInterval is how often keepalived runs the backstop
	// vrrp_script of each resign check (default 3 s, whole seconds 1–3600).
	BackstopInterval vrrp.Seconds
	// ExtraChecks are local checks added to the group's; a local check with
	// the same name as a group check replaces it.
	ExtraChecks []vrrp.Check
}

// File is one rendered file, named relative to its directory.
type File struct {
	Name string // "keepalived.conf" or a script's base name
	Mode uint32 // 0640 for the config, 0700 for scripts
	Data []byte
}

// Output is everything rendered for one member.
type Output struct {
	// Config is keepalived.conf.
	Config []byte
	// Scripts go into ScriptsDir; keepalived.conf refers to them there.
	Scripts []File
	// ScriptsDir is the directory keepalived.conf refers to the scripts in:
	// Options.ScriptsDir, or Options.ScriptsDir/ScriptsVersion with
	// Options.VersionedScripts.
	ScriptsDir string
	// ScriptsVersion is "r-" and 16 hex digits of a SHA-256 over the
	// scripts (name, mode, data): the same scripts give the same version.
	// Empty without Options.VersionedScripts.
	ScriptsVersion string
	// Hash is a hex SHA-256 over Config and every script (name, mode, data),
	// used by the agent to reload only on change.
	Hash string
}

// Render renders keepalived.conf and the scripts for member opts.Self.
// m is validated again and its error returned unchanged (*vrrp.FieldError);
// invalid options give an *OptionError, or a *vrrp.FieldError naming
// "local_checks[i]" for opts.ExtraChecks. The output depends only on m and
// opts: the same input gives the same bytes.
func Render(m *vrrp.Metadata, opts Options) (*Output, error) {
	if m == nil {
		return nil, errors.New("render: no metadata")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	// vrrp.Validate refuses '$' in every value written into keepalived.conf
	// (keepalived's parameter substitution, e.g. $_RANDOM).
	opts = opts.withDefaults()
	if err := opts.validate(m); err != nil {
		return nil, err
	}
	self, _ := m.Member(opts.Self)
	checks := EffectiveChecks(m, opts.ExtraChecks)

	// The scripts do not depend on where they are installed, so their
	// version can name the directory keepalived.conf refers to.
	out := &Output{ScriptsDir: opts.ScriptsDir}
	for _, c := range checks {
		out.Scripts = append(out.Scripts, File{
			Name: CheckScriptName(c.Name),
			Mode: ScriptMode,
			Data: checkScript(m, opts, c),
		})
	}
	out.Scripts = append(out.Scripts, File{Name: NotifyScriptName, Mode: ScriptMode, Data: notifyScript(m, opts)})
	slices.SortFunc(out.Scripts, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	if opts.VersionedScripts {
		out.ScriptsVersion = ScriptsVersionPrefix + hashFiles(out.Scripts)[:16]
		out.ScriptsDir = path.Join(opts.ScriptsDir, out.ScriptsVersion)
	}
	out.Config = renderConfig(m, out.ScriptsDir, opts, self, checks)
	out.Hash = hashFiles(out.Files())
	return out, nil
}

// Files returns the config and every script, sorted by name.
func (o *Output) Files() []File {
	files := append([]File{{Name: ConfigName, Mode: ConfigMode, Data: o.Config}}, o.Scripts...)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	return files
}

// hashFiles is a SHA-256 over each file's name, mode, length and data, in
// the given order; the length prefix keeps two different sets of files from
// ever hashing the same bytes.
func hashFiles(files []File) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00", f.Name, f.Mode, len(f.Data))
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// initialState is MASTER for the highest-priority member when preemption is
// immediate. keepalived clears nopreempt and preempt_delay on an instance
// whose initial state is MASTER, so with either every member starts BACKUP.
func initialState(m *vrrp.Metadata, self vrrp.Member) vrrp.Role {
	if !m.PreemptEnabled() || m.PreemptDelay != 0 {
		return vrrp.RoleBackup
	}
	for _, mem := range m.Members {
		if mem.Priority > self.Priority {
			return vrrp.RoleBackup
		}
	}
	return vrrp.RoleMaster
}

// backstopAgentWait is how long the backstop's `vipctl check
// --agent-socket` waits for the agent's answer before probing itself.
const backstopAgentWait = vrrp.Seconds(1000)

// backstopMargin covers starting vipctl and the agent's answer arriving
// late, so that keepalived never kills a backstop that would have passed.
const backstopMargin = vrrp.Seconds(500)

// backstopInterval is Options.BackstopInterval, or the check's own
// interval rounded up to whole seconds when that is longer: a backstop
// never probes more often than the agent would.
func backstopInterval(opts Options, c vrrp.Check) vrrp.Seconds {
	return max(opts.BackstopInterval, ceilSeconds(c.EffectiveInterval()))
}

// backstopTimeout is keepalived's timeout of a backstop run, in whole
// seconds (keepalived reads no fractions there): the wait for the agent,
// then the check's own timeout (a restart included), and a margin.
func backstopTimeout(c vrrp.Check) vrrp.Seconds {
	return ceilSeconds(backstopAgentWait + c.EffectiveTimeout() + backstopMargin)
}

// ceilSeconds rounds s up to whole seconds.
func ceilSeconds(s vrrp.Seconds) vrrp.Seconds { return (s + 999) / 1000 * 1000 }

// confWriter writes keepalived.conf lines with four-space indentation.
type confWriter struct {
	b     strings.Builder
	depth int
}

func (w *confWriter) line(parts ...string) {
	for range w.depth {
		w.b.WriteString("    ")
	}
	w.b.WriteString(strings.Join(parts, " "))
	w.b.WriteByte('\n')
}

func (w *confWriter) open(parts ...string) { w.line(append(parts, "{")...); w.depth++ }
func (w *confWriter) close()               { w.depth--; w.line("}") }

// quoted wraps a value keepalived reads as one string. Only values that
// validation restricted to a quote-free character set are passed here.
func quoted(s string) string { return `"` + s + `"` }

// renderConfig renders keepalived.conf referring to the scripts in
// scriptsDir. Nothing in it depends on the metadata's revision (nor on the
// EIP), so a revision that changes nothing keepalived reads renders the
// same bytes and the agent neither rewrites the file nor reloads.
func renderConfig(m *vrrp.Metadata, scriptsDir string, opts Options, self vrrp.Member, checks []vrrp.Check) []byte {
	var w confWriter
	w.line("# Generated by vipkeeper from group", m.Group.Name, "(id "+m.Group.ID+") for member", self.Name+".")
	w.line("# Do not edit: vipkeeper overwrites this file.")
	w.line()
	w.open("global_defs")
	w.line("router_id", self.Name)
	w.line("enable_script_security")
	w.line("script_user", "root")
	w.close()

	var scripts, files []string // names in track_script and track_file
	for _, c := range checks {
		w.line()
		script := quoted(path.Join(scriptsDir, CheckScriptName(c.Name)))
		if c.EffectiveOnFailure() == vrrp.OnFailureLowerPriority {
			w.open("vrrp_script", c.Name)
			w.line("script", script)
			w.line("interval", c.EffectiveInterval().String())
			w.line("timeout", c.EffectiveTimeout().String())
			w.line("weight", strconv.Itoa(c.Weight))
			w.line("fall", strconv.Itoa(max(c.Fall, 1)))
			w.line("rise", strconv.Itoa(max(c.Rise, 1)))
			w.close()
			scripts = append(scripts, c.Name)
			continue
		}
		w.line("# Check " + c.Name + " (on_failure resign): the agent writes its verdict here, 0 healthy, 1 failing = FAULT.")
		w.open("track_file", c.Name)
		w.line("file", quoted(TrackFile(opts.TrackDir, c.Name)))
		w.line("weight", "0")
		w.line("init_file", "1")
		w.close()
		w.line("# Backstop of " + c.Name + ": exits 0 while the agent answers, else runs the check; failing = FAULT.")
		w.open("vrrp_script", c.Name)
		w.line("script", script)
		w.line("interval", backstopInterval(opts, c).String())
		w.line("timeout", backstopTimeout(c).String())
		w.line("weight", "0")
		w.line("fall", "1")
		w.line("rise", "1")
		w.close()
		scripts = append(scripts, c.Name)
		files = append(files, c.Name)
	}

	w.line()
	w.open("vrrp_instance", m.InstanceName())
	w.line("state", string(initialState(m, self)))
	w.line("interface", opts.Interface)
	w.line("virtual_router_id", strconv.Itoa(m.EffectiveVRID()))
	w.line("priority", strconv.Itoa(self.Priority))
	w.line("advert_int", m.EffectiveAdvertInt().String())
	if m.EffectiveVRRPVersion() == 3 {
		w.line("version", "3")
	}
	switch {
	case !m.PreemptEnabled():
		w.line("nopreempt")
	case m.PreemptDelay != 0:
		w.line("preempt_delay", m.PreemptDelay.String())
	}
	if m.Auth != nil {
		w.open("authentication")
		w.line("auth_type", m.Auth.Type)
		w.line("auth_pass", m.Auth.Pass)
		w.close()
	}
	// A sole member has no unicast peer; keepalived warns about unicast
	// statements without peers (and falls back to multicast), so a group of
	// one renders neither.
	if m.Unicast && len(m.Members) > 1 {
		w.line("unicast_src_ip", self.Address.String())
		w.open("unicast_peer")
		for _, mem := range m.Members {
			if mem.Name != self.Name {
				w.line(mem.Address.String())
			}
		}
		w.close()
	}
	if g := m.Garp; g != nil {
		if g.MasterDelay != 0 {
			w.line("garp_master_delay", strconv.Itoa(g.MasterDelay))
		}
		if g.MasterRepeat != 0 {
			w.line("garp_master_repeat", strconv.Itoa(g.MasterRepeat))
		}
		if g.MasterRefresh != 0 {
			w.line("garp_master_refresh", strconv.Itoa(g.MasterRefresh))
		}
	}
	if len(scripts) > 0 {
		w.open("track_script")
		for _, name := range scripts {
			w.line(name)
		}
		w.close()
	}
	if len(files) > 0 {
		w.open("track_file")
		for _, name := range files {
			w.line(name, "weight", "0")
		}
		w.close()
	}
	w.open("virtual_ipaddress")
	w.line(m.VIP.String())
	w.close()
	if m.VIP6.IsValid() {
		// keepalived runs one address family per instance: the IPv6 VIP
		// of a dual-stack group is an excluded address of the IPv4
		// instance, added and removed with the IPv4 VIP by the same
		// state machine (and announced by keepalived with unsolicited
		// neighbour advertisements), never in the adverts.
		w.open("virtual_ipaddress_excluded")
		w.line(m.VIP6.String())
		w.close()
	}
	w.line("notify", quoted(path.Join(scriptsDir, NotifyScriptName)))
	w.close()
	return []byte(w.b.String())
}
