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
	if errors.Is(err, ErrNotModified) {
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
		ExtraChecks:  a.cfg.LocalChecks(),
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
	appliedHash, oldScripts := a.applied, a.scripts
	a.mu.Unlock()

	files := a.installFiles(out)
	changed := false
	for _, f := range files {
		if !sameFile(f.path, f.data, f.mode) {
			changed = true
			break
		}
	}
	if !changed && appliedHash == out.Hash {
		a.lastTag = tag
		a.noteApplied(m, self, nil)
		result = ApplyUnchanged
		return nil
	}
	if changed {
		result = ApplyValidateError
		if err := a.validate(ctx, rm, opts); err != nil {
			return err
		}
		result = ApplyInstallError
		if err := a.install(files, oldScripts, out); err != nil {
			return err
		}
	}
	result = ApplyReloadError
	// Reload after the files are in place and before the apply is
	// recorded: a crash in between makes the next start reload again.
	if a.cfg.Keepalived.Reload == ReloadNone {
		a.log.Info("files installed; reloading keepalived is off", "op", "reload", "hash", short(out.Hash))
	} else if err := a.d.keepalived.Reload(ctx); err != nil && !errors.Is(err, ErrNotRunning) {
		return fmt.Errorf("agent: files installed (hash %s) but: %w", short(out.Hash), err)
	} else if err != nil {
		a.log.Info("keepalived not running; it reads the new files when it starts", "op", "reload")
	} else {
		a.log.Info("keepalived reloaded", "op", "reload", "hash", short(out.Hash))
	}
	ap := Applied{
		Hash: out.Hash, Revision: m.Revision, Scripts: scriptNames(out),
		Member: self, Group: m.Group.Name, VIP: m.VIP.String(), At: a.d.now(),
	}
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

// noteApplied updates the in-memory view after a successful apply; ap is
// nil when nothing had to be installed.
func (a *Agent) noteApplied(m *vrrp.Metadata, self string, ap *Applied) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.self, a.group, a.vip, a.revision = self, m.Group.Name, m.VIP, m.Revision
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

type installFile struct {
	path string
	data []byte
	mode os.FileMode
}

// installFiles lists the rendered files at their installed paths, scripts
// first: keepalived.conf refers to them.
func (a *Agent) installFiles(out *render.Output) []installFile {
	files := make([]installFile, 0, len(out.Scripts)+1)
	for _, s := range out.Scripts {
		files = append(files, installFile{filepath.Join(a.cfg.Keepalived.ScriptsDir, s.Name), s.Data, os.FileMode(s.Mode).Perm()})
	}
	return append(files, installFile{a.cfg.Keepalived.Config, out.Config, configMode})
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
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != mode || fi.Size() != int64(len(data)) {
		return false
	}
	cur, err := os.ReadFile(path)
	return err == nil && bytes.Equal(cur, data)
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
	scripts := filepath.Join(stage, "scripts")
	if err := os.MkdirAll(scripts, 0o700); err != nil {
		return fmt.Errorf("agent: staging dir: %w", err)
	}
	opts.ScriptsDir = scripts
	out, err := a.d.render(m, opts)
	if err != nil {
		return fmt.Errorf("agent: render for validation: %w", err)
	}
	for _, s := range out.Scripts {
		if err := fsutil.WriteAtomic(filepath.Join(scripts, s.Name), s.Data, os.FileMode(s.Mode).Perm()); err != nil {
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

// install writes the files that differ, each atomically, scripts before
// keepalived.conf, then removes scripts it wrote before that are no
// longer rendered.
func (a *Agent) install(files []installFile, oldScripts []string, out *render.Output) error {
	for _, f := range files {
		if sameFile(f.path, f.data, f.mode) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return fmt.Errorf("agent: install: %w", err)
		}
		if err := fsutil.WriteAtomic(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("agent: install: %w", err)
		}
	}
	keep := scriptNames(out)
	for _, name := range oldScripts {
		if slices.Contains(keep, name) || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
			continue
		}
		if err := os.Remove(filepath.Join(a.cfg.Keepalived.ScriptsDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("remove old script", "op", "apply", "file", name, "err", err)
		}
	}
	return nil
}

// removeStaleTemps removes temporary files that an atomic write left
// behind when the agent was killed in the middle of it (fsutil.WriteAtomic
// names them ".NAME.tmp-*" in the target's directory).
func (a *Agent) removeStaleTemps() {
	patterns := []string{
		filepath.Join(filepath.Dir(a.cfg.Keepalived.Config), "."+filepath.Base(a.cfg.Keepalived.Config)+".tmp-*"),
		filepath.Join(a.cfg.Keepalived.ScriptsDir, ".*.tmp-*"),
	}
	for _, pat := range patterns {
		matches, _ := filepath.Glob(pat)
		for _, m := range matches {
			if err := os.Remove(m); err == nil {
				a.log.Info("removed a temporary file of an interrupted write", "op", "start", "file", m)
			}
		}
	}
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
