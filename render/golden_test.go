package render

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

var update = flag.Bool("update", false, "rewrite render/testdata/*.golden from the current output")

// caseOpts is testdata/<case>.opts.json: the member-local rendering inputs.
type caseOpts struct {
	Self         string `json:"self"`
	Interface    string `json:"interface"`
	ScriptsDir   string `json:"scripts_dir"`
	Vipctl       string `json:"vipctl"`
	NotifySocket string `json:"notify_socket"`
	SpoolDir     string `json:"spool_dir"`
	TrackDir     string `json:"track_dir"`
	// BackstopInterval is in seconds, as in metadata.
	BackstopInterval vrrp.Seconds `json:"backstop_interval"`
	LocalChecks      []vrrp.Check `json:"local_checks"`
	// VersionedScripts is the agent's layout: scripts in a subdirectory
	// named after their content.
	VersionedScripts bool `json:"versioned_scripts"`
}

// goldenCases lists testdata/<case>.json, without the .opts.json files.
func goldenCases(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if !strings.HasSuffix(f, ".opts.json") {
			names = append(names, strings.TrimSuffix(filepath.Base(f), ".json"))
		}
	}
	if len(names) < 7 {
		t.Fatalf("only %d golden cases in testdata", len(names))
	}
	return names
}

// loadCase reads a case's metadata and options; without an opts file the
// first member renders.
func loadCase(t *testing.T, name string) (*vrrp.Metadata, Options) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := vrrp.Parse(data)
	if err != nil {
		t.Fatalf("testdata/%s.json: %v", name, err)
	}
	var co caseOpts
	if data, err := os.ReadFile(filepath.Join("testdata", name+".opts.json")); err == nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&co); err != nil {
			t.Fatalf("testdata/%s.opts.json: %v", name, err)
		}
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if co.Self == "" {
		co.Self = m.Members[0].Name
	}
	return m, Options{
		Self: co.Self, Interface: co.Interface, ScriptsDir: co.ScriptsDir, Vipctl: co.Vipctl,
		NotifySocket: co.NotifySocket, SpoolDir: co.SpoolDir, TrackDir: co.TrackDir,
		BackstopInterval: co.BackstopInterval, ExtraChecks: co.LocalChecks,
		VersionedScripts: co.VersionedScripts,
	}
}

// goldenText concatenates keepalived.conf and then every script, each
// under a header line.
func goldenText(out *Output) []byte {
	var b bytes.Buffer
	files := append([]File{{Name: ConfigName, Mode: ConfigMode, Data: out.Config}}, out.Scripts...)
	for _, f := range files {
		fmt.Fprintf(&b, "=== %s (%04o) ===\n", f.Name, f.Mode)
		b.Write(f.Data)
	}
	fmt.Fprintf(&b, "=== hash ===\n%s\n", out.Hash)
	return b.Bytes()
}

func TestGolden(t *testing.T) {
	for _, name := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			m, opts := loadCase(t, name)
			out, err := Render(m, opts)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			assertRendered(t, m, opts, out)
			got := goldenText(out)
			file := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./render -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s (-want +got):\n%s", file, diff)
			}
		})
	}
}

// The nginx cases are the seed's example as shipped in examples/.
func TestGoldenNginxIsTheExample(t *testing.T) {
	example, err := os.ReadFile(filepath.Join("..", "examples", "nginx.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"nginx-master", "nginx-slave"} {
		data, err := os.ReadFile(filepath.Join("testdata", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, example) {
			t.Errorf("testdata/%s.json differs from examples/nginx.json", name)
		}
	}
}

// TestSeedSemantics pins the values of the seed's hand-written nginx
// configuration for both members, read back from the rendered config.
func TestSeedSemantics(t *testing.T) {
	tests := []struct {
		self, state, priority string
	}{
		{"nginx-master", "MASTER", "100"},
		{"nginx-slave", "BACKUP", "99"},
	}
	for _, tt := range tests {
		t.Run(tt.self, func(t *testing.T) {
			m, opts := loadCase(t, tt.self)
			out, err := Render(m, opts)
			if err != nil {
				t.Fatal(err)
			}
			nodes, err := parseConf(out.Config)
			if err != nil {
				t.Fatal(err)
			}
			vs, vi := nodes[1], nodes[2]
			for _, w := range []struct {
				block *confNode
				key   string
				want  string
			}{
				{vs, "interval", "2"},
				{vs, "weight", "2"},
				{vs, "script", `"/etc/keepalived/vipkeeper/check_chk_http_port.sh"`},
				{vi, "state", tt.state},
				{vi, "interface", "eth0"},
				{vi, "virtual_router_id", "66"},
				{vi, "priority", tt.priority},
				{vi, "advert_int", "1"},
				{child(vi, "authentication"), "auth_type", "PASS"},
				{child(vi, "authentication"), "auth_pass", "1111"},
			} {
				if got := leaf(t, w.block, w.key); !slices.Equal(got, []string{w.want}) {
					t.Errorf("%s %s = %q, want %q", w.block.Key, w.key, got, w.want)
				}
			}
			if got := vs.Args; !slices.Equal(got, []string{"chk_http_port"}) {
				t.Errorf("vrrp_script %q, want chk_http_port", got)
			}
			if got := keys(child(vi, "virtual_ipaddress").Children); !slices.Equal(got, []string{"192.168.7.246/22"}) {
				t.Errorf("virtual_ipaddress %q", got)
			}
			if got := keys(child(vi, "track_script").Children); !slices.Equal(got, []string{"chk_http_port"}) {
				t.Errorf("track_script %q", got)
			}
			for _, f := range out.Scripts {
				if f.Name != "check_chk_http_port.sh" {
					continue
				}
				argv, _, err := parseScript(f.Data)
				if err != nil {
					t.Fatal(err)
				}
				// Like the seed's check_httpd.sh: nginx running, else restart
				// nginx.service and judge again.
				want := []string{"/usr/bin/vipctl", "check", "process", "--name", "nginx", "--restart-unit", "nginx.service", "--timeout", "2"}
				if diff := cmp.Diff(want, argv); diff != "" {
					t.Errorf("check script argv (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// randName is prefix plus random hex, within the 15-byte limit of netns
// and link names.
func randName(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := prefix + hex.EncodeToString(b)
	if len(name) > 15 {
		t.Fatalf("name %q longer than 15 bytes", name)
	}
	return name
}

func runCmd(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newNetns creates a network namespace holding one veth pair per name in
// ifaces (the other end named randomly) and removes it at cleanup.
func newNetns(t *testing.T, ifaces []string) string {
	t.Helper()
	ns := randName(t, "vkrn")
	runCmd(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	for _, ifc := range ifaces {
		peer := randName(t, "vkrp")
		runCmd(t, "ip", "-n", ns, "link", "add", ifc, "type", "veth", "peer", "name", peer)
		runCmd(t, "ip", "-n", ns, "link", "set", ifc, "up")
		runCmd(t, "ip", "-n", ns, "link", "set", peer, "up")
	}
	return ns
}

var reKeepalivedComplaint = regexp.MustCompile(`(?i)warning|unknown|error|invalid|insecure|disabling|not found|outside range|truncat|clearing|rounding`)

// TestKeepalivedConfigTest runs the real keepalived --config-test on every
// golden case, rendered into a root-owned scripts directory so that
// enable_script_security accepts the scripts, inside a network namespace
// that has the case's interface.
func TestKeepalivedConfigTest(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.SkipUnprivileged(t, "needs root: creates a network namespace and root-owned script directories")
	}
	keepalived, err := exec.LookPath("keepalived")
	if err != nil {
		testutil.SkipUnprivileged(t, "keepalived is not installed (apt-get install keepalived, or make deps)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testutil.SkipUnprivileged(t, "ip (iproute2) is not installed")
	}
	cases := goldenCases(t)
	ifaces := map[string]bool{}
	for _, name := range cases {
		_, opts := loadCase(t, name)
		ifaces[opts.withDefaults().Interface] = true
	}
	var ifList []string
	for ifc := range ifaces {
		ifList = append(ifList, ifc)
	}
	slices.Sort(ifList)
	ns := newNetns(t, ifList)

	// keepalived refuses scripts under a directory writable by non-root,
	// so not t.TempDir(); /run is root-owned 0755.
	base, err := os.MkdirTemp("/run", "vkrender-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}

	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			m, opts := loadCase(t, name)
			dir := filepath.Join(base, name)
			opts.ScriptsDir = dir
			// The track directory exists as the agent makes it: keepalived
			// drops a track file whose directory is missing (at run time;
			// --config-test does not look, see TestKeepalivedFollowsTrackFile).
			opts.TrackDir = filepath.Join(base, name+".track")
			if err := os.Mkdir(opts.TrackDir, 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := Render(m, opts)
			if err != nil {
				t.Fatal(err)
			}
			output, err := configTest(t, ns, keepalived, dir, 0o755, out, out.Config)
			if err != nil {
				t.Fatalf("keepalived --config-test: %v\n%s\n--- config ---\n%s", err, output, out.Config)
			}
			for _, l := range strings.Split(string(output), "\n") {
				if reKeepalivedComplaint.MatchString(l) {
					t.Errorf("keepalived --config-test says: %s", l)
				}
			}
		})
	}

	// Controls: the same harness must fail on configurations keepalived
	// refuses, or the passes above prove nothing.
	controls := []struct {
		name    string
		dirMode os.FileMode
		edit    func(string) string
	}{
		{"control-master-with-nopreempt", 0o755, func(c string) string { return strings.Replace(c, "state BACKUP", "state MASTER", 1) }},
		{"control-missing-interface", 0o755, func(c string) string { return strings.Replace(c, "interface eth0", "interface vkmissing0", 1) }},
		{"control-unknown-keyword", 0o755, func(c string) string {
			return strings.Replace(c, "    nopreempt\n", "    nopreempt\n    no_such_keyword 1\n", 1)
		}},
		{"control-writable-scripts-dir", 0o777, func(c string) string { return c }},
		{"control-unknown-track-file-keyword", 0o755, func(c string) string {
			return strings.Replace(c, "    init_file 1\n", "    init_file 1\n    no_such_keyword 1\n", 1)
		}},
	}
	for _, ctl := range controls {
		t.Run(ctl.name, func(t *testing.T) {
			m, opts := loadCase(t, "nopreempt")
			dir := filepath.Join(base, ctl.name)
			opts.ScriptsDir = dir
			out, err := Render(m, opts)
			if err != nil {
				t.Fatal(err)
			}
			config := ctl.edit(string(out.Config))
			if config == string(out.Config) && ctl.dirMode == 0o755 {
				t.Fatal("control edit changed nothing")
			}
			output, err := configTest(t, ns, keepalived, dir, ctl.dirMode, out, []byte(config))
			if err == nil {
				t.Errorf("keepalived --config-test accepted a broken configuration:\n%s", config)
			}
			t.Logf("keepalived: %s", bytes.TrimSpace(output))
		})
	}
}

// configTest writes config and out's scripts into dir (created with
// dirMode) and runs keepalived --config-test on it inside ns.
func configTest(t *testing.T, ns, keepalived, dir string, dirMode os.FileMode, out *Output, config []byte) ([]byte, error) {
	t.Helper()
	if err := os.Mkdir(dir, dirMode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, dirMode); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigName), config, ConfigMode); err != nil {
		t.Fatal(err)
	}
	// With versioned scripts they live in a root-only subdirectory, as
	// the agent installs them.
	if out.ScriptsDir != dir {
		if err := os.Mkdir(out.ScriptsDir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range out.Scripts {
		if err := os.WriteFile(filepath.Join(out.ScriptsDir, f.Name), f.Data, os.FileMode(f.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "ip", "netns", "exec", ns, keepalived, "--config-test", "-f", filepath.Join(dir, ConfigName)).CombinedOutput()
}
