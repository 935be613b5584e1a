package packaging

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// scripts/packages.sh turns `git describe` versions into package versions
// that dpkg and rpm order like the releases they name.
func TestPackageVersion(t *testing.T) {
	requireCommands(t, "bash")
	script := filepath.Join(repoRoot(t), "scripts", "packages.sh")
	tests := []struct{ git, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-dirty", "1.2.3+dirty"},
		{"v1.2.3-4-gabc1234", "1.2.3+4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+4.gabc1234.dirty"},
		{"v1.3.0-rc.1", "1.3.0~rc.1"},
		{"v1.3.0-rc.1-2-gdef5678", "1.3.0~rc.1+2.gdef5678"},
		{"831882a", "0.0.0+git.831882a"},
		{"831882a-dirty", "0.0.0+git.831882a.dirty"},
		{"dev", "0.0.0+dev"},
		{"weird/version name", "0.0.0+weird.version.name"},
	}
	for _, tt := range tests {
		t.Run(tt.git, func(t *testing.T) {
			got := strings.TrimSpace(run(t, "bash", script, "version", tt.git))
			if got != tt.want {
				t.Errorf("package version of %q = %q, want %q", tt.git, got, tt.want)
			}
		})
	}

	// Each is older than the next, for dpkg and for rpm.
	order := []string{"0.0.0+git.831882a", "1.2.3", "1.2.3+4.gabc1234", "1.2.3+5.gabc1234", "1.3.0~rc.1", "1.3.0~rc.1+2.gdef5678", "1.3.0", "1.3.0+dirty"}
	t.Run("dpkg order", func(t *testing.T) {
		requireCommands(t, "dpkg")
		for i := 1; i < len(order); i++ {
			if _, err := runErr("dpkg", "--compare-versions", order[i-1], "lt", order[i]); err != nil {
				t.Errorf("dpkg: %s is not older than %s", order[i-1], order[i])
			}
		}
	})
	t.Run("rpm order", func(t *testing.T) {
		requireCommands(t, "rpm")
		for i := 1; i < len(order); i++ {
			out, err := runErr("rpm", "--eval", fmt.Sprintf(`%%{lua: print(rpm.vercmp("%s", "%s"))}`, order[i-1], order[i]))
			if err != nil {
				testutil.SkipUnprivileged(t, "skipping: rpm cannot compare versions here: %v", err)
			}
			if strings.TrimSpace(out) != "-1" {
				t.Errorf("rpm: %s is not older than %s (vercmp %s)", order[i-1], order[i], strings.TrimSpace(out))
			}
		}
	})
}

// entry is one file of a package as expected: its mode and, for files, the
// repository file it must equal ("" for built binaries and directories).
type entry struct {
	perms string
	src   string
}

// expectedContents is what each package installs.
func expectedContents(name, format string) map[string]entry {
	short := strings.TrimPrefix(name, "vipkeeper-")
	c := map[string]entry{
		"/usr/bin/" + name: {"-rwxr-xr-x", ""},
		"/usr/bin/vipctl":  {"-rwxr-xr-x", ""},
		"/usr/lib/systemd/system/" + name + ".service": {"-rw-r--r--", "packaging/systemd/" + name + ".service"},
		"/etc/vipkeeper":                        {"drwxr-xr-x", ""},
		"/etc/vipkeeper/" + short + ".toml":     {"-rw-r-----", "packaging/etc/" + short + ".toml"},
		"/var/lib/vipkeeper":                    {"drwx------", ""},
		"/usr/share/doc/" + name + "/README.md": {"-rw-r--r--", "README.md"},
	}
	if name == "vipkeeper-agent" {
		c["/usr/lib/systemd/system/keepalived.service.d/vipkeeper.conf"] = entry{"-rw-r--r--", "packaging/systemd/keepalived-vipkeeper.conf"}
		c["/etc/keepalived/vipkeeper"] = entry{"drwx------", ""}
	}
	if format == "rpm" {
		c["/usr/lib/systemd/system-preset/80-"+name+".preset"] = entry{"-rw-r--r--", "packaging/systemd/80-" + name + ".preset"}
	}
	return c
}

// packageRelations are the dependency fields each package must carry.
var packageRelations = map[string]struct{ depends, recommends, conflicts string }{
	"vipkeeper-agent":    {depends: "keepalived", conflicts: "vipkeeper-hostsync"},
	"vipkeeper-hostsync": {recommends: "nftables", conflicts: "vipkeeper-agent"},
}

// `make packages` (scripts/packages.sh) makes the four packages per
// architecture, each under 15 MB, with the expected files, modes,
// conffiles, relations, maintainer scripts and binaries.
func TestPackages(t *testing.T) {
	dist := sharedPackages(t)
	t.Logf("scripts/packages.sh:\n%s", shared.out)
	root := repoRoot(t)
	for _, name := range packageNames {
		for _, arch := range arches {
			for _, format := range formats {
				file := filepath.Join(dist, packageFile(name, pkgVersion, format, arch))
				t.Run(filepath.Base(file), func(t *testing.T) {
					fi, err := os.Stat(file)
					if err != nil {
						t.Fatalf("not built: %v", err)
					}
					if fi.Size() >= maxPackageBytes {
						t.Errorf("%d bytes, want under %d", fi.Size(), maxPackageBytes)
					}
					if !strings.Contains(shared.out, filepath.Base(file)) || !regexp.MustCompile(regexp.QuoteMeta(filepath.Base(file))+`\s+[0-9.]+ MB`).MatchString(shared.out) {
						t.Errorf("scripts/packages.sh did not print the size of %s", filepath.Base(file))
					}
					switch format {
					case "deb":
						checkDeb(t, root, file, name, arch)
					case "rpm":
						checkRPM(t, root, file, name, arch)
					}
				})
			}
		}
	}
}

func checkDeb(t *testing.T, root, file, name, arch string) {
	requireCommands(t, "dpkg-deb")
	fields := map[string]string{}
	for _, line := range strings.Split(run(t, "dpkg-deb", "-f", file, "Package", "Version", "Architecture", "Depends", "Recommends", "Conflicts"), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			fields[k] = v
		}
	}
	rel := packageRelations[name]
	want := map[string]string{
		"Package": name, "Version": pkgVersion + "-1", "Architecture": arch,
		"Depends": rel.depends, "Recommends": rel.recommends, "Conflicts": rel.conflicts,
	}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("control field %s = %q, want %q", k, fields[k], v)
		}
	}

	// Contents and modes.
	listed := map[string]string{} // path → perms
	for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-c", file)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		if f[1] != "root/root" {
			t.Errorf("%s is owned by %s, want root/root", f[5], f[1])
		}
		p := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
		if p != "" {
			listed[p] = f[0]
		}
	}
	checkContents(t, listed, expectedContents(name, "deb"))

	// Control archive: the conffile and the maintainer scripts, as written.
	ctrl := t.TempDir()
	run(t, "dpkg-deb", "-e", file, ctrl)
	short := strings.TrimPrefix(name, "vipkeeper-")
	if got, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); string(got) != "/etc/vipkeeper/"+short+".toml\n" {
		t.Errorf("conffiles = %q, want only /etc/vipkeeper/%s.toml", got, short)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		want, err := os.ReadFile(filepath.Join(root, "packaging", "scripts", "deb", name+"."+s))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(ctrl, s))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("control %s differs from packaging/scripts/deb/%s.%s (err %v)", s, name, s, err)
		}
		if fi, err := os.Stat(filepath.Join(ctrl, s)); err == nil && fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("control %s is not executable", s)
		}
	}
	if _, err := os.Stat(filepath.Join(ctrl, "preinst")); err == nil {
		t.Error("unexpected preinst")
	}

	// Files equal their sources; binaries are for arch, static, versioned.
	tree := t.TempDir()
	run(t, "dpkg-deb", "-x", file, tree)
	for p, e := range expectedContents(name, "deb") {
		if e.src == "" {
			continue
		}
		want, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(e.src)))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(tree, p)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (err %v)", p, e.src, err)
		}
	}
	for _, bin := range []string{name, "vipctl"} {
		checkBinary(t, filepath.Join(tree, "usr", "bin", bin), bin, arch)
	}
	if arch == hostArch() {
		checkDefaultConfigWithBinary(t, tree, name)
	}
}

// checkBinary checks the ELF machine, that it is static, and (on this
// architecture) that --version prints the build's version.
func checkBinary(t *testing.T, path, name, arch string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer f.Close()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != machine {
		t.Errorf("%s is for %v, want %v", name, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked; want a static binary", name)
		}
	}
	if arch != hostArch() {
		return
	}
	out, err := runErr(path, "--version")
	if want := name + " " + buildVersion + "\n"; err != nil || out != want {
		t.Errorf("%s --version = %q (err %v), want %q", name, out, err, want)
	}
}

// checkDefaultConfigWithBinary runs the packaged daemon's --check-config on
// the packaged configuration: hostsync's is valid as shipped; the agent's
// waits for a metadata source and says so.
func checkDefaultConfigWithBinary(t *testing.T, tree, name string) {
	t.Helper()
	short := strings.TrimPrefix(name, "vipkeeper-")
	cmd := exec.Command(filepath.Join(tree, "usr", "bin", name), "--check-config", "--config", filepath.Join(tree, "etc", "vipkeeper", short+".toml"))
	out, err := cmd.CombinedOutput()
	switch name {
	case "vipkeeper-hostsync":
		if err != nil {
			t.Errorf("%s --check-config on the shipped hostsync.toml: %v\n%s", name, err, out)
		}
	case "vipkeeper-agent":
		if !isExitError(err) || !strings.Contains(string(out), "metadata") {
			t.Errorf("%s --check-config on the shipped agent.toml: err %v, output %q; want a refusal naming metadata", name, err, out)
		}
	}
}

func checkContents(t *testing.T, listed map[string]string, want map[string]entry) {
	t.Helper()
	for p, e := range want {
		got, ok := listed[p]
		if !ok {
			t.Errorf("%s is missing", p)
			continue
		}
		if got != e.perms {
			t.Errorf("%s has mode %s, want %s", p, got, e.perms)
		}
	}
	for p, perms := range listed {
		if _, ok := want[p]; !ok && !strings.HasPrefix(perms, "d") {
			t.Errorf("unexpected file %s (%s)", p, perms)
		}
	}
}

func checkRPM(t *testing.T, root, file, name, arch string) {
	requireCommands(t, "rpm")
	rpmArch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[arch]
	if got, want := run(t, "rpm", "-qp", "--qf", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}", file), name+"|"+pkgVersion+"|1|"+rpmArch; got != want {
		t.Errorf("rpm NAME|VERSION|RELEASE|ARCH = %q, want %q", got, want)
	}
	rel := packageRelations[name]
	for _, r := range []struct{ flag, want string }{{"--requires", rel.depends}, {"--recommends", rel.recommends}, {"--conflicts", rel.conflicts}} {
		if r.want == "" {
			continue
		}
		if got := strings.Fields(run(t, "rpm", "-qp", r.flag, file)); !slices.Contains(got, r.want) {
			t.Errorf("rpm %s = %v, want it to contain %s", r.flag, got, r.want)
		}
	}

	listed := map[string]string{}
	flags := map[string]string{}
	out := run(t, "rpm", "-qp", "--qf", `[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags}| %{FILENAMES}\n]`, file)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		head, p, ok := strings.Cut(line, "| ")
		f := strings.Fields(head)
		if !ok || len(f) < 2 {
			t.Fatalf("rpm file line %q", line)
		}
		if f[1] != "root:root" {
			t.Errorf("%s is owned by %s, want root:root", p, f[1])
		}
		listed[p] = f[0]
		if len(f) > 2 {
			flags[p] = f[2]
		}
	}
	checkContents(t, listed, expectedContents(name, "rpm"))
	short := strings.TrimPrefix(name, "vipkeeper-")
	cfg := "/etc/vipkeeper/" + short + ".toml"
	for p, fl := range flags {
		isConfig := strings.Contains(fl, "c")
		if isConfig != (p == cfg) {
			t.Errorf("%s has file flags %q; want %%config only on %s", p, fl, cfg)
		}
	}
	if fl := flags[cfg]; !strings.Contains(fl, "c") || !strings.Contains(fl, "n") {
		t.Errorf("%s has file flags %q, want %%config(noreplace) (c and n)", cfg, fl)
	}

	// The scriptlets are the repository's scripts, under the right names.
	scripts := rpmScriptlets(run(t, "rpm", "-qp", "--scripts", file))
	want := map[string]string{"postinstall": "post", "preuninstall": "preun", "postuninstall": "postun"}
	for section, suffix := range want {
		src, err := os.ReadFile(filepath.Join(root, "packaging", "scripts", "rpm", name+"."+suffix))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(scripts[section]); got != strings.TrimSpace(string(src)) {
			t.Errorf("rpm %s scriptlet differs from packaging/scripts/rpm/%s.%s:\n%s", section, name, suffix, got)
		}
	}
	for section := range scripts {
		if _, ok := want[section]; !ok {
			t.Errorf("unexpected rpm %s scriptlet", section)
		}
	}
}

// rpmScriptlets splits `rpm -qp --scripts` output by scriptlet.
func rpmScriptlets(out string) map[string]string {
	head := regexp.MustCompile(`(?m)^(\w+) scriptlet \(using [^)]*\):\n`)
	scripts := map[string]string{}
	idx := head.FindAllStringSubmatchIndex(out, -1)
	for i, m := range idx {
		end := len(out)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		scripts[out[m[2]:m[3]]] = out[m[1]:end]
	}
	return scripts
}
