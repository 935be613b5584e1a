package render

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/internal/fsutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// keepalivedLog is the console log of a keepalived run, line by line.
type keepalivedLog struct {
	t     *testing.T
	lines chan string
	mu    sync.Mutex
	all   []string
}

// waitFor reads the log until a line matches re and returns it; it fails
// the test when the log ends or nothing matches within d (a bound on a
// wait for an event, not an assertion on time).
func (l *keepalivedLog) waitFor(re *regexp.Regexp, d time.Duration) string {
	l.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-l.lines:
			if !ok {
				l.t.Fatalf("keepalived's log ended before a line matching %q:\n%s", re, l.text())
			}
			if re.MatchString(line) {
				return line
			}
		case <-timer.C:
			l.t.Fatalf("no line matching %q within %s:\n%s", re, d, l.text())
		}
	}
}

func (l *keepalivedLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// TestKeepalivedFollowsTrackFile runs the real keepalived on a rendered
// configuration with a resign check and checks what --config-test cannot:
// keepalived creates the missing track file as failing (FAULT), follows
// the verdicts written atomically into it, keeps the verdict across a
// reload (init_file without overwrite), and the backstop vrrp_script
// failing puts the member in FAULT although the file says healthy.
func TestKeepalivedFollowsTrackFile(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipUnprivileged(t, "needs root: creates a network namespace and runs keepalived")
	}
	keepalived, err := exec.LookPath("keepalived")
	if err != nil {
		testutil.SkipUnprivileged(t, "keepalived is not installed (apt-get install keepalived, or make deps)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testutil.SkipUnprivileged(t, "ip (iproute2) is not installed")
	}
	ns := newNetns(t, []string{"eth0"})
	runCmd(t, "ip", "-n", ns, "addr", "add", "192.0.2.51/24", "dev", "eth0")

	// Root-owned directories (enable_script_security), not t.TempDir().
	base, err := os.MkdirTemp("/run", "vkrender-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	scripts, track := filepath.Join(base, "scripts"), filepath.Join(base, "track")
	for _, d := range []string{scripts, track} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A stand-in for vipctl: the backstop passes unless the flag file
	// exists; notify calls pass.
	failFlag := filepath.Join(base, "backstop-fails")
	vipctl := filepath.Join(base, "vipctl")
	if err := os.WriteFile(vipctl, []byte("#!/bin/sh\ncase \"$1\" in check) [ ! -e '"+failFlag+"' ];; *) exit 0;; esac\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	m := &vrrp.Metadata{
		Version: 1, Group: vrrp.Group{ID: "ig-solo", Name: "solo"},
		VIP: netip.MustParsePrefix("192.0.2.50/24"), VirtualRouterID: 50,
		VRRPVersion: 3, AdvertInt: 100,
		Members: []vrrp.Member{{Name: "solo-1", Address: netip.MustParseAddr("192.0.2.51"), Priority: 100}},
		Checks:  []vrrp.Check{{Name: "chk", Kind: vrrp.CheckTCP, Address: "127.0.0.1:1", Interval: 200}},
	}
	out, err := Render(m, Options{Self: "solo-1", ScriptsDir: scripts, Vipctl: vipctl, TrackDir: track, BackstopInterval: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range out.Files() {
		if err := os.WriteFile(filepath.Join(scripts, f.Name), f.Data, os.FileMode(f.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	file := TrackFile(track, "chk")

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, keepalived, "--vrrp", "-n", "-l", "-D",
		"-f", filepath.Join(scripts, ConfigName),
		"-p", filepath.Join(base, "keepalived.pid"), "-r", filepath.Join(base, "vrrp.pid"))
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log := &keepalivedLog{t: t, lines: make(chan string, 1024)}
	go func() {
		defer close(log.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			log.mu.Lock()
			log.all = append(log.all, sc.Text())
			log.mu.Unlock()
			log.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		// Nothing in the whole run may say keepalived dropped or doubted
		// part of the configuration (a missing track directory reads
		// "Track file directory for chk does not exist - removing").
		for _, l := range strings.Split(log.text(), "\n") {
			if reKeepalivedComplaint.MatchString(l) || regexp.MustCompile(`(?i)deprecated|unable|removing track|does not exist`).MatchString(l) {
				t.Errorf("keepalived says: %s", l)
			}
		}
	})
	const wait = 15 * time.Second
	write := func(v string) {
		t.Helper()
		if err := fsutil.WriteAtomic(file, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// keepalived words it "entering FAULT state (tracked file chk has
	// status -254)" at start, "tracked file chk now FAULT state" later.
	reFaultFile := regexp.MustCompile(`\(VI_solo\): (entering FAULT state \(tracked file chk |tracked file chk now FAULT state)`)
	reMaster := regexp.MustCompile(`\(VI_solo\) Entering MASTER STATE`)

	// init_file: the missing file is created failing, before any verdict.
	log.waitFor(reFaultFile, wait)
	if data, err := os.ReadFile(file); err != nil || strings.TrimSpace(string(data)) != "1" {
		t.Fatalf("track file after start = %q, %v; want 1 (failing until the first verdict)", data, err)
	}

	write("0\n")
	log.waitFor(regexp.MustCompile(`tracked file chk leaving FAULT state`), wait)
	log.waitFor(reMaster, wait)

	// A reload keeps the verdict: init_file never overwrites.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	log.waitFor(regexp.MustCompile(`^.*: Reload complete$`), wait)
	if data, err := os.ReadFile(file); err != nil || string(data) != "0\n" {
		t.Fatalf("track file after reload = %q, %v; want the agent's verdict 0", data, err)
	}

	// Resign: the master entering FAULT sends priority 0 at once, so a
	// backup takes over after its skew time.
	write("1\n")
	log.waitFor(reFaultFile, wait)
	log.waitFor(regexp.MustCompile(`\(VI_solo\) sent 0 priority`), wait)
	write("0\n")
	log.waitFor(reMaster, wait)

	// The backstop: the file says healthy, the check fails without an
	// agent to defer to.
	if err := os.WriteFile(failFlag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	log.waitFor(regexp.MustCompile(`VRRP_Script\(chk\) failed`), wait)
	log.waitFor(regexp.MustCompile(`\(VI_solo\) Entering FAULT STATE`), wait)
}
