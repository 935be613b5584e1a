package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// vipctl runs the dispatcher in-process.
func vipctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func readExample(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "nginx.json"))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRenderSeedExample(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out") // created by render
	code, stdout, stderr := vipctl(t, "render", "--metadata", filepath.Join("..", "..", "examples", "nginx.json"), "--self", "nginx-master", "--out", dir)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if stderr != "" || !strings.Contains(stdout, "rendered keepalived.conf") {
		t.Errorf("stdout %q, stderr %q", stdout, stderr)
	}
	m, err := vrrp.Parse(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	want, err := render.Render(m, render.Options{Self: "nginx-master"})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if wantNames := []string{"check_chk_http_port.sh", "keepalived.conf", "notify.sh"}; !slices.Equal(names, wantNames) {
		t.Fatalf("files %q, want %q (no temp files left)", names, wantNames)
	}
	for _, f := range want.Files() {
		fi, err := os.Stat(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != os.FileMode(f.Mode) {
			t.Errorf("%s mode %04o, want %04o", f.Name, got, f.Mode)
		}
		data, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, f.Data) {
			t.Errorf("%s differs from render.Render's output", f.Name)
		}
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "keepalived.conf"))
	for _, s := range []string{"state MASTER", "priority 100", "virtual_router_id 66", `script "/etc/keepalived/vipkeeper/check_chk_http_port.sh"`} {
		if !strings.Contains(string(conf), s) {
			t.Errorf("keepalived.conf lacks %q", s)
		}
	}
}

func TestRenderFlagsReachTheOutput(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := vipctl(t, "render", "--metadata", filepath.Join("..", "..", "examples", "nginx.json"),
		"--self", "nginx-slave", "--out", dir, "--interface", "ens3", "--scripts-dir", "/opt/vk/scripts", "--vipctl", "/opt/vk/bin/vipctl")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "keepalived.conf"))
	for _, s := range []string{"state BACKUP", "priority 99", "interface ens3", `script "/opt/vk/scripts/check_chk_http_port.sh"`, `notify "/opt/vk/scripts/notify.sh"`} {
		if !strings.Contains(string(conf), s) {
			t.Errorf("keepalived.conf lacks %q", s)
		}
	}
	script, _ := os.ReadFile(filepath.Join(dir, "check_chk_http_port.sh"))
	if !strings.Contains(string(script), "exec '/opt/vk/bin/vipctl' 'check' 'process'") {
		t.Errorf("check script does not run --vipctl:\n%s", script)
	}
}

func TestRenderInvalidInput(t *testing.T) {
	example := string(readExample(t))
	edit := func(old, new string) string {
		if !strings.Contains(example, old) {
			t.Fatalf("example lacks %q", old)
		}
		return strings.Replace(example, old, new, 1)
	}
	tests := []struct {
		name  string
		doc   string   // metadata file content; "" means none written
		args  []string // extra flags
		field string   // what stderr must name
	}{
		{"brace and newline in check name", edit(`"name": "chk_http_port"`, `"name": "chk}\n"`), nil, "checks[0].name"},
		{"brace in check name", edit(`"name": "chk_http_port"`, `"name": "chk_http_port }"`), nil, "checks[0].name"},
		{"priority 300", edit(`"priority": 99`, `"priority": 300`), nil, "members[1].priority: 300 is out of range, allowed 1–254"},
		{"unknown field", edit(`"revision": 1,`, `"revision": 1, "vips": [],`), nil, "vips"},
		{"not JSON", "{", nil, "malformed metadata"},
		{"version 2", edit(`"version": 1`, `"version": 2`), nil, "version"},
		{"keepalived substitution in auth", edit(`"pass": "1111"`, `"pass": "$_RANDOM"`), nil, "auth.pass"},
		{"self not a member", example, []string{"--self", "nginx-other"}, "self"},
		{"interface with space", example, []string{"--interface", "eth0 }"}, "interface"},
		{"scripts dir relative", example, []string{"--scripts-dir", "scripts"}, "scripts_dir"},
		{"vipctl path with quote", example, []string{"--vipctl", `/usr/bin/vip"ctl`}, "vipctl"},
		{"missing metadata file", "", nil, "no such file"},
		{"missing --self", example, []string{"--self", ""}, "--self is required"},
		{"unknown flag", example, []string{"--bogus"}, "-bogus"},
		{"stray argument", example, []string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			meta := filepath.Join(tmp, "meta.json")
			if tt.doc != "" {
				if err := os.WriteFile(meta, []byte(tt.doc), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			existing := filepath.Join(tmp, "existing")
			if err := os.Mkdir(existing, 0o755); err != nil {
				t.Fatal(err)
			}
			absent := filepath.Join(tmp, "absent")
			for _, dir := range []string{existing, absent} {
				args := append([]string{"render", "--metadata", meta, "--self", "nginx-master", "--out", dir}, tt.args...)
				code, stdout, stderr := vipctl(t, args...)
				if code != exitUsage {
					t.Errorf("exit %d, want %d; stderr %q", code, exitUsage, stderr)
				}
				if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
					t.Errorf("stderr is not one line: %q", stderr)
				}
				if !strings.HasPrefix(stderr, "vipctl render: ") || !strings.Contains(stderr, tt.field) {
					t.Errorf("stderr %q does not name %q", stderr, tt.field)
				}
				if stdout != "" {
					t.Errorf("stdout %q on failure", stdout)
				}
			}
			if entries, err := os.ReadDir(existing); err != nil || len(entries) != 0 {
				t.Errorf("--out dir holds %d entries after a refusal (%v)", len(entries), err)
			}
			if _, err := os.Stat(absent); !os.IsNotExist(err) {
				t.Errorf("--out dir was created after a refusal: %v", err)
			}
		})
	}
}

func TestRenderWriteFailure(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := vipctl(t, "render", "--metadata", filepath.Join("..", "..", "examples", "nginx.json"), "--self", "nginx-master", "--out", filepath.Join(file, "sub"))
	if code != exitFailure || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d stderr %q, want exit %d with one line", code, stderr, exitFailure)
	}
}

func TestCheckCommand(t *testing.T) {
	ln := testutil.AcceptingListener(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/down" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	sh, shErr := exec.LookPath("sh")

	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"tcp open", []string{"tcp", "--address", ln.Addr().String(), "--timeout", "5"}, exitOK, ""},
		{"tcp closed", []string{"tcp", "--address", closedAddr, "--timeout", "5"}, exitFailure, "unhealthy"},
		{"http ok", []string{"http", "--url", srv.URL + "/", "--timeout", "5"}, exitOK, ""},
		{"http down", []string{"http", "--url", srv.URL + "/down", "--expect-status", "200", "--timeout", "5"}, exitFailure, "503"},
		{"http expects 503", []string{"http", "--url", srv.URL + "/down", "--expect-status", "503"}, exitOK, ""},
		{"process absent", []string{"process", "--name", "vk-no-such", "--timeout", "0.5"}, exitFailure, "not running"},
		{"no kind", nil, exitUsage, "kind is required"},
		{"flag before kind", []string{"--name", "x"}, exitUsage, "kind is required"},
		{"unknown kind", []string{"udp"}, exitUsage, `"udp"`},
		{"flag of another kind", []string{"process", "--url", "http://x/"}, exitUsage, "-url"},
		{"invalid name", []string{"process", "--name", "a b"}, exitUsage, "check.process"},
		{"bad timeout", []string{"tcp", "--address", "127.0.0.1:1", "--timeout", "1e3"}, exitUsage, "--timeout"},
		{"zero timeout", []string{"tcp", "--address", "127.0.0.1:1", "--timeout", "0"}, exitUsage, "--timeout"},
		{"stray argument", []string{"tcp", "--address", "127.0.0.1:1", "extra"}, exitUsage, "unexpected argument"},
		{"exec without command", []string{"exec"}, exitUsage, "command"},
	}
	if shErr == nil {
		tests = append(tests,
			struct {
				name string
				args []string
				code int
				msg  string
			}{"exec ok", []string{"exec", "--timeout", "5", "--", sh, "-c", "exit 0"}, exitOK, ""},
			struct {
				name string
				args []string
				code int
				msg  string
			}{"exec fails", []string{"exec", "--", sh, "-c", "echo broken >&2; exit 1"}, exitFailure, "broken"},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := vipctl(t, append([]string{"check"}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if tt.code == exitOK {
				if stderr != "" {
					t.Errorf("stderr %q on success", stderr)
				}
				return
			}
			if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tt.msg) {
				t.Errorf("stderr %q is not one line naming %q", stderr, tt.msg)
			}
		})
	}
}

// TestRenderedScriptsRunVipctlCheck renders checks and runs each script's
// command line through the dispatcher: the flags render writes are the
// flags vipctl check reads.
func TestRenderedScriptsRunVipctlCheck(t *testing.T) {
	ln := testutil.AcceptingListener(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(srv.Close)
	sh, err := exec.LookPath("sh")
	if err != nil {
		testutil.SkipUnprivileged(t, "no sh")
	}

	m, err := vrrp.Parse(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	m.Checks = []vrrp.Check{
		{Name: "chk_tcp", Kind: vrrp.CheckTCP, Address: ln.Addr().String()},
		{Name: "chk_http", Kind: vrrp.CheckHTTP, URL: srv.URL + "/health?x=1&y=$(2)", ExpectStatus: 204, Timeout: 5000},
		{Name: "chk_exec", Kind: vrrp.CheckExec, RestartUnit: "never-restarted.service", Command: []string{sh, "-c", `test "$1" = "it's"`, "sh", "it's"}},
	}
	out, err := render.Render(m, render.Options{Self: "nginx-master"})
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, f := range out.Scripts {
		if f.Name == render.NotifyScriptName {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(f.Data)), "\n")
		argv, err := splitQuoted(strings.TrimPrefix(lines[len(lines)-1], "exec "))
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		if argv[0] != render.DefaultVipctl || argv[1] != "check" {
			t.Fatalf("%s runs %q, want vipctl check", f.Name, argv)
		}
		code, _, stderr := vipctl(t, argv[1:]...)
		if code != exitOK {
			t.Errorf("%s: vipctl %q exited %d: %s", f.Name, argv[1:], code, stderr)
		}
		ran++
	}
	if ran != 3 {
		t.Errorf("ran %d check scripts, want 3", ran)
	}
}

// splitQuoted splits words made of '...' segments and \' escapes.
func splitQuoted(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	for i := 0; i < len(s); {
		switch {
		case s[i] == ' ':
			words = append(words, cur.String())
			cur.Reset()
			i++
		case s[i] == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, os.ErrInvalid
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 2
		case strings.HasPrefix(s[i:], `\'`):
			cur.WriteByte('\'')
			i += 2
		default:
			return nil, os.ErrInvalid
		}
	}
	return append(words, cur.String()), nil
}
