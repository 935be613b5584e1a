package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/keepalived"
	"github.com/vipkeeper/vipkeeper/agent/metadata"
	"github.com/vipkeeper/vipkeeper/agent/state"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/fsutil"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// ErrMemberUnknown is returned (wrapped) by an apply when this VM's member
// name is neither configured nor found among the group's member addresses.
var ErrMemberUnknown = errors.New("agent: cannot tell which member this VM is")

// configMode is keepalived.conf's mode; the scripts' modes come from render.
const configMode = render.ConfigMode

// apply fetches the metadata and, when it is new (or force), renders,
// validates, installs and reloads. Any failure before the install leaves
// every file as it was and keepalived untouched.
func (a *Agent) apply(ctx context.Context, force bool) (err error) {
	// result is the apply's label in vipkeeper_agent_apply_total: the step
	// under way when an error returns, else the outcome.
	result := ApplyFetchError
	defer func() { a.d.metrics.applied(result) }()
	prev := a.lastTag
	if force {
		prev = ""
	}
	doc, tag, err := a.d.source.Fetch(ctx, prev)
	if errors.Is(err, metadata.ErrNotModified) {
		result = ApplyNotModified
		return nil
	}
	if err != nil {
		return err // names the source already
	}
	result = ApplyMetadataError
	m, err := vrrp.Parse(doc)
	if err != nil {
		return fmt.Errorf("agent: metadata from %s: %w", a.d.source, err)
	}
	self, err := a.member(m)
	if err != nil {
		return err
	}
	opts := render.Options{
		Self:         self,
		Interface:    a.cfg.Interface,
		ScriptsDir:   a.cfg.Keepalived.ScriptsDir,
		Vipctl:       a.cfg.Vipctl,
		NotifySocket: a.cfg.Socket,
		SpoolDir:     a.cfg.SpoolDir,
		TrackDir:     a.cfg.TrackDir,
		ExtraChecks:  a.cfg.LocalChecks(),
		// Each set of scripts in its own directory: keepalived.conf,
		// written last, switches from one whole set to the next.
		VersionedScripts: true,
	}
	rm := m
	if a.cfg.ChecksMode == ChecksReplace {
		c := *m
		c.Checks = nil
		rm = &c
	}
	result = ApplyRenderError
	out, err := a.d.render(rm, opts)
	if err != nil {
		return fmt.Errorf("agent: render: %w", err)
	}

	a.mu.Lock()
	appliedHash, oldScripts, appliedRev := a.applied, a.scripts, a.revision
	a.mu.Unlock()

	changed := !a.installed(out)
	if !changed && appliedHash == out.Hash {
		// Nothing keepalived reads changed (the revision and the EIP are
		// not rendered): no write, no reload; the revision is recorded.
		// The installed keepalived.conf tracks these checks' files:
		// the runner must judge them (after an agent restart it starts
		// with none).
		result = ApplyInstallError
		if err := a.updateChecks(rm, opts); err != nil {
			return err
		}
		a.pruneTrack()
		if err := a.reloadForTrackDir(ctx); err != nil {
			result = ApplyReloadError
			return err
		}
		if m.Revision != appliedRev {
			result = ApplyStateError
			if err := a.store.SetApplied(a.appliedRecord(m, self, out)); err != nil {
				return err
			}
		}
		a.lastTag = tag
		a.noteApplied(m, self, nil)
		result = ApplyUnchanged
		return nil
	}
	// Coalesce bursts: within keepalived.min_reload_interval of the last
	// reload the change waits (the apply loop comes back when it is due
	// and installs whatever is newest then).
	now := a.d.now()
	a.mu.Lock()
	wait, first := time.Duration(0), a.deferUntil.IsZero()
	if !a.lastReload.IsZero() {
		wait = a.lastReload.Add(a.cfg.Keepalived.MinReloadInterval).Sub(now)
	}
	if wait > 0 {
		a.deferUntil = now.Add(wait)
	} else {
		a.deferUntil = time.Time{}
	}
	a.mu.Unlock()
	if wait > 0 {
		if first {
			a.log.Info("change held back to coalesce a burst of revisions", "op", "apply", "revision", m.Revision, "wait", wait)
		}
		result = ApplyDeferred
		return nil
	}
	if changed {
		result = ApplyValidateError
		if err := a.validate(ctx, rm, opts); err != nil {
			return err
		}
	}
	// The runner takes the new checks before keepalived.conf refers to
	// them: a new check's track file exists, saying "1", by then.
	result = ApplyInstallError
	if err := a.updateChecks(rm, opts); err != nil {
		return err
	}
	if changed {
		if err := a.install(out); err != nil {
			return err
		}
	}
	result = ApplyReloadError
	// Reload after the files are in place and before the apply is
	// recorded: a crash in between makes the next start reload again.
	// Reloaded or not running, keepalived reads the track files (their
	// directory exists now) from here on.
	a.trackDirMissing = false
	if a.cfg.Keepalived.Reload == ReloadNone {
		a.log.Info("files installed; reloading keepalived is off", "op", "reload", "hash", short(out.Hash))
	} else if err := a.d.keepalived.Reload(ctx); err != nil && !errors.Is(err, keepalived.ErrNotRunning) {
		return fmt.Errorf("agent: files installed (hash %s) but: %w", short(out.Hash), err)
	} else if err != nil {
		a.log.Info("keepalived not running; it reads the new files when it starts", "op", "reload")
	} else {
		a.mu.Lock()
		a.lastReload = a.d.now()
		a.mu.Unlock()
		a.log.Info("keepalived reloaded", "op", "reload", "revision", m.Revision, "hash", short(out.Hash))
	}
	// Only now that keepalived reads the new set may older sets go.
	a.prune(out, oldScripts)
	a.pruneTrack()
	ap := a.appliedRecord(m, self, out)
	result = ApplyStateError
	if err := a.store.SetApplied(ap); err != nil {
		return err
	}
	result = ApplyApplied
	a.lastTag = tag
	a.noteApplied(m, self, &ap)
	a.log.Info("applied metadata", "op", "apply", "group", m.Group.Name, "vip", m.VIP.String(), "revision", m.Revision, "hash", short(out.Hash), "changed", changed)
	return nil
}

func (a *Agent) appliedRecord(m *vrrp.Metadata, self string, out *render.Output) state.Applied {
	return state.Applied{
		Hash: out.Hash, Revision: m.Revision, Scripts: scriptNames(out),
		Member: self, Group: m.Group.Name, VIP: m.VIP.String(), VIP6: prefixText(m.VIP6), At: a.d.now(),
	}
}

// noteApplied updates the in-memory view after a successful apply; ap is
// nil when nothing had to be installed.
func (a *Agent) noteApplied(m *vrrp.Metadata, self string, ap *state.Applied) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.self, a.group, a.vip, a.vip6, a.revision = self, m.Group.Name, m.VIP, m.VIP6, m.Revision
	if ap != nil {
		a.applied, a.lastApply, a.scripts = ap.Hash, ap.At, ap.Scripts
	}
	a.publishLocked()
}

// member is the configured member name, or the member whose address is on
// the interface.
func (a *Agent) member(m *vrrp.Metadata) (string, error) {
	if a.cfg.Member != "" {
		if _, ok := m.Member(a.cfg.Member); !ok {
			return "", fmt.Errorf("%w: member %q (from the configuration) is not in group %s", ErrMemberUnknown, a.cfg.Member, m.Group.Name)
		}
		return a.cfg.Member, nil
	}
	addrs, err := a.d.link.Addrs()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrMemberUnknown, err)
	}
	var found []string
	for _, p := range addrs {
		if mem, ok := m.MemberByAddress(p.Addr()); ok && !slices.Contains(found, mem.Name) {
			found = append(found, mem.Name)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("%w: no address on %s is a member address of group %s; set member in the configuration", ErrMemberUnknown, a.cfg.Interface, m.Group.Name)
	default:
		return "", fmt.Errorf("%w: addresses on %s match several members (%s); set member in the configuration", ErrMemberUnknown, a.cfg.Interface, strings.Join(found, ", "))
	}
}

func scriptNames(out *render.Output) []string {
	names := make([]string, 0, len(out.Scripts))
	for _, s := range out.Scripts {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return names
}

// sameFile reports whether path holds exactly data with mode.
func sameFile(path string, data []byte, mode os.FileMode) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != mode || fi.Size() != int64(len(data)) {
		return false
	}
	cur, err := os.ReadFile(path)
	return err == nil && bytes.Equal(cur, data)
}

// holdsScripts reports whether dir is a root-only directory holding
// exactly out's scripts.
func holdsScripts(dir string, out *render.Output) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return false
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != len(out.Scripts) {
		return false
	}
	for _, s := range out.Scripts {
		if !sameFile(filepath.Join(dir, s.Name), s.Data, os.FileMode(s.Mode).Perm()) {
			return false
		}
	}
	return true
}

// installed reports whether keepalived.conf and the scripts it refers to
// are exactly out.
func (a *Agent) installed(out *render.Output) bool {
	return sameFile(a.cfg.Keepalived.Config, out.Config, configMode) && holdsScripts(out.ScriptsDir, out)
}

// validate renders the same metadata into a staging directory and runs
// keepalived's config test there, so that the live files are not touched
// before the new ones are known good.
func (a *Agent) validate(ctx context.Context, m *vrrp.Metadata, opts render.Options) error {
	if a.d.validator == nil {
		return nil
	}
	stage := filepath.Join(a.cfg.StateDir, "stage")
	if err := os.RemoveAll(stage); err != nil {
		return fmt.Errorf("agent: clear staging dir: %w", err)
	}
	defer os.RemoveAll(stage)
	opts.ScriptsDir = filepath.Join(stage, "scripts")
	out, err := a.d.render(m, opts)
	if err != nil {
		return fmt.Errorf("agent: render for validation: %w", err)
	}
	if err := os.MkdirAll(out.ScriptsDir, 0o700); err != nil {
		return fmt.Errorf("agent: staging dir: %w", err)
	}
	for _, s := range out.Scripts {
		if err := fsutil.WriteAtomic(filepath.Join(out.ScriptsDir, s.Name), s.Data, os.FileMode(s.Mode).Perm()); err != nil {
			return fmt.Errorf("agent: stage: %w", err)
		}
	}
	conf := filepath.Join(stage, "keepalived.conf")
	if err := fsutil.WriteAtomic(conf, out.Config, configMode); err != nil {
		return fmt.Errorf("agent: stage: %w", err)
	}
	if err := a.d.validator.Validate(ctx, conf); err != nil {
		return err
	}
	return nil
}

// install puts out in place so that keepalived.conf and its scripts change
// together or not at all: the scripts go into their own new directory
// (out.ScriptsDir, written whole under a temporary name and renamed), and
// keepalived.conf, which names that directory, is replaced last with one
// atomic rename. Until that rename the old keepalived.conf and the
// directory it refers to are untouched; if any step fails the new
// directory is removed and the error names the file.
func (a *Agent) install(out *render.Output) error {
	base := a.cfg.Keepalived.ScriptsDir
	if err := os.MkdirAll(base, 0o700); err != nil {
		return fmt.Errorf("agent: install: scripts directory: %w", err)
	}
	created := false
	if !holdsScripts(out.ScriptsDir, out) {
		if _, err := os.Lstat(out.ScriptsDir); err == nil {
			// The same set, damaged or left by an older run: repair it
			// file by file; every file gets the content any
			// keepalived.conf naming this directory expects.
			if err := a.repairScripts(out); err != nil {
				return err
			}
		} else {
			if err := a.writeScriptsDir(out); err != nil {
				return err
			}
			created = true
		}
	}
	conf := a.cfg.Keepalived.Config
	if sameFile(conf, out.Config, configMode) {
		return nil
	}
	err := os.MkdirAll(filepath.Dir(conf), 0o755)
	if err == nil {
		err = a.writeFile(conf, out.Config, configMode)
	}
	if err != nil {
		if created {
			if rerr := os.RemoveAll(out.ScriptsDir); rerr != nil {
				a.log.Warn("remove the unused new scripts directory", "op", "apply", "file", out.ScriptsDir, "err", rerr)
			} else {
				_ = fsutil.SyncDir(base)
			}
		}
		return fmt.Errorf("agent: install %s (the previous keepalived.conf and its scripts are unchanged): %w", conf, err)
	}
	return nil
}

// writeScriptsDir writes out's scripts into a new temporary directory
// next to out.ScriptsDir and renames it into place.
func (a *Agent) writeScriptsDir(out *render.Output) error {
	base := filepath.Dir(out.ScriptsDir)
	tmp, err := os.MkdirTemp(base, "."+out.ScriptsVersion+".tmp-")
	if err != nil {
		return fmt.Errorf("agent: install scripts into %s: %w", base, err)
	}
	err = func() error {
		if err := os.Chmod(tmp, 0o700); err != nil {
			return fmt.Errorf("agent: install %s: %w", tmp, err)
		}
		for _, s := range out.Scripts {
			p := filepath.Join(tmp, s.Name)
			if err := a.writeFile(p, s.Data, os.FileMode(s.Mode).Perm()); err != nil {
				return fmt.Errorf("agent: install %s (for %s): %w", p, out.ScriptsDir, err)
			}
		}
		if err := fsutil.SyncDir(tmp); err != nil {
			return fmt.Errorf("agent: install: %w", err)
		}
		if err := os.Rename(tmp, out.ScriptsDir); err != nil {
			return fmt.Errorf("agent: install %s: %w", out.ScriptsDir, err)
		}
		return fsutil.SyncDir(base)
	}()
	if err != nil {
		os.RemoveAll(tmp)
	}
	return err
}

// repairScripts rewrites, each atomically, the files of an existing
// scripts directory that differ from out, and removes strangers.
func (a *Agent) repairScripts(out *render.Output) error {
	dir := out.ScriptsDir
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("agent: install %s: %w", dir, err)
	}
	for _, s := range out.Scripts {
		p := filepath.Join(dir, s.Name)
		if sameFile(p, s.Data, os.FileMode(s.Mode).Perm()) {
			continue
		}
		if err := a.writeFile(p, s.Data, os.FileMode(s.Mode).Perm()); err != nil {
			return fmt.Errorf("agent: install %s: %w", p, err)
		}
	}
	keep := scriptNames(out)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("agent: install %s: %w", dir, err)
	}
	for _, e := range ents {
		if !slices.Contains(keep, e.Name()) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("agent: install %s: %w", filepath.Join(dir, e.Name()), err)
			}
		}
	}
	return nil
}

// prune removes, once keepalived reads out, the scripts directories of
// older renderings except the newest of them (keepalived may still be
// re-reading its configuration when the reload returns), and the scripts
// an agent before versioned directories wrote straight into the scripts
// directory.
func (a *Agent) prune(out *render.Output, oldScripts []string) {
	base := a.cfg.Keepalived.ScriptsDir
	ents, err := os.ReadDir(base)
	if err != nil {
		a.log.Warn("list scripts directory", "op", "apply", "file", base, "err", err)
		return
	}
	type dir struct {
		name string
		mod  time.Time
	}
	var old []dir
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), render.ScriptsVersionPrefix) || e.Name() == out.ScriptsVersion {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		old = append(old, dir{e.Name(), fi.ModTime()})
	}
	slices.SortFunc(old, func(x, y dir) int { return y.mod.Compare(x.mod) })
	for i, d := range old {
		if i == 0 {
			continue // the previous set
		}
		if err := os.RemoveAll(filepath.Join(base, d.name)); err != nil {
			a.log.Warn("remove old scripts directory", "op", "apply", "file", d.name, "err", err)
		}
	}
	for _, name := range oldScripts {
		if name != filepath.Base(name) || strings.HasPrefix(name, ".") {
			continue
		}
		p := filepath.Join(base, name)
		if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := os.Remove(p); err != nil {
			a.log.Warn("remove old script", "op", "apply", "file", name, "err", err)
		}
	}
}

// removeStaleTemps removes temporary files that an atomic write left
// behind when the agent was killed in the middle of it (fsutil.WriteAtomic
// names them ".NAME.tmp-*" in the target's directory).
func (a *Agent) removeStaleTemps() {
	patterns := []string{
		filepath.Join(filepath.Dir(a.cfg.Keepalived.Config), "."+filepath.Base(a.cfg.Keepalived.Config)+".tmp-*"),
		// Temporary scripts directories (".r-*.tmp-*") and files.
		filepath.Join(a.cfg.Keepalived.ScriptsDir, ".*.tmp-*"),
		filepath.Join(a.cfg.Keepalived.ScriptsDir, render.ScriptsVersionPrefix+"*", ".*.tmp-*"),
	}
	for _, pat := range patterns {
		matches, _ := filepath.Glob(pat)
		for _, m := range matches {
			if err := os.RemoveAll(m); err == nil {
				a.log.Info("removed a temporary file of an interrupted write", "op", "start", "file", m)
			}
		}
	}
}

// updateChecks hands the checks the agent runs itself (on_failure
// resign) among those rendered for m to the health runner; it returns once
// every new check's track file exists.
func (a *Agent) updateChecks(m *vrrp.Metadata, opts render.Options) error {
	hr := a.health.Load()
	if hr == nil {
		return nil
	}
	var run []vrrp.Check
	for _, c := range render.EffectiveChecks(m, opts.ExtraChecks) {
		if c.EffectiveOnFailure() == vrrp.OnFailureResign {
			run = append(run, c)
		}
	}
	if err := hr.Update(run); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// reloadForTrackDir reloads a running keepalived once when the track
// directory was missing as the agent started: keepalived drops a
// track_file whose directory does not exist ("does not exist - removing"),
// so a keepalived started before the agent (by hand, or an agent started
// late) would never see a verdict until its next reload.
func (a *Agent) reloadForTrackDir(ctx context.Context) error {
	if !a.trackDirMissing || a.cfg.Keepalived.Reload == ReloadNone {
		return nil
	}
	a.trackDirMissing = false
	err := a.d.keepalived.Reload(ctx)
	switch {
	case errors.Is(err, keepalived.ErrNotRunning):
		return nil // it reads the track files when it starts
	case err != nil:
		a.trackDirMissing = true
		return fmt.Errorf("agent: reload keepalived for the new track directory %s: %w", a.cfg.TrackDir, err)
	}
	a.mu.Lock()
	a.lastReload = a.d.now()
	a.mu.Unlock()
	a.log.Info("keepalived reloaded: the track directory was missing when it started", "op", "reload", "track_dir", a.cfg.TrackDir)
	return nil
}

// pruneTrack removes the track files of checks no longer run, once
// keepalived reads a configuration without them.
func (a *Agent) pruneTrack() {
	hr := a.health.Load()
	if hr == nil {
		return
	}
	if err := hr.Prune(); err != nil {
		a.log.Warn("remove old track files", "op", "apply", "err", err)
	}
}

// checkChanged is the health runner's change callback: the status and
// systemd's STATUS= show the checks.
func (a *Agent) checkChanged(api.CheckStatus) { kick(a.statusChanged) }

// faultNote names why this member's checks put it in FAULT: the failing
// checks with their reasons ("check web failing: GET
// http://127.0.0.1/: connection refused"), else those not yet seen
// healthy; "" when every check is healthy.
func faultNote(checks []api.CheckStatus) string {
	var failing, unknown []string
	for _, c := range checks {
		switch c.State {
		case api.CheckFailing:
			failing = append(failing, "check "+c.Name+" failing: "+c.Reason)
		case api.CheckUnknown:
			unknown = append(unknown, c.Name)
		}
	}
	switch {
	case len(failing) > 0:
		return strings.Join(failing, "; ")
	case len(unknown) == 1:
		return "check " + unknown[0] + " not yet seen healthy"
	case len(unknown) > 1:
		return "checks " + strings.Join(unknown, ", ") + " not yet seen healthy"
	}
	return ""
}

// writeFile replaces path atomically through the deps' seam.
func (a *Agent) writeFile(path string, data []byte, mode os.FileMode) error {
	if a.d.writeFile != nil {
		return a.d.writeFile(path, data, mode)
	}
	return fsutil.WriteAtomic(path, data, mode)
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

// vipAddr is the VIP's address, invalid when unknown.
func (a *Agent) vipAddrLocked() netip.Addr {
	if !a.vip.IsValid() {
		return netip.Addr{}
	}
	return a.vip.Addr()
}
