package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// maintainerScripts are the scripts of each package and format.
func maintainerScripts(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, f := range []string{"deb", "rpm"} {
		m, err := filepath.Glob(filepath.Join("scripts", f, "*"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) != 12 {
		t.Fatalf("maintainer scripts %v, want 3 per package and format", files)
	}
	return files
}

// Every maintainer script is POSIX sh (dash runs them on Debian).
func TestMaintainerScriptSyntax(t *testing.T) {
	shells := []string{"sh"}
	if _, err := exec.LookPath("dash"); err == nil {
		shells = append(shells, "dash")
	}
	for _, file := range maintainerScripts(t) {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(data), "#!/bin/sh\n") {
				t.Error("does not start with #!/bin/sh")
			}
			for _, sh := range shells {
				if out, err := exec.Command(sh, "-n", file).CombinedOutput(); err != nil {
					t.Errorf("%s -n: %v\n%s", sh, err, out)
				}
			}
		})
	}
}

// fakeTools stand in for the programs the maintainer scripts call. Each
// appends "name args" to $VK_LOG; the answers come from the environment.
var fakeTools = map[string]string{
	"systemctl": `case "$1 $2" in
"-q is-enabled") exit "${VK_ENABLED:-0}" ;;
"-q is-active") exit "${VK_ACTIVE:-0}" ;;
esac`,
	"deb-systemd-helper": `case "$1 $2" in
"--quiet was-enabled") exit "${VK_WAS_ENABLED:-0}" ;;
esac`,
	"deb-systemd-invoke": ``,
	"vipkeeper-agent":    `exit "${VK_CHECK:-0}"`,
	"vipkeeper-hostsync": `exit "${VK_CHECK:-0}"`,
}

// The maintainer scripts call systemd exactly as intended in each case:
// enable on install, restart on upgrade, stop and disable only on a real
// removal, nothing without a running systemd. Each script runs in its own
// mount namespace where fakes shadow /usr/bin's systemctl,
// deb-systemd-helper, deb-systemd-invoke and the daemons (an overlay), and
// a tmpfs on /run says whether systemd runs; nothing reaches the host's
// systemd or files.
func TestMaintainerScriptCalls(t *testing.T) {
	requireRoot(t, "mount an overlay over /usr/bin in a private mount namespace")
	requireCommands(t, "unshare", "mount")
	if data, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(data), "\toverlay\n") {
		testutil.SkipUnprivileged(t, "skipping: the kernel has no overlay file system")
	}
	fakes := t.TempDir()
	for name, body := range fakeTools {
		writeFile(t, filepath.Join(fakes, name), "#!/bin/sh\necho \"${0##*/} $*\" >>\"$VK_LOG\"\n"+body+"\nexit 0\n", 0o755)
	}
	// The namespace: a tmpfs for the overlay's upper and work dirs, the
	// overlay on /usr/bin, a tmpfs on /run (with /run/systemd/system when
	// systemd "runs") and tmpfs guards over the packages' own directories.
	const wrapper = `set -e
mount -t tmpfs vkscripts "$VK_MNT"
mkdir "$VK_MNT/upper" "$VK_MNT/work"
cp -p "$VK_FAKES"/* "$VK_MNT/upper/"
mount -t overlay vkbin -o "lowerdir=/usr/bin,upperdir=$VK_MNT/upper,workdir=$VK_MNT/work" /usr/bin
mount -t tmpfs vkrun /run
mkdir -p /run/systemd
if [ "$VK_SYSTEMD" = 1 ]; then mkdir /run/systemd/system; fi
for d in /etc/keepalived /etc/vipkeeper /var/lib/vipkeeper; do
	if [ -d "$d" ]; then mount -t tmpfs vkguard "$d"; fi
done
script=$1
shift
exec sh "$script" "$@"
`
	type tc struct {
		name    string
		script  string // file under scripts/
		args    []string
		systemd bool
		env     []string
		want    []string // calls, with U for the unit and D for the daemon
		stderr  string   // a fragment the script must print
	}
	var cases []tc
	for _, pkg := range packageNames {
		deb := func(s string) string { return "deb/" + pkg + "." + s }
		rpm := func(s string) string { return "rpm/" + pkg + "." + s }
		check := "D --check-config --config /etc/vipkeeper/" + strings.TrimPrefix(pkg, "vipkeeper-") + ".toml"
		enable := []string{"deb-systemd-helper unmask U", "deb-systemd-helper --quiet was-enabled U", "deb-systemd-helper enable U"}
		cases = append(cases,
			tc{name: pkg + " deb install", script: deb("postinst"), args: []string{"configure", ""}, systemd: true,
				want: append(slices.Clone(enable), "systemctl --system daemon-reload", check, "deb-systemd-invoke start U")},
			tc{name: pkg + " deb install with a config that does not validate", script: deb("postinst"), args: []string{"configure", ""}, systemd: true,
				env:  []string{"VK_CHECK=2"},
				want: append(slices.Clone(enable), "systemctl --system daemon-reload", check), stderr: "enabled but not (re)started"},
			tc{name: pkg + " deb install without systemd", script: deb("postinst"), args: []string{"configure", ""},
				want: enable},
			tc{name: pkg + " deb upgrade", script: deb("postinst"), args: []string{"configure", "1.0.0-1"}, systemd: true,
				want: append(slices.Clone(enable), "systemctl --system daemon-reload", check, "deb-systemd-invoke restart U")},
			tc{name: pkg + " deb upgrade of a unit the admin disabled", script: deb("postinst"), args: []string{"configure", "1.0.0-1"}, systemd: true,
				env: []string{"VK_WAS_ENABLED=1"},
				want: []string{"deb-systemd-helper unmask U", "deb-systemd-helper --quiet was-enabled U", "deb-systemd-helper update-state U",
					"systemctl --system daemon-reload", check, "deb-systemd-invoke restart U"}},
			tc{name: pkg + " deb prerm upgrade", script: deb("prerm"), args: []string{"upgrade", "1.0.1-1"}, systemd: true},
			tc{name: pkg + " deb prerm remove", script: deb("prerm"), args: []string{"remove"}, systemd: true,
				want: []string{"deb-systemd-invoke stop U"}},
			tc{name: pkg + " deb prerm remove without systemd", script: deb("prerm"), args: []string{"remove"}},
			tc{name: pkg + " deb postrm upgrade", script: deb("postrm"), args: []string{"upgrade", "1.0.1-1"}, systemd: true},
			tc{name: pkg + " deb postrm remove", script: deb("postrm"), args: []string{"remove"}, systemd: true,
				want: []string{"deb-systemd-helper purge U", "deb-systemd-helper unmask U", "systemctl --system daemon-reload"}},
			tc{name: pkg + " rpm install", script: rpm("post"), args: []string{"1"}, systemd: true,
				want: []string{"systemctl --no-reload preset U", "systemctl daemon-reload", check, "systemctl start U"}},
			tc{name: pkg + " rpm install with a config that does not validate", script: rpm("post"), args: []string{"1"}, systemd: true,
				env:  []string{"VK_CHECK=2"},
				want: []string{"systemctl --no-reload preset U", "systemctl daemon-reload", check}, stderr: "enabled but not (re)started"},
			tc{name: pkg + " rpm install without systemd", script: rpm("post"), args: []string{"1"},
				want: []string{"systemctl --no-reload preset U"}},
			tc{name: pkg + " rpm upgrade", script: rpm("post"), args: []string{"2"}, systemd: true,
				want: []string{"systemctl daemon-reload", check, "systemctl -q is-enabled U", "systemctl restart U"}},
			tc{name: pkg + " rpm upgrade of a disabled, stopped unit", script: rpm("post"), args: []string{"2"}, systemd: true,
				env:  []string{"VK_ENABLED=1", "VK_ACTIVE=3"},
				want: []string{"systemctl daemon-reload", check, "systemctl -q is-enabled U", "systemctl -q is-active U"}},
			tc{name: pkg + " rpm preun upgrade", script: rpm("preun"), args: []string{"1"}, systemd: true},
			tc{name: pkg + " rpm preun erase", script: rpm("preun"), args: []string{"0"}, systemd: true,
				want: []string{"systemctl --no-reload disable U", "systemctl stop U"}},
			tc{name: pkg + " rpm preun erase without systemd", script: rpm("preun"), args: []string{"0"},
				want: []string{"systemctl --no-reload disable U"}},
			tc{name: pkg + " rpm postun upgrade", script: rpm("postun"), args: []string{"1"}, systemd: true},
			tc{name: pkg + " rpm postun erase", script: rpm("postun"), args: []string{"0"}, systemd: true,
				want: []string{"systemctl daemon-reload"}},
		)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pkg := "vipkeeper-agent"
			if strings.Contains(c.script, "hostsync") {
				pkg = "vipkeeper-hostsync"
			}
			dir := t.TempDir()
			mnt := filepath.Join(dir, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			logFile := filepath.Join(dir, "calls")
			script, err := filepath.Abs(filepath.Join("scripts", filepath.FromSlash(c.script)))
			if err != nil {
				t.Fatal(err)
			}
			systemd := "0"
			if c.systemd {
				systemd = "1"
			}
			cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", wrapper, "vkwrapper", script}, c.args...)...)
			cmd.Env = append([]string{
				"PATH=/usr/bin:/usr/sbin:/bin:/sbin", // the fakes in /usr/bin come first
				"VK_MNT=" + mnt, "VK_FAKES=" + fakes, "VK_LOG=" + logFile, "VK_SYSTEMD=" + systemd,
				"DPKG_MAINTSCRIPT_PACKAGE=" + pkg,
			}, c.env...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", c.script, c.args, err, out)
			}
			data, err := os.ReadFile(logFile)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSpace(string(data)), "\n")
			if len(data) == 0 {
				got = nil
			}
			unit := pkg + ".service"
			var want []string
			for _, w := range c.want {
				w = strings.ReplaceAll(w, " U", " "+unit)
				w = strings.Replace(w, "D ", pkg+" ", 1)
				want = append(want, w)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s %v called\n%s\nwant\n%s", c.script, c.args, callList(got), callList(want))
			}
			if c.stderr != "" && !strings.Contains(string(out), c.stderr) {
				t.Errorf("output %q does not say %q", out, c.stderr)
			}
		})
	}
}

// A purge deletes what the agent made and only that: its rendered scripts,
// keepalived.conf when vipkeeper generated it, its state; hostsync's purge
// deletes the registry. It runs against a throwaway DPKG_ROOT.
func TestPurgeCleansUp(t *testing.T) {
	requireCommands(t, "sh")
	tests := []struct {
		pkg   string
		files map[string]string // created before the purge
		gone  []string
		kept  []string
	}{
		{
			pkg: "vipkeeper-agent",
			files: map[string]string{
				"etc/keepalived/vipkeeper/notify.sh":      "#!/bin/sh\n",
				"etc/keepalived/keepalived.conf":          "# Generated by vipkeeper from group nginx (id ig-nginx) revision 1 for member nginx-master.\n",
				"var/lib/vipkeeper/agent.db":              "db",
				"var/lib/vipkeeper/spool/1.json":          "{}",
				"var/lib/vipkeeper/stage/keepalived.conf": "x",
				"etc/vipkeeper/metadata.json":             "{}",
			},
			gone: []string{"etc/keepalived/vipkeeper", "etc/keepalived/keepalived.conf", "var/lib/vipkeeper"},
			kept: []string{"etc/keepalived", "etc/vipkeeper/metadata.json"},
		},
		{
			pkg: "vipkeeper-agent",
			files: map[string]string{
				"etc/keepalived/keepalived.conf": "global_defs {\n}\n",
				"var/lib/vipkeeper/hostsync.db":  "db",
			},
			kept: []string{"etc/keepalived/keepalived.conf", "var/lib/vipkeeper/hostsync.db"},
		},
		{
			pkg: "vipkeeper-hostsync",
			files: map[string]string{
				"var/lib/vipkeeper/hostsync.db":  "db",
				"etc/keepalived/keepalived.conf": "# Generated by vipkeeper from group nginx\n",
			},
			gone: []string{"var/lib/vipkeeper", "etc/vipkeeper"},
			kept: []string{"etc/keepalived/keepalived.conf"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			root := t.TempDir()
			for p, content := range tt.files {
				writeFile(t, filepath.Join(root, p), content, 0o600)
			}
			if err := os.MkdirAll(filepath.Join(root, "etc", "vipkeeper"), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sh", filepath.Join("scripts", "deb", tt.pkg+".postrm"), "purge")
			// deb-systemd-helper, when installed, works inside DPKG_ROOT
			// too, and DPKG_ROOT keeps systemctl out.
			cmd.Env = []string{"PATH=/usr/bin:/bin", "DPKG_ROOT=" + root, "DPKG_MAINTSCRIPT_PACKAGE=" + tt.pkg}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("postrm purge: %v\n%s", err, out)
			}
			for _, p := range tt.gone {
				if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
					t.Errorf("%s is still there after purge (%v)", p, err)
				}
			}
			for _, p := range tt.kept {
				if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
					t.Errorf("%s was removed by purge: %v", p, err)
				}
			}
		})
	}
}

// callList formats calls one per line for a failure message.
func callList(calls []string) string {
	if len(calls) == 0 {
		return "  (nothing)"
	}
	return "  " + strings.Join(calls, "\n  ")
}
