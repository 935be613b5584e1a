package packaging

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dpkgRoot is a throwaway dpkg installation root: dpkg --root with the
// maintainer scripts run outside a chroot and DPKG_ROOT set, so nothing of
// the machine itself is touched (deb-systemd-helper works inside the root
// too). keepalived stands in as installed so that the agent's dependency is
// checked for real.
type dpkgRoot struct {
	t    *testing.T
	root string
}

func newDpkgRoot(t *testing.T) *dpkgRoot {
	t.Helper()
	root := t.TempDir()
	admin := filepath.Join(root, "var", "lib", "dpkg")
	for _, d := range []string{"info", "updates", "triggers"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(admin, "available"), "", 0o644)
	writeFile(t, filepath.Join(admin, "info", "keepalived.list"), "", 0o644)
	writeFile(t, filepath.Join(admin, "status"), `Package: keepalived
Status: install ok installed
Priority: optional
Section: admin
Maintainer: stand-in <stand-in@example.org>
Architecture: `+hostArch()+`
Version: 1:2.2.7-1
Description: stand-in for the dependency of vipkeeper-agent

`, 0o644)
	return &dpkgRoot{t: t, root: root}
}

// dpkg runs dpkg on the root; stdin is /dev/null, so a conffile prompt
// would fail the run.
func (r *dpkgRoot) dpkg(args ...string) (string, error) {
	return runErr("dpkg", append([]string{"--root=" + r.root, "--log=" + filepath.Join(r.root, "dpkg.log"), "--force-script-chrootless"}, args...)...)
}

// status is dpkg-query's "Status Version" of pkg, or "" when unknown.
func (r *dpkgRoot) status(pkg string) string {
	out, err := runErr("dpkg-query", "--admindir="+filepath.Join(r.root, "var", "lib", "dpkg"), "-W", "-f", "${Status} ${Version}", pkg)
	if err != nil {
		return ""
	}
	return out
}

func (r *dpkgRoot) path(p string) string { return filepath.Join(r.root, filepath.FromSlash(p)) }

// mode is the permission bits and type of p, or an error text.
func (r *dpkgRoot) mode(p string) string {
	fi, err := os.Lstat(r.path(p))
	if err != nil {
		return err.Error()
	}
	return fi.Mode().String()
}

func (r *dpkgRoot) exists(p string) bool {
	_, err := os.Lstat(r.path(p))
	return err == nil
}

// The .deb lifecycle on a throwaway root: install (files, modes, the unit
// enabled), a conflicting package refused, upgrade (the edited conffile
// kept without a prompt, the unit still enabled, the state kept), remove
// (config kept, unit disabled) and purge (config and state gone).
func TestDebLifecycle(t *testing.T) {
	requireRoot(t, "run dpkg --root (it installs files owned by root)")
	requireCommands(t, "dpkg", "dpkg-query", "dpkg-deb")
	arch := hostArch()
	if arch == "" {
		t.Skip("skipping: no package for this architecture")
	}
	v1 := sharedPackages(t)
	v2 := t.TempDir()
	if _, err := buildPackages(t, v2, "VERSION="+upgradeVersion, "ARCHES="+arch, "FORMATS=deb"); err != nil {
		t.Fatalf("building the upgrade: %v", err)
	}

	for _, name := range packageNames {
		t.Run(name, func(t *testing.T) {
			r := newDpkgRoot(t)
			short := strings.TrimPrefix(name, "vipkeeper-")
			unit := name + ".service"
			config := "etc/vipkeeper/" + short + ".toml"
			wantsLink := "etc/systemd/system/multi-user.target.wants/" + unit
			dshState := "var/lib/systemd/deb-systemd-helper-enabled/" + unit + ".dsh-also"

			// Install.
			if out, err := r.dpkg("-i", filepath.Join(v1, packageFile(name, pkgVersion, "deb", arch))); err != nil {
				t.Fatalf("install: %v\n%s", err, out)
			}
			if got := r.status(name); got != "install ok installed "+pkgVersion+"-1" {
				t.Fatalf("after install: status %q", got)
			}
			modes := map[string]string{
				config:                                 "-rw-r-----",
				"etc/vipkeeper":                        "drwxr-xr-x",
				"var/lib/vipkeeper":                    "drwx------",
				"usr/bin/" + name:                      "-rwxr-xr-x",
				"usr/bin/vipctl":                       "-rwxr-xr-x",
				"usr/lib/systemd/system/" + unit:       "-rw-r--r--",
				"usr/share/doc/" + name + "/README.md": "-rw-r--r--",
			}
			if name == "vipkeeper-agent" {
				modes["etc/keepalived/vipkeeper"] = "drwx------"
				modes["usr/lib/systemd/system/keepalived.service.d/vipkeeper.conf"] = "-rw-r--r--"
			}
			for p, want := range modes {
				if got := r.mode(p); got != want {
					t.Errorf("after install: %s is %s, want %s", p, got, want)
				}
			}
			if target, err := os.Readlink(r.path(wantsLink)); err != nil || target != "/usr/lib/systemd/system/"+unit {
				t.Errorf("after install: %s -> %q (%v), want the unit enabled", wantsLink, target, err)
			}
			if out, err := runErr(r.path("usr/bin/vipctl"), "--version"); err != nil || out != "vipctl "+buildVersion+"\n" {
				t.Errorf("installed vipctl --version = %q (%v)", out, err)
			}

			// A guest or a host: the other package is refused.
			other := "vipkeeper-hostsync"
			if name == other {
				other = "vipkeeper-agent"
			}
			if out, err := r.dpkg("-i", filepath.Join(v1, packageFile(other, pkgVersion, "deb", arch))); err == nil || !strings.Contains(out+err.Error(), "conflicts") {
				t.Errorf("installing %s next to %s: err %v; want a conflict\n%s", other, name, err, out)
			}
			if got := r.status(name); got != "install ok installed "+pkgVersion+"-1" {
				t.Errorf("after the refused conflict: status %q", got)
			}

			// The admin edits the config; the daemon made its files.
			const edit = "\n# edited on this machine\n"
			f, err := os.OpenFile(r.path(config), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(edit); err != nil {
				t.Fatal(err)
			}
			f.Close()
			made := []string{"var/lib/vipkeeper/" + short + ".db"}
			if name == "vipkeeper-agent" {
				made = append(made, "etc/keepalived/vipkeeper/notify.sh", "etc/keepalived/keepalived.conf")
				writeFile(t, r.path("etc/keepalived/keepalived.conf"), "# Generated by vipkeeper from group nginx (id ig-nginx) revision 1 for member nginx-master.\n", 0o640)
				writeFile(t, r.path("etc/keepalived/vipkeeper/notify.sh"), "#!/bin/sh\n", 0o700)
			}
			// The state file is one written by commit 612e5b9 (testdata/upgrade).
			state := upgradeFixture(t, short)
			writeFile(t, r.path(made[0]), string(state), 0o600)

			// Upgrade.
			if out, err := r.dpkg("-i", filepath.Join(v2, packageFile(name, upgradePkgVersion, "deb", arch))); err != nil {
				t.Fatalf("upgrade: %v\n%s", err, out)
			}
			if got := r.status(name); got != "install ok installed "+upgradePkgVersion+"-1" {
				t.Fatalf("after upgrade: status %q", got)
			}
			if data, err := os.ReadFile(r.path(config)); err != nil || !strings.HasSuffix(string(data), edit) {
				t.Errorf("after upgrade: the edit of %s is lost (%v)", config, err)
			}
			if got := r.mode(config); got != "-rw-r-----" {
				t.Errorf("after upgrade: %s is %s", config, got)
			}
			for _, suffix := range []string{".dpkg-dist", ".dpkg-new", ".dpkg-old"} {
				if r.exists(config + suffix) {
					t.Errorf("after upgrade: %s%s exists", config, suffix)
				}
			}
			if out, err := runErr(r.path("usr/bin/vipctl"), "--version"); err != nil || out != "vipctl "+upgradeVersion+"\n" {
				t.Errorf("upgraded vipctl --version = %q (%v)", out, err)
			}
			if !r.exists(wantsLink) {
				t.Errorf("after upgrade: %s is gone; the unit must stay enabled", wantsLink)
			}
			for _, p := range made {
				if !r.exists(p) {
					t.Errorf("after upgrade: %s is gone", p)
				}
			}
			checkUpgradedState(t, short, r.path(made[0]), state)

			// Remove: the program goes, the config and the state stay.
			if out, err := r.dpkg("-r", name); err != nil {
				t.Fatalf("remove: %v\n%s", err, out)
			}
			if got := r.status(name); got != "deinstall ok config-files "+upgradePkgVersion+"-1" {
				t.Errorf("after remove: status %q", got)
			}
			for _, p := range []string{"usr/bin/" + name, "usr/bin/vipctl", "usr/lib/systemd/system/" + unit, wantsLink} {
				if r.exists(p) {
					t.Errorf("after remove: %s is still there", p)
				}
			}
			if data, err := os.ReadFile(r.path(config)); err != nil || !strings.HasSuffix(string(data), edit) {
				t.Errorf("after remove: %s with its edit is gone (%v)", config, err)
			}
			for _, p := range made {
				if !r.exists(p) {
					t.Errorf("after remove: %s is gone; only purge deletes it", p)
				}
			}

			// Purge: nothing of the package is left.
			if out, err := r.dpkg("-P", name); err != nil {
				t.Fatalf("purge: %v\n%s", err, out)
			}
			if got := r.status(name); got != "" && !strings.HasPrefix(got, "unknown ok not-installed") {
				t.Errorf("after purge: status %q", got)
			}
			gone := append([]string{config, "etc/vipkeeper", "var/lib/vipkeeper", dshState, wantsLink}, made...)
			if name == "vipkeeper-agent" {
				gone = append(gone, "etc/keepalived/vipkeeper")
			}
			for _, p := range gone {
				if r.exists(p) {
					t.Errorf("after purge: %s is still there", p)
				}
			}
		})
	}
}
