package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/daemon"
)

// adminServer serves the admin API on a real unix socket made by
// ListenAdmin, behind RequireRoot, and returns a client for it.
func adminServer(t *testing.T, svc *service) (*http.Client, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "hostsync.sock")
	ln, err := ListenAdmin(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: RequireRoot(NewAdminAPI(svc.Inventory, svc.Engine, testLogger(t))), ConnContext: PeerContext}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	return c, sock
}

// adminCall sends body as JSON (a string as is) and returns the answer.
func adminCall(t *testing.T, c *http.Client, method, path string, body any) (int, []byte) {
	t.Helper()
	return adminCallAs(t, c, method, path, body, "application/json")
}

// adminCallAs is adminCall with the body declared as contentType.
func adminCallAs(t *testing.T, c *http.Client, method, path string, body any, contentType string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, ok := body.(string)
		if !ok {
			j, _ := json.Marshal(body)
			b = string(j)
		}
		rd = strings.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://hostsync"+path, rd)
	if body != nil && contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestAdminSocket(t *testing.T) {
	f := newFixture(t)
	c, sock := adminServer(t, f.svc)

	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %o, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(sock)); di.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory mode %o, want 0700", di.Mode().Perm())
	}
	// A second hostsync must not steal a live socket.
	if _, err := ListenAdmin(sock); !errors.Is(err, daemon.ErrSocketInUse) {
		t.Fatalf("second ListenAdmin: %v, want in use", err)
	}

	steps := []struct {
		method, path string
		body         any
		want         int
		has          string
	}{
		{"POST", api.PathAdminGroups, api.GroupCreate{Name: "nginx"}, 200, `"name":"nginx"`},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionJoin, api.GroupMembers{Guests: []string{"nginx-master", "g2"}}, 200, `"priority":230`},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionCreateEIP, api.CreateGroupEIP{}, 409, "a group binds an EIP only after it has a VIP"},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionAttachNetwork, api.AttachNetwork{IPAddr: ip("192.0.2.10")}, 200, `"address":"192.0.2.10/24"`},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionAttachNetwork, api.AttachNetwork{}, 409, "one VIP per group"},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionAttachNetwork, map[string]any{"ip_addr": "192.0.2.10", "bogus": 1}, 400, `"field":"bogus"`},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionAttachNetwork, api.AttachNetwork{AllocDir: "up"}, 400, `"field":"alloc_dir"`},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionCreateEIP, api.CreateGroupEIP{IPAddr: ip("203.0.113.5")}, 200, `"eip":{"id":"eip-203-0-113-5"`},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionDetachNetwork, api.DetachNetwork{}, 409, "dissociate the EIP before detaching the VIP"},
		{"DELETE", api.PathAdminGroup + "nginx", nil, 409, "a group with members cannot be deleted"},
		{"GET", api.PathAdminGroup + "nginx", nil, 200, `"revision":`},
		{"GET", api.PathAdminGroup + "nope", nil, 404, "no group with id or name"},
		{"POST", api.PathAdminGroup + "nginx/explode", struct{}{}, 404, "no group action"},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionDissociateEIP, nil, 200, `"name":"nginx"`},
		{"POST", api.PathAdminGroup + "nginx/" + api.ActionLeave, api.GroupMembers{Guests: []string{"g1", "g2"}}, 200, `"members":[]`},
		{"DELETE", api.PathAdminGroup + "nginx", nil, 204, ""},
		{"GET", api.PathAdminNetworks, nil, 200, `"id":"net1"`},
		{"GET", api.PathAdminGuests, nil, 200, `"name":"nginx-master"`},
		{"GET", api.PathAdminEIPs, nil, 200, `"address":"203.0.113.5"`},
		{"GET", api.PathAdminStatus, nil, 200, `"sentence":"0 groups, 0 VIPs, no move yet"`},
	}
	for _, s := range steps {
		code, body := adminCall(t, c, s.method, s.path, s.body)
		if code != s.want || !strings.Contains(string(body), s.has) {
			t.Fatalf("%s %s: %d %s; want %d with %q", s.method, s.path, code, body, s.want, s.has)
		}
	}
}

func TestAdminRequiresRootPeer(t *testing.T) {
	f := newFixture(t)
	h := RequireRoot(NewAdminAPI(f.svc.Inventory, f.svc.Engine, nil))
	// No unix peer credentials (e.g. served on TCP by mistake): refused.
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", api.PathAdminStatus, nil))
	if w.Code != http.StatusForbidden {
		t.Fatalf("status %d, want 403", w.Code)
	}
	// Another user's uid: refused.
	r := httptest.NewRequest("GET", api.PathAdminStatus, nil)
	r = r.WithContext(context.WithValue(r.Context(), peerKey{}, uint32(65534)))
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden && os.Geteuid() != 65534 {
		t.Fatalf("status %d for uid 65534, want 403", w.Code)
	}
	r = r.WithContext(context.WithValue(r.Context(), peerKey{}, uint32(0)))
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d for root, want 200", w.Code)
	}
}

func TestListenAdminRefusesNonSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hostsync.sock")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenAdmin(p); !errors.Is(err, daemon.ErrNotSocket) {
		t.Fatalf("ListenAdmin over a file: %v", err)
	}
	// A stale socket (nobody listening) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := ListenAdmin(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()
}

// FuzzAdminDecode: the admin API's strict decoder never panics and names
// a field or the document in every error.
func FuzzAdminDecode(f *testing.F) {
	for _, s := range []string{
		`{"ip_addr":"192.0.2.10","alloc_dir":"random","reserved":true,"require_designated_ip":true,"network_id":"net1"}`,
		`{"ip_addr":"not-an-ip"}`, `{"bogus":1}`, `{} {}`, `[]`, `{"reserved":"yes"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req api.AttachNetwork
		err := decodeStrict(data, &req)
		if err != nil && !strings.HasPrefix(err.Error(), "hostsync: invalid request") {
			t.Fatalf("error %q does not wrap inventory.ErrInvalid", err)
		}
	})
}

// TestAdminUpdateAndSetPriority: the update and set-priority actions
// answer the group at its new revision, refuse invalid values with 400
// naming the field (the document's path for a check) and change nothing
// then, and decode strictly.
func TestAdminUpdateAndSetPriority(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	c, _ := adminServer(t, f.svc)
	update := api.PathAdminGroup + "nginx/" + api.ActionUpdate
	setPrio := api.PathAdminGroup + "ig-nginx/" + api.ActionSetPriority
	steps := []struct {
		path     string
		body     any
		want     int
		has      string
		revision uint64 // the group's revision after the step
	}{
		{update, `{"vrrp_version":3}`, 200, `"vrrp_version":3,"advert_int":1`, 5},
		{update, `{"advert_int":0.005}`, 400, `"field":"advert_int"`, 5},
		{update, `{"checks":[{"name":"chk_http","kind":"http","url":"http://127.0.0.1/","interval":1,"weight":2}]}`, 200, `"checks":[{"name":"chk_http"`, 6},
		{update, `{"checks":[{"name":"chk_tcp","kind":"tcp","address":"127.0.0.1"}]}`, 400, `"field":"checks[0].address"`, 6},
		{update, `{"checks":[{"name":"chk_tcp","kind":"tcp","adress":"127.0.0.1:80"}]}`, 400, `"field":"checks[0].adress"`, 6},
		{update, `{"checks":[]}`, 200, `"preempt":true`, 7},
		{update, `{"nopreempt":"yes"}`, 400, `"field":"nopreempt"`, 7},
		{update, `{"vrrp_version":2,"advert_int":1,"revision":6}`, 409, "the group changed since it was read", 7},
		{update, `{}`, 400, "nothing to change", 7},
		{update, `{"vrrp_version":2,"advert_int":2}`, 400, `"field":"advert_int"`, 7},
		{api.PathAdminGroup + "apache/" + api.ActionUpdate, `{"advert_int":2}`, 404, "no group with id or name", 7},
		{setPrio, api.PriorityUpdate{Member: "nginx-slave", Priority: 240}, 200, `"priority":240`, 8},
		{setPrio, api.PriorityUpdate{Member: "g2", Priority: 255}, 400, `"field":"priority"`, 8},
		{setPrio, api.PriorityUpdate{Member: "third", Priority: 100}, 409, "guest third is not in group nginx", 8},
		{setPrio, `{"member":"g2","priority":100,"prio":1}`, 400, `"field":"prio"`, 8},
	}
	for i, s := range steps {
		code, body := adminCall(t, c, "POST", s.path, s.body)
		if code != s.want || !strings.Contains(string(body), s.has) {
			t.Fatalf("step %d: POST %s %v: %d %s; want %d with %q", i, s.path, s.body, code, body, s.want, s.has)
		}
		v, err := f.svc.ShowGroup(f.ctx, "nginx")
		if err != nil || v.Revision != s.revision {
			t.Fatalf("step %d: revision %d (%v), want %d", i, v.Revision, err, s.revision)
		}
	}
}

// TestAdminBodiesNeedJSON: a request body not declared application/json
// is refused with 415 and changes nothing; a request without a body
// needs no Content-Type.
func TestAdminBodiesNeedJSON(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	c, _ := adminServer(t, f.svc)
	update := api.PathAdminGroup + "nginx/" + api.ActionUpdate
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx"} {
		code, body := adminCallAs(t, c, "POST", update, `{"advert_int":2}`, ct)
		if code != http.StatusUnsupportedMediaType || !strings.Contains(string(body), "application/json") {
			t.Errorf("Content-Type %q: %d %s, want 415", ct, code, body)
		}
	}
	if v, _ := f.svc.ShowGroup(f.ctx, "nginx"); v.Revision != 4 || v.Settings.AdvertInt != 1000 {
		t.Fatalf("a refused update changed the group: %+v", v)
	}
	if code, body := adminCallAs(t, c, "POST", update, `{"advert_int":2}`, "application/json; charset=utf-8"); code != 200 {
		t.Fatalf("with charset: %d %s", code, body)
	}
	if code, body := adminCallAs(t, c, "POST", api.PathAdminGroup+"nginx/"+api.ActionDissociateEIP, nil, ""); code != 200 {
		t.Fatalf("no body, no Content-Type: %d %s", code, body)
	}
}

// TestAdminChangeEIPBandwidth: the bandwidth is required and checked,
// shown with the group, and the data plane is applied with it.
func TestAdminChangeEIPBandwidth(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	c, _ := adminServer(t, f.svc)
	path := api.PathAdminGroup + "nginx/" + api.ActionChangeEIPBandwidth
	for _, s := range []struct {
		body any
		want int
		has  string
	}{
		{map[string]any{}, 400, `"field":"bandwidth"`},
		{map[string]any{"bandwidth": 1_000_001}, 400, `"field":"bandwidth"`},
		{map[string]any{"bandwidth": "10"}, 400, `bandwidth`},
		{api.ChangeEIPBandwidth{Bandwidth: new(20)}, 200, `"eip":{"id":"eip-203-0-113-5","address":"203.0.113.5","bandwidth":20}`},
	} {
		code, body := adminCall(t, c, "POST", path, s.body)
		if code != s.want || !strings.Contains(string(body), s.has) {
			t.Fatalf("POST %s %v: %d %s; want %d with %q", path, s.body, code, body, s.want, s.has)
		}
	}
	if ms := f.backend.LastSet(); len(ms) != 1 || ms[0].Bandwidth != 20 {
		t.Fatalf("data plane applied %+v, want the EIP at 20 Mbit/s", ms)
	}
	if code, body := adminCall(t, c, "GET", api.PathAdminGroup+"nginx", nil); code != 200 || !strings.Contains(string(body), `"bandwidth":20`) {
		t.Fatalf("GET group: %d %s; want the EIP's bandwidth", code, body)
	}
}
