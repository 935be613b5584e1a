package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vipkeeper/vipkeeper/agent"
	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync"
)

// The units carry what the daemons need and nothing more: notify with a
// watchdog, restart on failure, state and runtime directories, the sandbox
// and the capabilities each one really uses.
func TestUnitDirectives(t *testing.T) {
	common := map[string]string{
		"Type":                     "notify",
		"Restart":                  "on-failure",
		"StateDirectory":           "vipkeeper",
		"RuntimeDirectory":         "vipkeeper",
		"RuntimeDirectoryPreserve": "yes",
		"ProtectSystem":            "strict",
		"ProtectHome":              "yes",
		"NoNewPrivileges":          "yes",
		"PrivateTmp":               "yes",
		"AmbientCapabilities":      "",
	}
	tests := []struct {
		unit      string
		execStart string
		caps      []string
		families  []string
		rwPaths   []string
		before    []string
	}{
		{
			unit:      "vipkeeper-agent.service",
			execStart: "/usr/bin/vipkeeper-agent --config " + agent.DefaultConfigPath,
			caps:      []string{"CAP_NET_ADMIN"},
			families:  []string{"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"},
			rwPaths:   []string{"/etc/keepalived"},
			before:    []string{"keepalived.service"},
		},
		{
			unit:      "vipkeeper-hostsync.service",
			execStart: "/usr/bin/vipkeeper-hostsync --config " + hostsync.DefaultConfigPath,
			caps:      []string{"CAP_NET_ADMIN", "CAP_NET_RAW"},
			families:  []string{"AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.unit, func(t *testing.T) {
			u := parseUnit(t, filepath.Join("systemd", tt.unit))
			for k, want := range common {
				if got := u.get("Service", k); got != want {
					t.Errorf("[Service] %s = %q, want %q", k, got, want)
				}
			}
			if got := u.get("Service", "ExecStart"); got != tt.execStart {
				t.Errorf("ExecStart = %q, want %q", got, tt.execStart)
			}
			if d := u.get("Service", "WatchdogSec"); d == "" || d == "0" || d == "infinity" {
				t.Errorf("WatchdogSec = %q, want a watchdog", d)
			}
			if got := sorted(u.words("Service", "CapabilityBoundingSet")); !slices.Equal(got, tt.caps) {
				t.Errorf("CapabilityBoundingSet = %v, want exactly %v", got, tt.caps)
			}
			if got := sorted(u.words("Service", "RestrictAddressFamilies")); !slices.Equal(got, tt.families) {
				t.Errorf("RestrictAddressFamilies = %v, want exactly %v", got, tt.families)
			}
			if got := sorted(u.words("Service", "ReadWritePaths")); !slices.Equal(got, tt.rwPaths) {
				t.Errorf("ReadWritePaths = %v, want exactly %v", got, tt.rwPaths)
			}
			for _, b := range tt.before {
				if !slices.Contains(u.words("Unit", "Before"), b) {
					t.Errorf("[Unit] Before = %v, want it to contain %s", u.words("Unit", "Before"), b)
				}
			}
			if got := u.get("Install", "WantedBy"); got != "multi-user.target" {
				t.Errorf("[Install] WantedBy = %q, want multi-user.target", got)
			}
			if u.get("Service", "User") != "" || u.get("Service", "DynamicUser") != "" {
				t.Errorf("the unit sets User/DynamicUser; the daemons run as root with a reduced bounding set")
			}
		})
	}

	t.Run("keepalived drop-in", func(t *testing.T) {
		u := parseUnit(t, filepath.Join("systemd", "keepalived-vipkeeper.conf"))
		want := map[string]string{
			"Wants":                 "vipkeeper-agent.service",
			"After":                 "vipkeeper-agent.service",
			"ConditionFileNotEmpty": agent.DefaultConfig().Keepalived.Config,
		}
		for k, v := range want {
			if got := u.get("Unit", k); got != v {
				t.Errorf("[Unit] %s = %q, want %q", k, got, v)
			}
		}
		// An agent restart (upgrade) or crash must not stop keepalived,
		// which would move the VIP.
		for _, k := range []string{"Requires", "Requisite", "BindsTo", "PartOf"} {
			if v := u.get("Unit", k); v != "" {
				t.Errorf("[Unit] %s = %q: keepalived must not depend hard on the agent", k, v)
			}
		}
		if len(u) != 1 {
			t.Errorf("drop-in has sections %v, want only [Unit]", keys(u))
		}
	})
}

// The units' directories and paths are the ones the daemons use by default.
func TestUnitPathsMatchDaemonDefaults(t *testing.T) {
	au := parseUnit(t, filepath.Join("systemd", "vipkeeper-agent.service"))
	hu := parseUnit(t, filepath.Join("systemd", "vipkeeper-hostsync.service"))
	ac := agent.DefaultConfig()
	cfg, err := agent.ParseConfig("", []byte("[metadata]\nfile = \"/etc/vipkeeper/metadata.json\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	hc, err := hostsync.ParseConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	state := "/var/lib/" + au.get("Service", "StateDirectory")
	runDir := "/run/" + au.get("Service", "RuntimeDirectory")
	rw := au.words("Service", "ReadWritePaths")
	under := func(path string, dirs ...string) bool {
		for _, d := range dirs {
			if path == d || strings.HasPrefix(path, d+"/") {
				return true
			}
		}
		return false
	}
	checks := []struct {
		what string
		ok   bool
	}{
		{fmt.Sprintf("agent state_dir %s is the StateDirectory %s", ac.StateDir, state), ac.StateDir == state},
		{fmt.Sprintf("agent spool_dir %s is under the StateDirectory", cfg.SpoolDir), under(cfg.SpoolDir, state) && cfg.SpoolDir == control.DefaultSpoolDir},
		{fmt.Sprintf("agent socket %s is in the RuntimeDirectory %s", ac.Socket, runDir), filepath.Dir(ac.Socket) == runDir},
		{fmt.Sprintf("keepalived.conf %s is under ReadWritePaths %v", ac.Keepalived.Config, rw), under(ac.Keepalived.Config, rw...)},
		{fmt.Sprintf("scripts_dir %s is under ReadWritePaths %v", ac.Keepalived.ScriptsDir, rw), under(ac.Keepalived.ScriptsDir, rw...)},
		{fmt.Sprintf("vipctl %s is the packaged /usr/bin/vipctl", ac.Vipctl), ac.Vipctl == "/usr/bin/vipctl"},
		{fmt.Sprintf("hostsync state_dir %s is the StateDirectory", hc.StateDir), hc.StateDir == "/var/lib/"+hu.get("Service", "StateDirectory")},
		{fmt.Sprintf("hostsync db %s is under the StateDirectory", hc.DBPath), under(hc.DBPath, hc.StateDir)},
		{fmt.Sprintf("admin socket %s is in the RuntimeDirectory", api.DefaultAdminSocket), filepath.Dir(api.DefaultAdminSocket) == "/run/"+hu.get("Service", "RuntimeDirectory")},
	}
	for _, c := range checks {
		if !c.ok {
			t.Error(c.what + ": not so")
		}
	}
}

// systemd-analyze verify loads every unit from a throwaway root made of the
// extracted .deb files (so ExecStart= finds the built binaries) plus the
// host's targets and keepalived.service, and must say nothing. The negative
// controls show that the check can fail.
func TestSystemdAnalyzeVerify(t *testing.T) {
	requireCommands(t, "systemd-analyze", "dpkg-deb")
	arch := hostArch()
	if arch == "" {
		t.Skip("skipping: no package for this architecture")
	}
	dist := sharedPackages(t)
	root := t.TempDir()
	for _, name := range packageNames {
		run(t, "dpkg-deb", "-x", filepath.Join(dist, packageFile(name, pkgVersion, "deb", arch)), root)
	}
	unitDir := filepath.Join(root, "usr", "lib", "systemd", "system")
	// Targets and slices the units reach (sysinit.target, multi-user.target,
	// network-online.target, system.slice, ...), without their wants.
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		for _, pat := range []string{"*.target", "*.slice"} {
			matches, _ := filepath.Glob(filepath.Join(dir, pat))
			for _, m := range matches {
				if _, err := os.Stat(filepath.Join(unitDir, filepath.Base(m))); err == nil {
					continue
				}
				copyFile(t, m, filepath.Join(unitDir, filepath.Base(m)), 0o644)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(unitDir, "multi-user.target")); err != nil {
		testutil.SkipUnprivileged(t, "skipping: the host has no systemd targets to verify against")
	}
	// keepalived.service as Debian ships it when installed, else the same
	// lines; its programs are stand-ins inside the root.
	keepalived := "/lib/systemd/system/keepalived.service"
	if _, err := os.Stat(keepalived); err == nil {
		copyFile(t, keepalived, filepath.Join(unitDir, "keepalived.service"), 0o644)
	} else {
		writeFile(t, filepath.Join(unitDir, "keepalived.service"), debianKeepalivedUnit, 0o644)
	}
	for _, exe := range execPaths(t, filepath.Join(unitDir, "keepalived.service")) {
		writeFile(t, filepath.Join(root, exe), "#!/bin/sh\nexit 0\n", 0o755)
	}

	verify := func(units ...string) (string, error) {
		cmd := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + root, "--man=no"}, units...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	units := []string{"vipkeeper-agent.service", "keepalived.service", "vipkeeper-hostsync.service"}
	t.Run("packaged units", func(t *testing.T) {
		out, err := verify(units...)
		if err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("systemd-analyze verify %v: err %v, output:\n%s", units, err, out)
		}
	})

	// Negative controls on copies: a misspelt directive in the drop-in and
	// a missing binary must both be reported.
	t.Run("control: unknown directive in the drop-in", func(t *testing.T) {
		dropIn := filepath.Join(unitDir, "keepalived.service.d", "vipkeeper.conf")
		orig, err := os.ReadFile(dropIn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(dropIn, orig, 0o644) })
		writeFile(t, dropIn, string(orig)+"WantsX=vipkeeper-agent.service\n", 0o644)
		if out, _ := verify("keepalived.service"); !strings.Contains(out, "WantsX") {
			t.Fatalf("systemd-analyze verify did not report the unknown key; output:\n%s", out)
		}
	})
	t.Run("control: missing ExecStart binary", func(t *testing.T) {
		bin := filepath.Join(root, "usr", "bin", "vipkeeper-hostsync")
		if err := os.Rename(bin, bin+".away"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Rename(bin+".away", bin) })
		if out, err := verify("vipkeeper-hostsync.service"); err == nil || !strings.Contains(out, "vipkeeper-hostsync") {
			t.Fatalf("systemd-analyze verify accepted a unit without its binary: err %v, output:\n%s", err, out)
		}
	})

	// The sandbox keeps both daemons well inside systemd's "OK" exposure.
	t.Run("security exposure", func(t *testing.T) {
		for _, unit := range []string{"vipkeeper-agent.service", "vipkeeper-hostsync.service"} {
			out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--root="+root, unit).CombinedOutput()
			m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
			if m == nil {
				testutil.SkipUnprivileged(t, "skipping: systemd-analyze security --offline is not available here (err %v): %s", err, firstLine(out))
			}
			score, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("%s: exposure %.1f", unit, score)
			if score > 3.0 {
				t.Errorf("%s: exposure %.1f, want at most 3.0:\n%s", unit, score, out)
			}
		}
	})
}

// debianKeepalivedUnit is Debian 12's keepalived.service, for hosts without
// keepalived installed.
const debianKeepalivedUnit = `[Unit]
Description=Keepalive Daemon (LVS and VRRP)
After=network-online.target
Wants=network-online.target
ConditionFileNotEmpty=/etc/keepalived/keepalived.conf

[Service]
Type=notify
EnvironmentFile=-/etc/default/keepalived
ExecStart=/usr/sbin/keepalived --dont-fork $DAEMON_ARGS
ExecReload=/bin/kill -HUP $MAINPID

[Install]
WantedBy=multi-user.target
`

// execPaths are the programs of a unit's Exec*= lines.
func execPaths(t *testing.T, path string) []string {
	t.Helper()
	u := parseUnit(t, path)
	var out []string
	for k, vs := range u["Service"] {
		if !strings.HasPrefix(k, "Exec") {
			continue
		}
		for _, v := range vs {
			if f := strings.Fields(strings.TrimLeft(v, "-@:+!")); len(f) > 0 && filepath.IsAbs(f[0]) {
				out = append(out, f[0])
			}
		}
	}
	return out
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(data), mode)
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
