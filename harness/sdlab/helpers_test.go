package sdlab

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// Versions of the packages the tests build: the one installed, and the
// newer one of the upgrade.
const (
	buildVersion   = "v1.0.0"
	pkgVersion     = "1.0.0-1"
	upgradeVersion = "v1.0.1"
	upgradePkg     = "1.0.1-1"
)

// Generous bounds for a CI machine whose two cores also run other tests.
const (
	shortWait = 60 * time.Second
	pollEvery = 250 * time.Millisecond
)

// fixture is what the systemd tests need: the root file system and two
// builds of the packages. Each part is made once per test binary (the
// root file system a minute cold, an instant cached; the packages some
// seconds) and the packages are removed by TestMain.
type fixture struct {
	rootfs Rootfs
	v1, v2 Debs
	repo   string
}

var shared struct {
	rootfsOnce, debsOnce sync.Once
	rootfs               Rootfs
	rootfsErr            error
	dir                  string // the built packages
	v1, v2               Debs
	debsErr              error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// requireLab skips the test when the systemd lab cannot run here: not
// root, a command missing (debootstrap, systemd-nspawn...), or -short.
func requireLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: the systemd lab boots containers; not in -short mode")
	}
	if err := Available(); err != nil {
		testutil.SkipUnprivileged(t, "skipping: %v", err)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func repoRoot(t *testing.T) string {
	t.Helper()
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// getRootfs builds (once) or finds the cached root file system.
func getRootfs(t *testing.T) *fixture {
	t.Helper()
	repo := repoRoot(t)
	shared.rootfsOnce.Do(func() { buildRootfs(t, repo) })
	if shared.rootfsErr != nil {
		t.Fatalf("root file system: %v", shared.rootfsErr)
	}
	return &fixture{rootfs: shared.rootfs, repo: repo}
}

func buildRootfs(t *testing.T, repo string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	shared.rootfs, shared.rootfsErr = EnsureRootfs(ctx, RootfsOptions{Script: filepath.Join(repo, "scripts", "rootfs.sh"), Out: t.Output()})
	if shared.rootfsErr == nil {
		how := "cold (debootstrap)"
		if shared.rootfs.Cached {
			how = "cached"
		}
		t.Logf("timing: rootfs %s in %s: %s", how, shared.rootfs.Took.Round(100*time.Millisecond), shared.rootfs.Dir)
	}
}

// getFixture is getRootfs plus the packages, built once with the
// repository's scripts/packages.sh, while the root file system builds:
// debootstrap waits on the network, the build on the CPU.
func getFixture(t *testing.T) *fixture {
	t.Helper()
	repo := repoRoot(t)
	var wg sync.WaitGroup
	wg.Go(func() { shared.rootfsOnce.Do(func() { buildRootfs(t, repo) }) })
	shared.debsOnce.Do(func() {
		start := time.Now()
		shared.dir, shared.debsErr = os.MkdirTemp("", "vipkeeper-sdlab-debs-")
		if shared.debsErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		shared.v1, shared.debsErr = BuildPackages(ctx, BuildOptions{Repo: repo, Dir: filepath.Join(shared.dir, "v1"), Version: buildVersion})
		if shared.debsErr == nil {
			shared.v2, shared.debsErr = BuildPackages(ctx, BuildOptions{Repo: repo, Dir: filepath.Join(shared.dir, "v2"), Version: upgradeVersion})
		}
		t.Logf("timing: packages %s and %s built in %s", buildVersion, upgradeVersion, time.Since(start).Round(100*time.Millisecond))
	})
	wg.Wait()
	if shared.debsErr != nil {
		t.Fatalf("packages: %v", shared.debsErr)
	}
	f := getRootfs(t)
	f.v1, f.v2 = shared.v1, shared.v2
	return f
}

// newLab makes a lab removed when the test ends; the cleanup also checks
// that nothing of it is left on the machine, and dumps the journals of
// the containers first when the test failed.
func newLab(t *testing.T, f *fixture) *Lab {
	t.Helper()
	l, err := New(Options{Rootfs: f.rootfs.Dir, Dir: t.TempDir(), Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
		if left := l.Leftovers(); len(left) > 0 {
			t.Errorf("left on the machine after Close: %v", left)
		}
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		l.mu.Lock()
		cs := append([]*Container(nil), l.containers...)
		l.mu.Unlock()
		for _, c := range cs {
			dumpContainer(t, c)
		}
	})
	return l
}

// dumpContainer logs what helps to understand a failure.
func dumpContainer(t *testing.T, c *Container) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c.Leader() == 0 || c.Exited() {
		t.Logf("%s", c.consoleTail(40))
		return
	}
	out, err := c.Output(ctx, "journalctl", "--no-pager", "--lines=150", "--output=short-precise",
		"--unit=vipkeeper-agent.service", "--unit=keepalived.service", "--unit=vipkeeper-hostsync.service", "--unit=nginx.service")
	t.Logf("journal of %s (last lines, %v):\n%s", c.Name, err, out)
	out, _ = c.Output(ctx, "systemctl", "--failed", "--no-legend", "--plain")
	t.Logf("failed units of %s: %s", c.Name, out)
}

// run runs argv in c and fails the test on error.
func run(t *testing.T, ctx context.Context, c *Container, argv ...string) string {
	t.Helper()
	out, err := c.Output(ctx, argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", c.Name, err, out)
	}
	return out
}

// poll fails the test when cond does not hold within timeout.
func poll(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func() (bool, string, error)) {
	t.Helper()
	if err := Poll(ctx, timeout, pollEvery, what, cond); err != nil {
		t.Fatal(err)
	}
}

var reStatus = regexp.MustCompile(`(?m)^\s*Status: "(.*)"$`)

// statusLine is the STATUS= sentence `systemctl status UNIT` shows.
func statusLine(ctx context.Context, c *Container, unit string) (string, error) {
	out, err := c.Status(ctx, unit)
	if err != nil {
		return "", err
	}
	m := reStatus.FindStringSubmatch(out)
	if m == nil {
		return "", nil
	}
	return m[1], nil
}

// hasAddr reports whether prefix (e.g. "192.0.2.10/24") is on dev in c.
func hasAddr(ctx context.Context, c *Container, dev, prefix string) (bool, error) {
	out, err := c.Output(ctx, "ip", "-o", "-4", "addr", "show", "dev", dev)
	if err != nil {
		return false, err
	}
	return strings.Contains(out, " "+prefix+" "), nil
}

// dpkgStatus is dpkg-query's "Status Version" of pkg in c, "" when dpkg
// does not know it.
func dpkgStatus(ctx context.Context, c *Container, pkg string) string {
	out, err := c.Output(ctx, "dpkg-query", "--show", "--showformat=${Status} ${Version}", pkg)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// guestNet puts the guest namespace g on the bridge br0 of namespace
// host: eth0 with addr/24 and mac, default route via gw.
func guestNet(l *Lab, host, g, hostEnd, mac, addr, gw string) error {
	steps := []func() error{
		func() error { return l.Veth(host, hostEnd, g, "eth0") },
		func() error { return l.IP(host, "link", "set", hostEnd, "master", "br0") },
		func() error { return l.IP(g, "link", "set", "eth0", "address", mac) },
		func() error { return l.IP(g, "addr", "add", addr+"/24", "dev", "eth0") },
		func() error { return l.IP(g, "route", "add", "default", "via", gw) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("guest %s: %w", g, err)
		}
	}
	return nil
}

// example is one of the repository's cloud-init examples
// (packaging/cloud-init/NAME), the user-data a guest boots with. The lab
// gives the guests the examples' own documentation addresses (the host
// 192.0.2.1, the VMs 192.0.2.11 and .12), so the document is used as it
// is, byte for byte.
func example(t *testing.T, f *fixture, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(f.repo, "packaging", "cloud-init", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkCloudInit asserts what a guest booted with user-data must show:
// cloud-init done from the NoCloud seed with no error, no warning and a
// user-data document its schema accepts, the seed's user-data being the
// document given (userData), and systemd running.
func checkCloudInit(t *testing.T, ctx context.Context, c *Container, userData []byte) {
	t.Helper()
	r, err := c.CloudInit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: cloud-init status --long:\n%s", c.Name, r.Long)
	if err := r.Err(); err != nil {
		t.Errorf("%s: %v", c.Name, err)
	}
	if !strings.HasPrefix(r.Long, "status: done\n") || strings.Contains(r.Long, "rror") {
		t.Errorf("%s: cloud-init status --long:\n%s\nwant status: done and no error", c.Name, r.Long)
	}
	// What cloud-init took as this instance's user-data.
	got, err := c.ReadFile(ctx, "/var/lib/cloud/instance/user-data.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, userData) {
		t.Errorf("%s: cloud-init's user-data differs from the example:\n%s", c.Name, got)
	}
	if got := strings.TrimSpace(run(t, ctx, c, "systemctl", "is-system-running")); got != "running" {
		t.Errorf("%s: is-system-running = %q", c.Name, got)
	}
}

// checkMetrics runs Debian's promtool (package prometheus, in the
// Makefile's TEST_DEPS) on a daemon's /metrics text: `promtool check
// metrics` must find nothing to say. It returns the samples by series, as
// the text writes them (`name{label="value",...}`).
func checkMetrics(t *testing.T, daemon, body string) map[string]float64 {
	t.Helper()
	samples := map[string]float64{}
	for line := range strings.SplitSeq(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("%s /metrics: sample line %q: %v", daemon, line, err)
		}
		samples[line[:i]] = v
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testutil.SkipUnprivileged(t, "skipping promtool check metrics: promtool not installed (apt-get install prometheus): %v", err)
	}
	cmd := exec.CommandContext(t.Context(), promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics on %s's /metrics: %v\n%s", daemon, err, out)
	} else {
		t.Logf("promtool check metrics on %s's /metrics (%d samples): clean", daemon, len(samples))
	}
	return samples
}

// grepLines are the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
