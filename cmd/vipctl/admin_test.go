package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
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
		{[]string{"instancegroup-show", "nginx"}, 0, "nginx-master  nginx-master  192.0.2.247  00:24:b1:6d:9b:7d  100", ""},
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
		v.Settings.Checks[0].Interval != 2000 || v.Settings.Checks[0].Weight != 2 {
		t.Fatalf("group = %+v", v)
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
		{[]string{"instancegroup-create", "--auth-pass-file", long, "web3"}, 2, "auth.pass"},
		{[]string{"instancegroup-create", "--auth-pass", "1111", "web4"}, 2, "auth-pass"},
	} {
		code, _, errOut := adminCtl(t, sock, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.has) {
			t.Errorf("vipctl %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.has)
		}
	}
}
