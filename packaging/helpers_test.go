package packaging

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// The version the shared package build stamps (main.version) and the
// package version scripts/packages.sh derives from it.
const (
	buildVersion = "v1.0.0"
	pkgVersion   = "1.0.0"
	// upgradeVersion is the newer build of the upgrade test.
	upgradeVersion    = "v1.0.1"
	upgradePkgVersion = "1.0.1"
	// maxPackageBytes is the size every package must stay under.
	maxPackageBytes = 15 << 20
)

var (
	packageNames = []string{"vipkeeper-agent", "vipkeeper-hostsync"}
	formats      = []string{"deb", "rpm"}
	arches       = []string{"amd64", "arm64"}
)

// shared is the package build every test of this package shares: it takes
// tens of seconds, so it runs once, on first use, and TestMain removes it.
var shared struct {
	once sync.Once
	dir  string
	out  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// repoRoot is the repository root (tests run in packaging/).
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// requireCommands skips the test when one of the programs is missing.
func requireCommands(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			testutil.SkipUnprivileged(t, "skipping: %s is not installed (%v)", n, err)
		}
	}
}

// requireRoot skips the test when not running as root.
func requireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.SkipUnprivileged(t, "skipping: needs root to %s", why)
	}
}

// hostArch is the package architecture whose binaries run here, or "".
func hostArch() string {
	switch runtime.GOARCH {
	case "amd64", "arm64":
		return runtime.GOARCH
	}
	return ""
}

// buildPackages runs scripts/packages.sh into dir with the environment
// additions env and returns its output.
func buildPackages(t testing.TB, dir string, env ...string) (string, error) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	root := repoRoot(t)
	cmd := exec.Command(filepath.Join(root, "scripts", "packages.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), append([]string{"GO=" + goBin, "DIST=" + dir}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("scripts/packages.sh: %w\n%s", err, out)
	}
	return string(out), nil
}

// sharedPackages builds every package (both formats, both architectures)
// once and returns the directory that holds them.
func sharedPackages(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: builds the packages (not in -short)")
	}
	requireCommands(t, "bash")
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "vipkeeper-packages-")
		if shared.err != nil {
			return
		}
		shared.out, shared.err = buildPackages(t, shared.dir, "VERSION="+buildVersion)
	})
	if shared.err != nil {
		t.Fatalf("building the packages: %v", shared.err)
	}
	return shared.dir
}

// packageFile is the file name nfpm gives a package.
func packageFile(name, version, format, arch string) string {
	if format == "deb" {
		return fmt.Sprintf("%s_%s-1_%s.deb", name, version, arch)
	}
	rpmArch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[arch]
	return fmt.Sprintf("%s-%s-1.%s.rpm", name, version, rpmArch)
}

// run runs a command and returns its standard output; it fails the test
// with both outputs when the command fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runErr runs a command with stdin from /dev/null; the error carries both
// outputs.
func runErr(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// unitFile is a parsed systemd unit file: section → key → values, in order.
type unitFile map[string]map[string][]string

// get is the last value of key in section ("" when unset).
func (u unitFile) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// words is every space-separated word of every value of key in section.
func (u unitFile) words(section, key string) []string {
	var out []string
	for _, v := range u[section][key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// parseUnit reads a unit file or drop-in (no line continuations).
func parseUnit(t testing.TB, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		case strings.HasSuffix(line, "\\"):
			t.Fatalf("%s:%d: line continuations are not expected", path, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not key=value inside a section", path, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// isExitError reports whether err is a command that ran and exited non-zero.
func isExitError(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee)
}
