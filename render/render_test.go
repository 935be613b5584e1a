package render

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// doc is a valid document every table case starts from.
func doc() *vrrp.Metadata {
	return &vrrp.Metadata{
		Version:         1,
		Group:           vrrp.Group{ID: "ig-web", Name: "web"},
		Revision:        5,
		VIP:             netip.MustParsePrefix("192.0.2.10/24"),
		VirtualRouterID: 10,
		Auth:            &vrrp.Auth{Type: "PASS", Pass: "1111"},
		Members: []vrrp.Member{
			{Name: "web-a", Address: netip.MustParseAddr("192.0.2.11"), Priority: 100},
			{Name: "web-b", Address: netip.MustParseAddr("192.0.2.12"), Priority: 99},
		},
		Checks: []vrrp.Check{
			{Name: "chk_web", Kind: vrrp.CheckProcess, Process: "nginx", RestartUnit: "nginx.service", Weight: 2},
		},
	}
}

func TestRenderRejectsInvalidMetadataUnchanged(t *testing.T) {
	m := doc()
	m.Members[1].Priority = 300
	_, err := Render(m, Options{Self: "web-a"})
	var fe *vrrp.FieldError
	if !errors.As(err, &fe) || fe.Path != "members[1].priority" {
		t.Fatalf("Render error %v, want *vrrp.FieldError for members[1].priority", err)
	}
	if want := m.Validate(); err.Error() != want.Error() {
		t.Errorf("Render error %q, want vrrp's %q unchanged", err, want)
	}
	if _, err := Render(nil, Options{Self: "web-a"}); err == nil {
		t.Error("Render(nil) succeeded")
	}
}

func TestRenderDefaults(t *testing.T) {
	out, err := Render(doc(), Options{Self: "web-b"})
	if err != nil {
		t.Fatal(err)
	}
	assertRendered(t, doc(), Options{Self: "web-b"}, out)
	for _, want := range []string{
		"interface eth0\n",
		`script "/etc/keepalived/vipkeeper/check_chk_web.sh"`,
		`notify "/etc/keepalived/vipkeeper/notify.sh"`,
	} {
		if !bytes.Contains(out.Config, []byte(want)) {
			t.Errorf("config lacks %q", want)
		}
	}
}

func TestRenderDeterministicAndHashed(t *testing.T) {
	first, err := Render(doc(), Options{Self: "web-a"})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := Render(doc(), Options{Self: "web-a"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, again); diff != "" {
			t.Fatalf("second render differs (-first +again):\n%s", diff)
		}
	}
	variants := []struct {
		name string
		m    func() *vrrp.Metadata
		opts Options
	}{
		{"other member", doc, Options{Self: "web-b"}},
		{"script only: vipctl path", doc, Options{Self: "web-a", Vipctl: "/usr/local/bin/vipctl"}},
		{"script only: spool dir", doc, Options{Self: "web-a", SpoolDir: "/var/spool/vk"}},
		{"local check", doc, Options{Self: "web-a", ExtraChecks: []vrrp.Check{{Name: "chk_x", Kind: vrrp.CheckTCP, Address: "127.0.0.1:1"}}}},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			out, err := Render(v.m(), v.opts)
			if err != nil {
				t.Fatal(err)
			}
			if out.Hash == first.Hash {
				t.Errorf("hash unchanged although the output changed")
			}
		})
	}
}

// TestRevisionAndEIPNotRendered: a revision that changes nothing keepalived
// reads (the EIP associated, the revision bumped) renders the same bytes
// and hash, so the agent neither rewrites keepalived.conf nor reloads.
func TestRevisionAndEIPNotRendered(t *testing.T) {
	for _, versioned := range []bool{false, true} {
		opts := Options{Self: "web-a", VersionedScripts: versioned}
		first, err := Render(doc(), opts)
		if err != nil {
			t.Fatal(err)
		}
		m := doc()
		m.Revision += 7
		m.EIP = netip.MustParseAddr("203.0.113.5")
		again, err := Render(m, opts)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(first, again); diff != "" {
			t.Errorf("versioned=%v: revision and EIP changed the output (-before +after):\n%s", versioned, diff)
		}
	}
}

// TestVersionedScripts: keepalived.conf refers to the scripts in a
// directory named after their content; a script change moves them to a
// new directory (so a running keepalived.conf's scripts are never
// overwritten), a config-only change keeps the directory.
func TestVersionedScripts(t *testing.T) {
	base, err := Render(doc(), Options{Self: "web-a", VersionedScripts: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(base.ScriptsVersion, ScriptsVersionPrefix) || len(base.ScriptsVersion) != len(ScriptsVersionPrefix)+16 {
		t.Fatalf("ScriptsVersion = %q", base.ScriptsVersion)
	}
	if want := DefaultScriptsDir + "/" + base.ScriptsVersion; base.ScriptsDir != want {
		t.Fatalf("ScriptsDir = %q, want %q", base.ScriptsDir, want)
	}
	for _, f := range base.Scripts {
		if !bytes.Contains(base.Config, []byte(`"`+base.ScriptsDir+"/"+f.Name+`"`)) {
			t.Errorf("config does not refer to %s in %s", f.Name, base.ScriptsDir)
		}
	}
	if bytes.Contains(base.Config, []byte(`"`+DefaultScriptsDir+"/notify.sh")) {
		t.Error("config refers to the unversioned scripts directory")
	}
	flat, err := Render(doc(), Options{Self: "web-a"})
	if err != nil {
		t.Fatal(err)
	}
	if flat.ScriptsVersion != "" || flat.ScriptsDir != DefaultScriptsDir {
		t.Errorf("unversioned: ScriptsVersion %q, ScriptsDir %q", flat.ScriptsVersion, flat.ScriptsDir)
	}
	if diff := cmp.Diff(flat.Scripts, base.Scripts); diff != "" {
		t.Errorf("versioning changed the scripts themselves:\n%s", diff)
	}

	m := doc()
	m.Members[0].Priority += 10
	cfgOnly, err := Render(m, Options{Self: "web-a", VersionedScripts: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfgOnly.ScriptsVersion != base.ScriptsVersion || bytes.Equal(cfgOnly.Config, base.Config) {
		t.Errorf("config-only change: version %s → %s, config changed %v", base.ScriptsVersion, cfgOnly.ScriptsVersion, !bytes.Equal(cfgOnly.Config, base.Config))
	}
	scriptChange, err := Render(doc(), Options{Self: "web-a", VersionedScripts: true, Vipctl: "/usr/local/bin/vipctl"})
	if err != nil {
		t.Fatal(err)
	}
	if scriptChange.ScriptsVersion == base.ScriptsVersion {
		t.Error("scripts changed but their version did not")
	}
}

func TestInitialState(t *testing.T) {
	no := false
	tests := []struct {
		name   string
		mutate func(m *vrrp.Metadata)
		self   string
		want   string
	}{
		{"highest priority preempting", func(*vrrp.Metadata) {}, "web-a", "MASTER"},
		{"lower priority", func(*vrrp.Metadata) {}, "web-b", "BACKUP"},
		{"highest with nopreempt", func(m *vrrp.Metadata) { m.Preempt = &no }, "web-a", "BACKUP"},
		{"highest with preempt_delay", func(m *vrrp.Metadata) { m.PreemptDelay = 10000 }, "web-a", "BACKUP"},
		{"highest listed last", func(m *vrrp.Metadata) { m.Members[1].Priority = 200 }, "web-b", "MASTER"},
		{"single member", func(m *vrrp.Metadata) { m.Members = m.Members[1:] }, "web-b", "MASTER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := doc()
			tt.mutate(m)
			out, err := Render(m, Options{Self: tt.self})
			if err != nil {
				t.Fatal(err)
			}
			assertRendered(t, m, Options{Self: tt.self}, out)
			nodes, err := parseConf(out.Config)
			if err != nil {
				t.Fatal(err)
			}
			if got := leaf(t, nodes[len(nodes)-1], "state"); len(got) != 1 || got[0] != tt.want {
				t.Errorf("state %q, want %s", got, tt.want)
			}
			if strings.Contains(string(out.Config), "nopreempt") != (m.Preempt != nil && !*m.Preempt) {
				t.Errorf("nopreempt rendered wrongly:\n%s", out.Config)
			}
		})
	}
}

func TestLocalChecksMerge(t *testing.T) {
	m := doc()
	m.Checks = append(m.Checks, vrrp.Check{Name: "chk_api", Kind: vrrp.CheckTCP, Address: "127.0.0.1:8080"})
	local := []vrrp.Check{
		{Name: "chk_disk", Kind: vrrp.CheckExec, Command: []string{"/usr/bin/true"}},
		{Name: "chk_web", Kind: vrrp.CheckHTTP, URL: "http://127.0.0.1/"},
	}
	got := mergeChecks(m.Checks, local)
	var names []string
	for _, c := range got {
		names = append(names, c.Name+":"+string(c.Kind))
	}
	want := []string{"chk_web:http", "chk_api:tcp", "chk_disk:exec"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("merged checks (-want +got):\n%s", diff)
	}
	opts := Options{Self: "web-a", ExtraChecks: local}
	out, err := Render(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	assertRendered(t, m, opts, out)
}

func TestTrackFileAndEffectiveChecks(t *testing.T) {
	if got, want := TrackFile("/run/vipkeeper/track", "chk_web"), "/run/vipkeeper/track/chk_web"; got != want {
		t.Errorf("TrackFile = %q, want %q", got, want)
	}
	m := doc()
	m.Checks = append(m.Checks, vrrp.Check{Name: "chk_api", Kind: vrrp.CheckTCP, Address: "127.0.0.1:8080"})
	local := []vrrp.Check{
		{Name: "chk_disk", Kind: vrrp.CheckExec, Command: []string{"/usr/bin/true"}},
		{Name: "chk_api", Kind: vrrp.CheckHTTP, URL: "http://127.0.0.1:8080/"},
	}
	if diff := cmp.Diff(wantChecks(m.Checks, local), EffectiveChecks(m, local)); diff != "" {
		t.Errorf("EffectiveChecks (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(local, EffectiveChecks(nil, local)); diff != "" {
		t.Errorf("EffectiveChecks(nil, local) (-want +got):\n%s", diff)
	}
	// The checks Render uses are EffectiveChecks': one script each.
	out, err := Render(m, Options{Self: "web-a", ExtraChecks: local})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(out.Scripts), len(EffectiveChecks(m, local))+1; got != want {
		t.Errorf("%d scripts, want %d (one per effective check and notify.sh)", got, want)
	}
}

// TestLowerPriorityRendersAsBefore: a weighted check renders the same
// bytes whether its document predates on_failure or says lower_priority.
func TestLowerPriorityRendersAsBefore(t *testing.T) {
	legacy, err := Render(doc(), Options{Self: "web-a"})
	if err != nil {
		t.Fatal(err)
	}
	m := doc()
	m.Checks[0].OnFailure = vrrp.OnFailureLowerPriority
	explicit, err := Render(m, Options{Self: "web-a"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(legacy, explicit); diff != "" {
		t.Errorf("explicit lower_priority renders differently (-legacy +explicit):\n%s", diff)
	}
	for _, absent := range []string{"track_file", "agent-socket"} {
		for _, f := range legacy.Files() {
			if bytes.Contains(f.Data, []byte(absent)) {
				t.Errorf("%s of a lower_priority check mentions %s", f.Name, absent)
			}
		}
	}
}

// TestBackstopTiming pins keepalived's interval and timeout of the
// backstop: whole seconds, never more often than the check itself, a
// timeout covering the agent's answer (1 s), the check's own timeout and
// half a second.
func TestBackstopTiming(t *testing.T) {
	tests := []struct {
		name               string
		interval, timeout  vrrp.Seconds
		backstop           vrrp.Seconds
		wantInt, wantTmout string
	}{
		{"defaults", 0, 0, 0, "3", "3"},
		{"sub-second check", 200, 0, 0, "3", "2"},
		{"timeout below interval", 500, 300, 0, "3", "2"},
		{"timeout 1.5", 0, 1500, 0, "3", "3"},
		{"slow check", 10000, 8000, 0, "10", "10"},
		{"check interval rounded up", 3010, 0, 0, "4", "5"},
		{"longest", 3600 * 1000, 3600 * 1000, 0, "3600", "3602"},
		{"backstop 1 s", 50, 0, 1000, "1", "2"},
		{"backstop longer than the check", 2000, 0, 10000, "10", "4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := doc()
			m.Checks[0] = vrrp.Check{Name: "chk_web", Kind: vrrp.CheckTCP, Address: "127.0.0.1:80", Interval: tt.interval, Timeout: tt.timeout}
			opts := Options{Self: "web-a", BackstopInterval: tt.backstop}
			out, err := Render(m, opts)
			if err != nil {
				t.Fatal(err)
			}
			assertRendered(t, m, opts, out)
			nodes, err := parseConf(out.Config)
			if err != nil {
				t.Fatal(err)
			}
			vs := nodes[2]
			if vs.Key != "vrrp_script" {
				t.Fatalf("third block is %s, want the backstop vrrp_script", vs.Key)
			}
			if got := leaf(t, vs, "interval"); !slices.Equal(got, []string{tt.wantInt}) {
				t.Errorf("interval %q, want %s", got, tt.wantInt)
			}
			if got := leaf(t, vs, "timeout"); !slices.Equal(got, []string{tt.wantTmout}) {
				t.Errorf("timeout %q, want %s", got, tt.wantTmout)
			}
		})
	}
}

// TestTrackDirNotVersioned: the track files stay where they are when the
// scripts move to a new versioned directory, so a verdict survives every
// rendering; the track directory does not change the scripts' version.
func TestTrackDirNotVersioned(t *testing.T) {
	m := doc()
	m.Checks[0] = vrrp.Check{Name: "chk_web", Kind: vrrp.CheckHTTP, URL: "http://127.0.0.1/"}
	a, err := Render(m, Options{Self: "web-a", VersionedScripts: true, TrackDir: "/run/vk/track"})
	if err != nil {
		t.Fatal(err)
	}
	m.Checks[0].URL = "http://127.0.0.1/healthz"
	b, err := Render(m, Options{Self: "web-a", VersionedScripts: true, TrackDir: "/run/vk/track"})
	if err != nil {
		t.Fatal(err)
	}
	if a.ScriptsVersion == b.ScriptsVersion {
		t.Fatal("a script change kept the scripts' version")
	}
	want := `file "/run/vk/track/chk_web"`
	for _, out := range []*Output{a, b} {
		if !bytes.Contains(out.Config, []byte(want)) {
			t.Errorf("config (scripts %s) lacks %s:\n%s", out.ScriptsVersion, want, out.Config)
		}
	}
	c, err := Render(m, Options{Self: "web-a", VersionedScripts: true, TrackDir: "/run/other"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ScriptsVersion != b.ScriptsVersion || bytes.Equal(c.Config, b.Config) {
		t.Errorf("track dir change: scripts version %s → %s (want unchanged), config changed %v (want changed)",
			b.ScriptsVersion, c.ScriptsVersion, !bytes.Equal(c.Config, b.Config))
	}
}

// TestShellQuote checks the quoting against the test's splitter and
// against a real /bin/sh.
func TestShellQuote(t *testing.T) {
	values := []string{
		"", "plain", "a b", "it's", "''", `\`, `"double"`, "$(id)", "`id`", "$HOME",
		"a;b&&c|d", "#comment", "}{", "* ? [a]", "~root", "tab\there", "ünïcode", `'\''`,
	}
	sh, shErr := exec.LookPath("sh")
	for _, v := range values {
		q := shellQuote(v)
		words, err := splitShellWords(q)
		if err != nil || len(words) != 1 || words[0] != v {
			t.Errorf("split(shellQuote(%q)) = %q, %v", v, words, err)
		}
		if shErr != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, sh, "-c", "printf '%s' "+q).Output()
		cancel()
		if err != nil || string(out) != v {
			t.Errorf("sh printf %s = %q, %v; want %q", q, out, err, v)
		}
	}
}

// TestInjection feeds keepalived and shell syntax through every string
// that reaches the output: each is either refused naming its field, or
// lands quoted so that the config and the scripts read back exactly.
func TestInjection(t *testing.T) {
	evil := []string{"x\ny", "x}", "x{", `x"`, "x#y", "x!y", "x y", "$(id)", "x'y", "`id`", "x;id", "x\\y"}
	type tc struct {
		name   string
		mutate func(m *vrrp.Metadata, o *Options)
		field  string // field or option refused; "" means rendered and quoted
	}
	var tests []tc
	for _, e := range evil {
		tests = append(tests,
			tc{"group.name " + e, func(m *vrrp.Metadata, o *Options) { m.Group.Name = "web" + e }, "group.name"},
			tc{"group.id " + e, func(m *vrrp.Metadata, o *Options) { m.Group.ID = "ig" + e }, "group.id"},
			tc{"member name " + e, func(m *vrrp.Metadata, o *Options) { m.Members[1].Name = "web" + e }, "members[1].name"},
			tc{"check name " + e, func(m *vrrp.Metadata, o *Options) { m.Checks[0].Name = "chk" + e }, "checks[0].name"},
			tc{"process " + e, func(m *vrrp.Metadata, o *Options) { m.Checks[0].Process = "ng" + e }, "checks[0].process"},
			tc{"restart unit " + e, func(m *vrrp.Metadata, o *Options) { m.Checks[0].RestartUnit = "a" + e + ".service" }, "checks[0].restart_unit"},
			tc{"auth pass " + e, func(m *vrrp.Metadata, o *Options) { m.Auth.Pass = "p" + e }, authField(e)},
			tc{"tcp address " + e, func(m *vrrp.Metadata, o *Options) {
				m.Checks[0] = vrrp.Check{Name: "chk_web", Kind: vrrp.CheckTCP, Address: "127.0.0.1:80" + e}
			}, "checks[0].address"},
			tc{"self " + e, func(m *vrrp.Metadata, o *Options) { o.Self = "web-a" + e }, "self"},
			tc{"interface " + e, func(m *vrrp.Metadata, o *Options) { o.Interface = "eth0" + e }, "interface"},
			tc{"scripts_dir " + e, func(m *vrrp.Metadata, o *Options) { o.ScriptsDir = "/etc/k" + e }, "scripts_dir"},
			tc{"vipctl " + e, func(m *vrrp.Metadata, o *Options) { o.Vipctl = "/usr/bin/v" + e }, "vipctl"},
			tc{"notify_socket " + e, func(m *vrrp.Metadata, o *Options) { o.NotifySocket = "/run/s" + e }, "notify_socket"},
			tc{"spool_dir " + e, func(m *vrrp.Metadata, o *Options) { o.SpoolDir = "/var/s" + e }, "spool_dir"},
			tc{"track_dir " + e, func(m *vrrp.Metadata, o *Options) { o.TrackDir = "/run/t" + e }, "track_dir"},
			tc{"local check name " + e, func(m *vrrp.Metadata, o *Options) {
				o.ExtraChecks = []vrrp.Check{{Name: "chk" + e, Kind: vrrp.CheckTCP, Address: "127.0.0.1:1"}}
			}, "local_checks[0].name"},
		)
		argField := ""
		if strings.ContainsAny(e, "\n") {
			argField = "checks[0].command[1]"
		}
		tests = append(tests,
			tc{"exec argument " + e, func(m *vrrp.Metadata, o *Options) {
				m.Checks[0] = vrrp.Check{Name: "chk_web", Kind: vrrp.CheckExec, Command: []string{"/usr/bin/test", "a" + e, e}}
			}, argField},
			tc{"exec argument with restart " + e, func(m *vrrp.Metadata, o *Options) {
				m.Checks[0] = vrrp.Check{Name: "chk_web", Kind: vrrp.CheckExec, RestartUnit: "x.service", Command: []string{"/usr/bin/test", "a" + e}}
			}, argField},
		)
	}
	tests = append(tests,
		tc{"url with shell syntax is quoted", func(m *vrrp.Metadata, o *Options) {
			m.Checks[0] = vrrp.Check{Name: "chk_web", Kind: vrrp.CheckHTTP, URL: "http://127.0.0.1/$(id);x&y=1#!*"}
		}, ""},
		tc{"url with quote", func(m *vrrp.Metadata, o *Options) {
			m.Checks[0] = vrrp.Check{Name: "chk_web", Kind: vrrp.CheckHTTP, URL: "http://127.0.0.1/'x"}
		}, "checks[0].url"},
		tc{"exec path with space is quoted", func(m *vrrp.Metadata, o *Options) {
			m.Checks[0] = vrrp.Check{Name: "chk_web", Kind: vrrp.CheckExec, Command: []string{"/opt/my tools/it's ok"}}
		}, ""},
		tc{"auth pass keepalived $_RANDOM", func(m *vrrp.Metadata, o *Options) { m.Auth.Pass = "$_RANDOM" }, "auth.pass"},
		tc{"auth pass keepalived $_PWD inside", func(m *vrrp.Metadata, o *Options) { m.Auth.Pass = "ab$_PWD" }, "auth.pass"},
		tc{"auth pass any $ is refused", func(m *vrrp.Metadata, o *Options) { m.Auth.Pass = "a$b$1$" }, "auth.pass"},
		tc{"scripts_dir relative", func(m *vrrp.Metadata, o *Options) { o.ScriptsDir = "etc/k" }, "scripts_dir"},
		tc{"scripts_dir unclean", func(m *vrrp.Metadata, o *Options) { o.ScriptsDir = "/etc/k/../x" }, "scripts_dir"},
		tc{"scripts_dir trailing slash", func(m *vrrp.Metadata, o *Options) { o.ScriptsDir = "/etc/k/" }, "scripts_dir"},
		tc{"scripts_dir $ substitution", func(m *vrrp.Metadata, o *Options) { o.ScriptsDir = "/etc/$_PWD" }, "scripts_dir"},
		tc{"scripts_dir too long", func(m *vrrp.Metadata, o *Options) { o.ScriptsDir = "/" + strings.Repeat("a", maxPath) }, "scripts_dir"},
		tc{"track_dir relative", func(m *vrrp.Metadata, o *Options) { o.TrackDir = "run/track" }, "track_dir"},
		tc{"track_dir unclean", func(m *vrrp.Metadata, o *Options) { o.TrackDir = "/run/a/../track" }, "track_dir"},
		tc{"track_dir trailing slash", func(m *vrrp.Metadata, o *Options) { o.TrackDir = "/run/track/" }, "track_dir"},
		tc{"backstop_interval fraction", func(m *vrrp.Metadata, o *Options) { o.BackstopInterval = 1500 }, "backstop_interval"},
		tc{"backstop_interval below a second", func(m *vrrp.Metadata, o *Options) { o.BackstopInterval = 500 }, "backstop_interval"},
		tc{"backstop_interval above an hour", func(m *vrrp.Metadata, o *Options) { o.BackstopInterval = 3601 * 1000 }, "backstop_interval"},
		tc{"backstop_interval an hour", func(m *vrrp.Metadata, o *Options) { o.BackstopInterval = 3600 * 1000 }, ""},
		tc{"interface too long", func(m *vrrp.Metadata, o *Options) { o.Interface = "eth0123456789012" }, "interface"},
		tc{"self not a member", func(m *vrrp.Metadata, o *Options) { o.Self = "web-z" }, "self"},
		tc{"self empty", func(m *vrrp.Metadata, o *Options) { o.Self = "" }, "self"},
		tc{"local checks duplicate", func(m *vrrp.Metadata, o *Options) {
			c := vrrp.Check{Name: "chk_x", Kind: vrrp.CheckTCP, Address: "127.0.0.1:1"}
			o.ExtraChecks = []vrrp.Check{c, c}
		}, "local_checks[1].name"},
		tc{"local check invalid weight", func(m *vrrp.Metadata, o *Options) {
			o.ExtraChecks = []vrrp.Check{{Name: "chk_x", Kind: vrrp.CheckTCP, Address: "127.0.0.1:1", Weight: 254}}
		}, "local_checks[0].weight"},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, opts := doc(), Options{Self: "web-a"}
			tt.mutate(m, &opts)
			out, err := Render(m, opts)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Render refused a value it should quote: %v", err)
				}
				assertRendered(t, m, opts, out)
				return
			}
			if err == nil {
				t.Fatalf("Render accepted it; config:\n%s", out.Config)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			var fe *vrrp.FieldError
			var oe *OptionError
			switch {
			case errors.As(err, &fe):
				if fe.Path != tt.field {
					t.Errorf("refused field %q, want %q (%v)", fe.Path, tt.field, err)
				}
			case errors.As(err, &oe):
				if oe.Option != tt.field {
					t.Errorf("refused option %q, want %q (%v)", oe.Option, tt.field, err)
				}
			default:
				t.Errorf("error %v (%T) names no field", err, err)
			}
		})
	}
}

// authField is the field refused for an auth password with e in it: vrrp
// allows ( ) ; which keepalived reads literally (no shell is involved, and
// assertRendered reads the token back), and refuses the rest, '$' included
// (keepalived's parameter substitution).
func authField(e string) string {
	if e == "x;id" {
		return ""
	}
	return "auth.pass"
}

func BenchmarkRender(b *testing.B) {
	m := doc()
	m.Unicast = true
	m.Checks = append(m.Checks,
		vrrp.Check{Name: "chk_http", Kind: vrrp.CheckHTTP, URL: "http://127.0.0.1/healthz", Weight: -20},
		vrrp.Check{Name: "chk_tcp", Kind: vrrp.CheckTCP, Address: "127.0.0.1:5432"},
		vrrp.Check{Name: "chk_exec", Kind: vrrp.CheckExec, Command: []string{"/usr/bin/test", "-f", "/run/ok"}},
	)
	opts := Options{Self: "web-b"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(m, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzRender builds a document from fuzzed values; whenever vrrp accepts
// it and Render succeeds, the output must read back with exactly the
// expected structure and argv (assertRendered).
func FuzzRender(f *testing.F) {
	f.Add("nginx", "nginx-master", "nginx-slave", "chk_http_port", "nginx", "http://127.0.0.1/", "-x", "y", "1111", 100, 99, 1000, uint8(0), false, false, 2, 0)
	f.Add("web", "a", "b", "chk", "ng", "http://127.0.0.1/$(id)", "it's", "$(rm -rf /)", "p$ss", 200, 100, 100, uint8(0x1f), true, true, -253, 3)
	f.Add("w}", "a\n", "b\"", "chk#", "x y", "http://h/'", "\n", "`id`", "$_RANDOM", 300, 0, 15, uint8(0xff), true, false, 254, 256)
	f.Add("web.1", "a_1", "b-2", "_c", "n+g", "https://[2001:db8::1]:8443/p?q=1", "#", "}", "a;b", 1, 254, 40950, uint8(0x0a), false, true, 0, 1)
	f.Fuzz(func(t *testing.T, group, m1, m2, chk, process, url, arg1, arg2, pass string, p1, p2, advMs int, flags uint8, ver3, self2 bool, weight, fall int) {
		m := &vrrp.Metadata{
			Version: 1,
			Group:   vrrp.Group{ID: "ig-" + group, Name: group},
			VIP:     netip.MustParsePrefix("192.0.2.10/24"),
			Members: []vrrp.Member{
				{Name: m1, Address: netip.MustParseAddr("192.0.2.11"), Priority: p1},
				{Name: m2, Address: netip.MustParseAddr("192.0.2.12"), Priority: p2},
			},
			AdvertInt: vrrp.Seconds(advMs),
			Unicast:   flags&0x10 != 0,
		}
		if ver3 {
			m.VRRPVersion = 3
		}
		if pass != "" {
			m.Auth = &vrrp.Auth{Type: "PASS", Pass: pass}
		}
		if flags&0x20 != 0 {
			no := false
			m.Preempt = &no
		}
		if flags&0x40 != 0 {
			m.Garp = &vrrp.Garp{MasterDelay: int(flags & 3), MasterRepeat: int(flags & 7), MasterRefresh: fall}
		}
		c := vrrp.Check{Name: chk, Weight: weight, Fall: fall, Rise: fall / 2}
		switch flags & 3 {
		case 0:
			c.Kind, c.Process = vrrp.CheckProcess, process
		case 1:
			c.Kind, c.URL = vrrp.CheckHTTP, url
		case 2:
			c.Kind, c.Address = vrrp.CheckTCP, process
		case 3:
			c.Kind, c.Command = vrrp.CheckExec, []string{"/usr/bin/" + process, arg1, arg2}
		}
		if flags&4 != 0 {
			c.RestartUnit = process + ".service"
		}
		second := vrrp.Check{Name: chk + "_x", Kind: vrrp.CheckExec, Command: []string{"/bin/" + arg2, arg1}, RestartUnit: pick(flags&8 != 0, "u.service")}
		if flags&0x80 != 0 {
			second.OnFailure, second.Weight = vrrp.OnFailureLowerPriority, -1
		}
		m.Checks = []vrrp.Check{c, second}
		if m.Validate() != nil {
			return
		}
		opts := Options{Self: m1}
		if self2 {
			opts.Self = m2
		}
		out, err := Render(m, opts)
		if err != nil {
			var fe *vrrp.FieldError
			var oe *OptionError
			if !errors.As(err, &fe) && !errors.As(err, &oe) {
				t.Fatalf("Render of a valid document: %v", err)
			}
			return
		}
		assertRendered(t, m, opts, out)
	})
}

func pick(cond bool, s string) string {
	if cond {
		return s
	}
	return ""
}
