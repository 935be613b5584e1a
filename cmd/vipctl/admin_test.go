package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// startHostsync serves a fresh hostsync admin API on a unix socket under
// t.TempDir() and returns the socket path.
func startHostsync(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	store, err := registry.OpenBolt(filepath.Join(dir, "hostsync.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	svc, err := hostsync.New(context.Background(), store, hostsync.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	sock := filepath.Join(dir, "run", "hostsync.sock")
	ln, err := httpapi.ListenAdmin(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: httpapi.RequireRoot(httpapi.NewAdminAPI(svc.Inventory, svc.Engine, nil)), ConnContext: httpapi.PeerContext}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return sock
}

func adminCtl(t *testing.T, sock string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{args[0], "--socket", sock}, args[1:]...)
	code := run(context.Background(), full, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// TestAdminSeedFlow drives the seed's nginx example through vipctl: two
// guests, group nginx, VIP, EIP, and the refusals on the way.
func TestAdminSeedFlow(t *testing.T) {
	sock := startHostsync(t)
	steps := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"network-create", "--cidr", "192.0.2.0/24", "--vpc-id", "vpc1", "--reserved", "192.0.2.200,192.0.2.201", "net1"}, 0, "network net1 192.0.2.0/24 (guest, vpc vpc1) gateway 192.0.2.1 range 192.0.2.2-192.0.2.254 reserved 192.0.2.200,192.0.2.201", ""},
		{[]string{"network-create", "--cidr", "203.0.113.0/24", "--kind", "eip", "pub"}, 0, "network pub", ""},
		{[]string{"guest-register", "--network-id", "net1", "--address", "192.0.2.247", "--mac", "00:24:b1:6d:9b:7d", "--host", "host-a", "nginx-master"}, 0, "guest nginx-master (nginx-master) 192.0.2.247", ""},
		{[]string{"guest-register", "--network-id", "net1", "--address", "192.0.2.248", "--mac", "52:54:00:00:02:48", "nginx-slave"}, 0, "guest nginx-slave", ""},
		{[]string{"instancegroup-create", "--check-process", "nginx:nginx", "--advert-int", "1", "nginx"}, 0, "group     nginx (ig-nginx)", ""},
		{[]string{"instancegroup-create-eip", "nginx"}, 1, "", "a group binds an EIP only after it has a VIP"},
		{[]string{"instancegroup-join", "nginx", "nginx-master", "nginx-slave"}, 0, "nginx-slave", ""},
		{[]string{"instancegroup-attachnetwork", "--ip-addr", "192.0.2.246", "--require-designated-ip", "nginx"}, 0, "vip       192.0.2.246/24 in net1", ""},
		{[]string{"instancegroup-attachnetwork", "nginx", "--network-id", "net1"}, 1, "", "hostsync: one VIP per group: group nginx already has VIP 192.0.2.246"},
		{[]string{"instancegroup-create-eip", "--bandwidth", "100", "--ip-addr", "203.0.113.5", "nginx"}, 0, "eip       203.0.113.5 (eip-203-0-113-5)", ""},
		{[]string{"instancegroup-detachnetwork", "nginx"}, 1, "", "dissociate the EIP before detaching the VIP"},
		{[]string{"instancegroup-delete", "nginx"}, 1, "", "a group with members cannot be deleted"},
		{[]string{"instancegroup-show", "nginx"}, 0, "nginx-master  nginx-master  192.0.2.247  00:24:b1:6d:9b:7d  250", ""},
		{[]string{"instancegroup-dissociate-eip", "nginx"}, 0, "eip       -", ""},
		{[]string{"instancegroup-associate-eip", "--eip-id", "eip-203-0-113-5", "nginx"}, 0, "eip       203.0.113.5", ""},
		{[]string{"instancegroup-list"}, 0, "nginx  ig-nginx  2        192.0.2.246/24  203.0.113.5", ""},
		{[]string{"hostsync-status"}, 0, "1 group, 1 VIP, no move yet", ""},
		// Usage errors: exit 2.
		{[]string{"instancegroup-show"}, 2, "", "wrong number of arguments"},
		{[]string{"instancegroup-attachnetwork", "--ip-addr", "not-an-ip", "nginx"}, 2, "", `"not-an-ip" is not an IP address`},
		{[]string{"instancegroup-attachnetwork", "--alloc-dir", "up", "nginx"}, 2, "", "alloc_dir"},
		{[]string{"instancegroup-create", "--check-process", "ng inx", "web"}, 2, "", "checks[0].process"},
		{[]string{"instancegroup-show", "nope"}, 1, "", "no group with id or name"},
	}
	for _, s := range steps {
		code, out, errOut := adminCtl(t, sock, s.args...)
		if code != s.code || !strings.Contains(out, s.stdout) || !strings.Contains(errOut, s.stderr) {
			t.Fatalf("vipctl %s: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit %d, stdout with %q, stderr with %q",
				strings.Join(s.args, " "), code, out, errOut, s.code, s.stdout, s.stderr)
		}
	}

	code, out, _ := adminCtl(t, sock, "instancegroup-show", "nginx", "--json")
	var v api.GroupView
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("--json: exit %d, %s", code, out)
	}
	if v.VIP == nil || v.VIP.Address.String() != "192.0.2.246/24" || v.EIP == nil || len(v.Members) != 2 ||
		len(v.Settings.Checks) != 1 || v.Settings.Checks[0].RestartUnit != "nginx.service" || v.Settings.Checks[0].Name != "chk_nginx" ||
		v.Settings.Checks[0].Interval != 0 || v.Settings.Checks[0].Weight != 0 || v.Settings.Checks[0].EffectiveOnFailure() != vrrp.OnFailureResign {
		t.Fatalf("group = %+v", v)
	}
	if v.Members[0].Priority != 250 || v.Members[1].Priority != 230 {
		t.Fatalf("priorities by join order %d, %d; want 250, 230", v.Members[0].Priority, v.Members[1].Priority)
	}

	// The seed's weight 2 cannot move the VIP between the spaced default
	// priorities: the group's view says so until they are closer.
	code, out, _ = adminCtl(t, sock, "instancegroup-update", "--check-weight", "2", "nginx")
	if want := "warning: lower_priority checks [chk_nginx] change a priority by at most 2, but the highest member is 20 above the next (250 over 230)"; code != 0 || !strings.Contains(out, want) {
		t.Fatalf("instancegroup-update --check-weight 2: exit %d\n%s\nwant %q", code, out, want)
	}
	if code, out, _ = adminCtl(t, sock, "instancegroup-set-priority", "nginx", "nginx-slave", "249"); code != 0 || strings.Contains(out, "warning") || !strings.Contains(out, "249") {
		t.Fatalf("instancegroup-set-priority 249: exit %d\n%s\nwant priority 249 and no warning", code, out)
	}
}

func TestAdminUnreachable(t *testing.T) {
	code, _, errOut := adminCtl(t, filepath.Join(t.TempDir(), "none.sock"), "hostsync-status")
	if code != exitFailure || !strings.Contains(errOut, "cannot reach hostsync") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestAdminHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"instancegroup-attachnetwork", "-h"}, nil, &out, &errb); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, flag := range []string{"-ip-addr", "-alloc-dir", "-reserved", "-require-designated-ip", "-network-id", "-socket", "-json"} {
		if !strings.Contains(errb.String(), flag) {
			t.Errorf("help does not list %s:\n%s", flag, errb.String())
		}
	}
	if code := run(context.Background(), []string{"instancegroup-frobnicate"}, nil, &out, &errb); code != exitUsage {
		t.Fatalf("unknown admin command: exit %d", code)
	}
}

// The VRRP password reaches hostsync from a file, never from the command
// line (where every user of the machine sees it in ps).
func TestAdminAuthPassFile(t *testing.T) {
	sock := startHostsync(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "pass")
	if err := os.WriteFile(good, []byte("s3cr%t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := filepath.Join(dir, "long")
	if err := os.WriteFile(long, []byte("123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := adminCtl(t, sock, "instancegroup-create", "--auth-pass-file", good, "--json", "web")
	var v api.GroupView
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || !v.Settings.Auth {
		t.Fatalf("create with --auth-pass-file: exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out, "s3cr%t") {
		t.Errorf("the password is shown: %s", out)
	}
	for _, tc := range []struct {
		args []string
		code int
		has  string
	}{
		{[]string{"instancegroup-create", "--auth-pass-file", filepath.Join(dir, "missing"), "web2"}, 2, "--auth-pass-file"},
		{[]string{"instancegroup-create", "--auth-pass-file", long, "web3"}, 2, "auth_pass: must be 1–8 characters"},
		{[]string{"instancegroup-create", "--auth-pass", "1111", "web4"}, 2, "auth-pass"},
	} {
		code, _, errOut := adminCtl(t, sock, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.has) {
			t.Errorf("vipctl %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.has)
		}
	}
}

// seedGroup sets up group nginx with members nginx-master and nginx-slave,
// a VIP and the given create flags, and registers a third guest.
func seedGroup(t *testing.T, sock string, create ...string) {
	t.Helper()
	for _, args := range [][]string{
		{"network-create", "--cidr", "192.0.2.0/24", "--vpc-id", "vpc1", "net1"},
		{"guest-register", "--network-id", "net1", "--address", "192.0.2.247", "--mac", "00:24:b1:6d:9b:7d", "nginx-master"},
		{"guest-register", "--network-id", "net1", "--address", "192.0.2.248", "--mac", "52:54:00:00:02:48", "nginx-slave"},
		{"guest-register", "--network-id", "net1", "--address", "192.0.2.249", "--mac", "52:54:00:00:02:49", "third"},
		append(append([]string{"instancegroup-create"}, create...), "nginx"),
		{"instancegroup-join", "nginx", "nginx-master", "nginx-slave"},
		{"instancegroup-attachnetwork", "--ip-addr", "192.0.2.246", "nginx"},
	} {
		if code, out, errOut := adminCtl(t, sock, args...); code != 0 {
			t.Fatalf("vipctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
	}
}

func showGroup(t *testing.T, sock string) api.GroupView {
	t.Helper()
	code, out, errOut := adminCtl(t, sock, "instancegroup-show", "--json", "nginx")
	var v api.GroupView
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("instancegroup-show: exit %d\n%s%s", code, out, errOut)
	}
	return v
}

// TestAdminUpdate drives instancegroup-update and -set-priority on a live
// group: each accepted command is one new revision and prints the group;
// a refused one exits 1 or 2 with the field named and changes nothing.
func TestAdminUpdate(t *testing.T) {
	sock := startHostsync(t)
	seedGroup(t, sock, "--check-process", "nginx:nginx")
	rev := showGroup(t, sock).Revision
	steps := []struct {
		args   []string
		code   int
		stdout string
		stderr string
		// check is run on the group after an accepted step.
		check func(v api.GroupView) bool
	}{
		{[]string{"--advert-int", "2"}, 0, "v2, advert 2 s, auth PASS", "", func(v api.GroupView) bool {
			return v.Settings.AdvertInt == 2000 && len(v.Settings.Checks) == 1 && v.Settings.Preempt
		}},
		// Settings alone change the group's checks as they are.
		{[]string{"--check-interval", "0.5", "--check-fall", "2"}, 0, "check     chk_nginx: process nginx, restart nginx.service, every 0.5 s, fall 2, on failure resign", "", func(v api.GroupView) bool {
			c := v.Settings.Checks[0]
			return len(v.Settings.Checks) == 1 && c.Interval == 500 && c.Fall == 2 && c.Process == "nginx" && c.RestartUnit == "nginx.service"
		}},
		// A weight alone means lower_priority, whose interval is whole seconds.
		{[]string{"--check-weight", "2"}, 2, "", "checks[0].interval", nil},
		{[]string{"--check-weight", "2", "--check-interval", "2"}, 0, "every 2 s, fall 2, on failure lower_priority (weight 2)", "", func(v api.GroupView) bool {
			c := v.Settings.Checks[0]
			return c.Weight == 2 && c.EffectiveOnFailure() == vrrp.OnFailureLowerPriority
		}},
		{[]string{"--on-failure", "lower_priority", "--check-weight", "0"}, 2, "", "checks[0].weight: is required with on_failure lower_priority", nil},
		{[]string{"--on-failure", "bogus"}, 2, "", "checks[0].on_failure", nil},
		{[]string{"--on-failure", "resign"}, 0, "on failure resign", "", func(v api.GroupView) bool {
			c := v.Settings.Checks[0]
			return c.Weight == 0 && c.EffectiveOnFailure() == vrrp.OnFailureResign && c.Interval == 2000
		}},
		// --check-KIND flags replace the checks.
		{[]string{"--check-http", "http://127.0.0.1/", "--check-tcp", "127.0.0.1:80", "--on-failure", "lower_priority", "--check-weight", "3"}, 0, "chk_tcp: tcp 127.0.0.1:80, every 2 s, on failure lower_priority (weight 3)", "", func(v api.GroupView) bool {
			cs := v.Settings.Checks
			return len(cs) == 2 && cs[0].Name == "chk_http" && cs[0].Weight == 3 && cs[1].Name == "chk_tcp" && cs[1].OnFailure == vrrp.OnFailureLowerPriority
		}},
		{[]string{"--check-exec", "/usr/local/bin/check-db --fast", "--check-timeout", "0.3"}, 0, "chk_check-db: exec /usr/local/bin/check-db --fast, every 1 s, timeout 0.3 s, on failure resign", "", func(v api.GroupView) bool {
			cs := v.Settings.Checks
			return len(cs) == 1 && cs[0].Kind == vrrp.CheckExec && len(cs[0].Command) == 2 && cs[0].Timeout == 300
		}},
		{[]string{"--check-tcp", "127.0.0.1"}, 2, "", "checks[0].address", nil},
		{[]string{"--clear-checks", "--check-interval", "1"}, 2, "", "--clear-checks", nil},
		{[]string{"--clear-checks"}, 0, "members:", "", func(v api.GroupView) bool { return len(v.Settings.Checks) == 0 }},
		{[]string{"--check-interval", "1"}, 2, "", "group nginx has no check to change", nil},
		{[]string{"--preempt", "--nopreempt"}, 2, "", "exclude each other", nil},
		{[]string{"--preempt-delay", "5"}, 0, "preempt delay 5 s", "", func(v api.GroupView) bool { return v.Settings.PreemptDelay == 5000 }},
		{[]string{"--nopreempt"}, 2, "", "preempt_delay", nil},
		{[]string{"--nopreempt", "--preempt-delay", "0"}, 0, "nopreempt", "", func(v api.GroupView) bool {
			return !v.Settings.Preempt && v.Settings.PreemptDelay == 0
		}},
		{[]string{"--preempt"}, 0, "v2, advert 2 s, auth PASS\n", "", func(v api.GroupView) bool { return v.Settings.Preempt }},
		{[]string{"--vrrp-version", "3"}, 0, "v3, advert 2 s\n", "", func(v api.GroupView) bool { return !v.Settings.Auth && v.Settings.VRRPVersion == 3 }},
		{[]string{"--advert-int", "0.1"}, 0, "v3, advert 0.1 s", "", nil},
		{[]string{"--vrrp-version", "2"}, 2, "", "advert_int", nil},
		{[]string{"--vrrp-version", "2", "--advert-int", "1"}, 2, "", "change vrrp_version and advert_int in two updates", nil},
		{[]string{"--advert-int", "1"}, 0, "v3, advert 1 s", "", nil},
		{[]string{"--vrrp-version", "2"}, 0, "v2, advert 1 s, auth PASS", "", func(v api.GroupView) bool { return v.Settings.Auth }},
		{[]string{}, 2, "", "nothing to change", nil},
	}
	for _, s := range steps {
		args := append(append([]string{"instancegroup-update"}, s.args...), "nginx")
		code, out, errOut := adminCtl(t, sock, args...)
		if code != s.code || !strings.Contains(out, s.stdout) || !strings.Contains(errOut, s.stderr) {
			t.Fatalf("vipctl %s: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit %d, stdout with %q, stderr with %q",
				strings.Join(args, " "), code, out, errOut, s.code, s.stdout, s.stderr)
		}
		if code == 0 {
			rev++
		}
		v := showGroup(t, sock)
		if v.Revision != rev {
			t.Fatalf("vipctl %s: revision %d, want %d", strings.Join(args, " "), v.Revision, rev)
		}
		if s.check != nil && !s.check(v) {
			t.Fatalf("vipctl %s: group %+v", strings.Join(args, " "), v.Settings)
		}
	}

	prio := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"nginx", "nginx-slave", "250"}, 0, "nginx-slave   nginx-slave   192.0.2.248  52:54:00:00:02:48  250", ""},
		{[]string{"nginx", "nginx-slave", "255"}, 2, "", "priority: 255 is out of range, allowed 1–254"},
		{[]string{"nginx", "nginx-slave", "high"}, 2, "", `priority "high" is not a number`},
		{[]string{"nginx", "third", "100"}, 1, "", "guest third is not in group nginx"},
		{[]string{"nginx", "nginx-slave"}, 2, "", "wrong number of arguments"},
	}
	for _, s := range prio {
		args := append([]string{"instancegroup-set-priority"}, s.args...)
		code, out, errOut := adminCtl(t, sock, args...)
		if code != s.code || !strings.Contains(out, s.stdout) || !strings.Contains(errOut, s.stderr) {
			t.Fatalf("vipctl %s: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit %d, stdout with %q, stderr with %q",
				strings.Join(args, " "), code, out, errOut, s.code, s.stdout, s.stderr)
		}
		if code == 0 {
			rev++
		}
		if v := showGroup(t, sock); v.Revision != rev {
			t.Fatalf("vipctl %s: revision %d, want %d", strings.Join(args, " "), v.Revision, rev)
		}
	}
	v := showGroup(t, sock)
	if v.Members[0].Priority != 250 || v.Members[1].Priority != 250 {
		t.Fatalf("priorities %d, %d; want both 250", v.Members[0].Priority, v.Members[1].Priority)
	}
}

// TestAdminCreateChecks: instancegroup-create's check flags, the policy
// included.
func TestAdminCreateChecks(t *testing.T) {
	sock := startHostsync(t)
	for _, tc := range []struct {
		args  []string
		code  int
		has   string
		check func(cs []vrrp.Check) bool
	}{
		{[]string{"--check-http", "http://127.0.0.1/", "--check-interval", "0.1"}, 0, "", func(cs []vrrp.Check) bool {
			return len(cs) == 1 && cs[0].Interval == 100 && cs[0].Weight == 0 && cs[0].EffectiveOnFailure() == vrrp.OnFailureResign
		}},
		{[]string{"--check-http", "http://127.0.0.1/", "--check-weight", "2"}, 0, "", func(cs []vrrp.Check) bool {
			return len(cs) == 1 && cs[0].Weight == 2 && cs[0].EffectiveOnFailure() == vrrp.OnFailureLowerPriority
		}},
		{[]string{"--check-process", "nginx", "--on-failure", "lower_priority", "--check-weight", "2", "--check-rise", "3", "--check-restart-unit", "nginx"}, 0, "", func(cs []vrrp.Check) bool {
			return len(cs) == 1 && cs[0].OnFailure == vrrp.OnFailureLowerPriority && cs[0].Rise == 3 && cs[0].RestartUnit == "nginx.service"
		}},
		{[]string{"--check-http", "http://127.0.0.1/", "--on-failure", "lower_priority"}, 2, "checks[0].weight", nil},
		{[]string{"--check-http", "http://127.0.0.1/", "--on-failure", "resign", "--check-weight", "2"}, 2, "checks[0].weight", nil},
		{[]string{"--check-interval", "1"}, 2, "need a check", nil},
	} {
		code, out, errOut := adminCtl(t, sock, append(append([]string{"instancegroup-create", "--json"}, tc.args...), "web")...)
		if code != tc.code || !strings.Contains(errOut, tc.has) {
			t.Fatalf("create %v: exit %d, stderr %q; want %d with %q", tc.args, code, errOut, tc.code, tc.has)
		}
		if code != 0 {
			continue
		}
		var v api.GroupView
		if err := json.Unmarshal([]byte(out), &v); err != nil || !tc.check(v.Settings.Checks) {
			t.Fatalf("create %v: checks %+v (%v)", tc.args, v.Settings.Checks, err)
		}
		if code, _, errOut := adminCtl(t, sock, "instancegroup-delete", "web"); code != 0 {
			t.Fatalf("delete: %s", errOut)
		}
	}
}

func TestAdminUpdateHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"instancegroup-update", "-h"}, nil, &out, &errb); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, flag := range []string{"-vrrp-version", "-advert-int", "-preempt", "-nopreempt", "-preempt-delay", "-auth-pass-file",
		"-check-process", "-check-http", "-check-tcp", "-check-exec", "-check-interval", "-check-timeout", "-check-weight",
		"-check-fall", "-check-rise", "-check-restart-unit", "-on-failure", "-clear-checks"} {
		if !strings.Contains(errb.String(), flag) {
			t.Errorf("help does not list %s:\n%s", flag, errb.String())
		}
	}
}

// TestPrintGroup: instancegroup-show prints each member's priority and
// each check with what it checks and its policy.
func TestPrintGroup(t *testing.T) {
	v := api.GroupView{
		ID: "ig-nginx", Name: "nginx", Revision: 7,
		Settings: api.GroupSettings{VRRPVersion: 3, AdvertInt: 100, Preempt: true, PreemptDelay: 5000, Checks: []vrrp.Check{
			{Name: "chk_nginx", Kind: vrrp.CheckProcess, Process: "nginx", RestartUnit: "nginx.service", Interval: 200, Fall: 2},
			{Name: "chk_http", Kind: vrrp.CheckHTTP, URL: "http://127.0.0.1/", Weight: 2, Rise: 3},
		}},
		Members: []api.MemberView{
			{GuestID: "g1", Name: "nginx-master", Address: netip.MustParseAddr("192.0.2.11"), MAC: "52:54:00:00:00:11", Priority: 250, Role: vrrp.RoleMaster},
			{GuestID: "g2", Name: "nginx-slave", Address: netip.MustParseAddr("192.0.2.12"), MAC: "52:54:00:00:00:12", Priority: 250},
		},
	}
	var b bytes.Buffer
	printHuman(&b, &v)
	want := `group     nginx (ig-nginx)
revision  7
vip       -
eip       -
owner     -
vrrp      v3, advert 0.1 s, preempt delay 5 s
check     chk_nginx: process nginx, restart nginx.service, every 0.2 s, fall 2, on failure resign
check     chk_http: http http://127.0.0.1/, every 2 s, rise 3, on failure lower_priority (weight 2)
members:
  NAME          GUEST  ADDRESS     MAC                PRIORITY  ROLE    OWNER
  nginx-master  g1     192.0.2.11  52:54:00:00:00:11  250       MASTER  
  nginx-slave   g2     192.0.2.12  52:54:00:00:00:12  250       -       
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("printed (-want +got):\n%s", diff)
	}
}

// TestAdminChangeEIPBandwidth changes the bandwidth of nginx's EIP,
// named by the group and by the EIP's address; instancegroup-show shows
// it.
func TestAdminChangeEIPBandwidth(t *testing.T) {
	sock := startHostsync(t)
	for _, s := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"network-create", "--cidr", "192.0.2.0/24", "--vpc-id", "vpc1", "net1"}, 0, "network net1", ""},
		{[]string{"network-create", "--cidr", "203.0.113.0/24", "--kind", "eip", "pub"}, 0, "network pub", ""},
		{[]string{"instancegroup-create", "nginx"}, 0, "group     nginx (ig-nginx)", ""},
		{[]string{"instancegroup-change-eip-bandwidth", "--bandwidth", "20", "nginx"}, 1, "", "the group has no EIP"},
		{[]string{"instancegroup-attachnetwork", "--network-id", "net1", "--ip-addr", "192.0.2.246", "nginx"}, 0, "vip       192.0.2.246/24", ""},
		{[]string{"instancegroup-create-eip", "--bandwidth", "100", "--ip-addr", "203.0.113.5", "nginx"}, 0, "eip       203.0.113.5 (eip-203-0-113-5), bandwidth 100 Mbit/s", ""},
		{[]string{"instancegroup-change-eip-bandwidth", "nginx"}, 2, "", "--bandwidth is required"},
		{[]string{"instancegroup-change-eip-bandwidth", "--bandwidth", "1000001", "nginx"}, 2, "", "bandwidth: 1000001 is out of range"},
		{[]string{"instancegroup-change-eip-bandwidth", "--bandwidth", "20", "nginx"}, 0, "bandwidth 20 Mbit/s", ""},
		{[]string{"instancegroup-show", "nginx"}, 0, "eip       203.0.113.5 (eip-203-0-113-5), bandwidth 20 Mbit/s", ""},
		{[]string{"instancegroup-change-eip-bandwidth", "--bandwidth", "0", "203.0.113.5"}, 0, "bandwidth unlimited", ""},
		{[]string{"instancegroup-change-eip-bandwidth", "--bandwidth", "10", "nope"}, 1, "", "no group or EIP"},
	} {
		code, out, errOut := adminCtl(t, sock, s.args...)
		if code != s.code || !strings.Contains(out, s.stdout) || !strings.Contains(errOut, s.stderr) {
			t.Fatalf("vipctl %s: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit %d, stdout with %q, stderr with %q",
				strings.Join(s.args, " "), code, out, errOut, s.code, s.stdout, s.stderr)
		}
	}
	code, out, _ := adminCtl(t, sock, "instancegroup-show", "nginx", "--json")
	var v api.GroupView
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.EIP == nil || v.EIP.Bandwidth != 0 || v.Revision == 0 {
		t.Fatalf("--json: exit %d, %s", code, out)
	}
}

// TestAdminDualStack: a network with an IPv6 prefix, a group attached with
// --ip6-addr beside --ip-addr; instancegroup-show prints both, the JSON
// view carries both, an IPv6 address in --ip-addr is refused naming the
// field, and a second IPv6 VIP by the one-per-family rule.
func TestAdminDualStack(t *testing.T) {
	sock := startHostsync(t)
	for _, c := range [][]string{
		{"network-create", "--cidr", "192.0.2.0/24", "--cidr6", "2001:db8::/64", "--vpc-id", "vpc1", "net1"},
		{"guest-register", "--network-id", "net1", "--address", "192.0.2.11", "--mac", "52:54:00:00:02:0b", "m"},
		{"guest-register", "--network-id", "net1", "--address", "192.0.2.12", "--mac", "52:54:00:00:02:0c", "s"},
		{"instancegroup-create", "nginx"},
		{"instancegroup-join", "nginx", "m", "s"},
	} {
		if code, out, errOut := adminCtl(t, sock, c...); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", c, code, out, errOut)
		}
	}
	code, _, errOut := adminCtl(t, sock, "instancegroup-attachnetwork", "--ip-addr", "2001:db8::10", "nginx")
	if code != 2 || !strings.Contains(errOut, "ip_addr") || !strings.Contains(errOut, "--ip6-addr") {
		t.Errorf("IPv6 in --ip-addr: exit %d, %q; want 2 naming ip_addr", code, errOut)
	}
	code, out, errOut := adminCtl(t, sock, "instancegroup-attachnetwork", "--ip-addr", "192.0.2.10", "--ip6-addr", "2001:db8::10", "--require-designated-ip", "nginx")
	if code != 0 {
		t.Fatalf("attachnetwork: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"192.0.2.10/24 in net1", "vip6", "2001:db8::10/64 in net1"} {
		if !strings.Contains(out, want) {
			t.Errorf("instancegroup-show output lacks %q:\n%s", want, out)
		}
	}
	v := showGroup(t, sock)
	if v.VIP == nil || v.VIP.Address6 != netip.MustParsePrefix("2001:db8::10/64") {
		t.Errorf("JSON view VIP = %+v", v.VIP)
	}
	code, _, errOut = adminCtl(t, sock, "instancegroup-attachnetwork", "--require-ipv6", "nginx")
	if code != 1 || !strings.Contains(errOut, "one VIP per") {
		t.Errorf("second IPv6 VIP: exit %d, %q; want 1, the one-VIP rule", code, errOut)
	}
}
