package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

func decodeAPIError(t *testing.T, w *httptest.ResponseRecorder) api.Error {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", w.Body, err)
	}
	return e
}

func TestGuestMetadata(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	h := NewGuestAPI(f.svc.Engine, fakeNeighbors{ip("192.0.2.11"): "52:54:00:00:00:11"}, testLogger(t))

	w := guestDo(h, "GET", api.PathMetadata, "192.0.2.11", "", nil)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	md, err := vrrp.Parse(w.Body.Bytes())
	if err != nil {
		t.Fatalf("served metadata does not parse: %v", err)
	}
	wantMembers := []vrrp.Member{
		{Name: "nginx-master", GuestID: "g1", Address: ip("192.0.2.11"), MAC: "52:54:00:00:00:11", Priority: 250},
		{Name: "nginx-slave", GuestID: "g2", Address: ip("192.0.2.12"), MAC: "52:54:00:00:00:12", Priority: 230},
	}
	if diff := cmp.Diff(wantMembers, md.Members, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Fatalf("members (-want +got):\n%s", diff)
	}
	if md.VIP != netip.MustParsePrefix("192.0.2.10/24") || md.NetworkID != "net1" || md.EIP != ip("203.0.113.5") ||
		md.Group != (vrrp.Group{ID: "ig-nginx", Name: "nginx"}) || md.Auth == nil || md.VirtualRouterID == 0 {
		t.Fatalf("metadata = %+v", md)
	}
	etag := w.Header().Get("ETag")
	sum := sha256.Sum256(w.Body.Bytes())
	if etag != `"`+itoa(md.Revision)+"-"+hex.EncodeToString(sum[:8])+`"` {
		t.Fatalf("ETag %q, revision %d: want the revision and the document's hash", etag, md.Revision)
	}

	// Unchanged: 304.
	w = guestDo(h, "GET", api.PathMetadata, "192.0.2.12", "", map[string]string{"If-None-Match": etag})
	if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Fatalf("If-None-Match: status %d, body %q", w.Code, w.Body)
	}
	// A member joins: revision bumped, new document.
	f.mustJoin("nginx", "g5")
	w = guestDo(h, "GET", api.PathMetadata, "192.0.2.12", "", map[string]string{"If-None-Match": etag})
	if w.Code != http.StatusOK || w.Header().Get("ETag") == etag {
		t.Fatalf("after a join: status %d, ETag %q", w.Code, w.Header().Get("ETag"))
	}
	if md2, _ := vrrp.Parse(w.Body.Bytes()); md2 == nil || len(md2.Members) != 3 || md2.Members[2].Priority != 210 {
		t.Fatalf("after a join: %s", w.Body)
	}
}

func itoa(u uint64) string { b, _ := json.Marshal(u); return string(b) }

func TestGuestMetadataForbidden(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	f.mustGroup("novip")
	f.mustJoin("novip", "g5")
	h := NewGuestAPI(f.svc.Engine, fakeNeighbors{ip("192.0.2.12"): "52:54:00:00:00:99"}, testLogger(t))
	cases := []struct{ name, from string }{
		{"unregistered address", "192.0.2.99"},
		{"guest in no group", "198.51.100.14"},
		{"group without VIP", "192.0.2.15"},
		{"member address, other MAC in the neighbour table", "192.0.2.12"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := guestDo(h, "GET", api.PathMetadata, tc.from, "", nil)
			if w.Code != http.StatusForbidden {
				t.Fatalf("status %d, want 403: %s", w.Code, w.Body)
			}
			if e := decodeAPIError(t, w); !strings.HasPrefix(e.Error, "hostsync: forbidden") {
				t.Fatalf("error %q", e.Error)
			}
		})
	}
}

func TestGuestClaimsHTTP(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	h := NewGuestAPI(f.svc.Engine, fakeNeighbors{}, testLogger(t))

	w := guestDo(h, "POST", api.PathClaims, "192.0.2.11",
		`{"transition":{"seq":1,"group":"nginx","member":"nginx-master","from":"BACKUP","to":"MASTER","at":"2025-03-01T12:00:00Z","source":"notify","vip_present":true}}`, nil)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var res api.ClaimResult
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if !res.Accepted || res.Owner != "nginx-master" || res.Revision != 1 {
		t.Fatalf("result = %+v", res)
	}
	if ev := f.rec.Take(); len(ev) != 2 {
		t.Fatalf("side effects %v, want GARP and apply", ev)
	}
}

// TestGuestClaimNonMemberForbidden is the issue's "a claim from a
// non-member (other source address) gets 403 and changes nothing".
func TestGuestClaimNonMemberForbidden(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	h := NewGuestAPI(f.svc.Engine, nil, testLogger(t))
	if w := guestDo(h, "POST", api.PathClaims, "192.0.2.11", `{"transition":{"seq":1,"to":"MASTER","source":"notify"}}`, nil); w.Code != 200 {
		t.Fatalf("member's claim: %d %s", w.Code, w.Body)
	}
	f.rec.Take()
	before, rolesBefore := f.owner("ig-nginx"), f.roles("ig-nginx")

	// The body names a member, but the source address is g5's, outside the group.
	body := `{"transition":{"seq":7,"group":"nginx","member":"nginx-slave","to":"MASTER","source":"notify"}}`
	for _, from := range []string{"192.0.2.15", "192.0.2.99", "198.51.100.14"} {
		w := guestDo(h, "POST", api.PathClaims, from, body, nil)
		if w.Code != http.StatusForbidden {
			t.Fatalf("claim from %s: status %d, want 403: %s", from, w.Code, w.Body)
		}
	}
	if after := f.owner("ig-nginx"); after != before {
		t.Fatalf("owner changed: %+v -> %+v", before, after)
	}
	if diff := cmp.Diff(rolesBefore, f.roles("ig-nginx")); diff != "" {
		t.Fatalf("roles changed:\n%s", diff)
	}
	if ev := f.rec.Take(); len(ev) != 0 {
		t.Fatalf("GARP or data plane touched: %v", ev)
	}
	st, _ := f.svc.Status(f.ctx)
	if st.Rejected != 3 || st.Moves != 1 {
		t.Fatalf("status = %+v, want 3 rejected, 1 move", st)
	}
}

func TestGuestClaimsStrictDecoding(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	h := NewGuestAPI(f.svc.Engine, nil, testLogger(t))
	cases := []struct {
		name, body, field string
	}{
		{"unknown field", `{"transition":{"seq":1,"to":"MASTER"},"owner":"me"}`, "owner"},
		{"unknown nested field", `{"transition":{"seq":1,"to":"MASTER","vip":"192.0.2.10"}}`, "transition.vip"},
		{"unknown field after known ones", `{"transition":{"seq":1,"to":"MASTER","bogus":1}}`, "transition.bogus"},
		{"bad time", `{"transition":{"seq":1,"to":"MASTER","at":"yesterday"}}`, "transition.at"},
		{"time not a string", `{"transition":{"seq":1,"to":"MASTER","at":5}}`, "transition.at"},
		{"wrong type", `{"transition":{"seq":"1","to":"MASTER"}}`, "transition.seq"},
		{"no seq", `{"transition":{"to":"MASTER"}}`, "transition.seq"},
		{"bad role", `{"transition":{"seq":1,"to":"LEADER"}}`, "transition.to"},
		{"bad from", `{"transition":{"seq":1,"from":"x","to":"MASTER"}}`, "transition.from"},
		{"priority out of range", `{"transition":{"seq":1,"to":"MASTER","priority":300}}`, "transition.priority"},
		{"control character", `{"transition":{"seq":1,"to":"MASTER","note":"a\u0007b"}}`, "transition.note"},
		{"reserved source", `{"transition":{"seq":1,"to":"MASTER","source":"garp"}}`, "transition.source"},
		{"trailing data", `{"transition":{"seq":1,"to":"MASTER"}} {}`, ""},
		{"not JSON", `MASTER`, ""},
		{"too large", `{"transition":{"seq":1,"to":"MASTER","note":"` + strings.Repeat("x", api.MaxBodySize) + `"}}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := guestDo(h, "POST", api.PathClaims, "192.0.2.11", tc.body, nil)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", w.Code, w.Body)
			}
			if e := decodeAPIError(t, w); e.Field != tc.field {
				t.Fatalf("field %q, want %q (%s)", e.Field, tc.field, e.Error)
			}
		})
	}
	if o := f.owner("ig-nginx"); o.Revision != 0 {
		t.Fatalf("a malformed claim changed the owner: %+v", o)
	}
}

func TestGuestAPIMethods(t *testing.T) {
	f := newFixture(t)
	h := NewGuestAPI(f.svc.Engine, nil, nil)
	for _, tc := range []struct{ method, path string }{{"POST", api.PathMetadata}, {"GET", api.PathClaims}, {"DELETE", api.PathClaims}} {
		if w := guestDo(h, tc.method, tc.path, "192.0.2.11", "", nil); w.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: status %d, want 405", tc.method, tc.path, w.Code)
		}
	}
	if w := guestDo(h, "GET", "/v1/other", "192.0.2.11", "", nil); w.Code != http.StatusNotFound {
		t.Errorf("unknown path: status %d", w.Code)
	}
}

func TestETagMatch(t *testing.T) {
	cases := []struct {
		header string
		want   bool
	}{
		{`"7"`, true}, {`W/"7"`, true}, {`"6", "7"`, true}, {`*`, true}, {`"6"`, false}, {``, false}, {`7`, false},
	}
	for _, tc := range cases {
		if got := etagMatch(tc.header, `"7"`); got != tc.want {
			t.Errorf("etagMatch(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

// FuzzDecodeClaim: the claim decoder never panics, and whatever it
// accepts is a valid claim that re-encodes and decodes to itself.
func FuzzDecodeClaim(f *testing.F) {
	for _, s := range []string{
		`{"transition":{"seq":1,"group":"nginx","member":"nginx-master","from":"BACKUP","to":"MASTER","at":"2025-03-01T12:00:00Z","source":"notify","vip_present":true}}`,
		`{"transition":{"seq":18446744073709551615,"to":"STOP","priority":255}}`,
		`{"transition":{"seq":1,"to":"MASTER"}} {}`,
		`{"transition":{"seq":-1,"to":"MASTER"}}`,
		`{"transition":null}`,
		`[]`, `null`, ``, `{"transition":{"seq":1,"to":"FAULT","note":"\u00e9\u0000"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeClaim(strings.NewReader(string(data)))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "hostsync: invalid request") {
				t.Fatalf("error %q does not wrap inventory.ErrInvalid", err)
			}
			return
		}
		if c.Transition.Seq == 0 {
			t.Fatal("accepted seq 0")
		}
		if _, err := vrrp.ParseRole(string(c.Transition.To)); err != nil {
			t.Fatalf("accepted role %q", c.Transition.To)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := DecodeClaim(strings.NewReader(string(b)))
		if err != nil {
			t.Fatalf("re-encoded claim refused: %v\n%s", err, b)
		}
		if !c2.Transition.At.Equal(c.Transition.At) {
			t.Fatal("time changed on round trip")
		}
		if c2.Transition.Seq != c.Transition.Seq || c2.Transition.To != c.Transition.To || c2.Transition.Note != c.Transition.Note {
			t.Fatalf("round trip changed the claim: %+v vs %+v", c, c2)
		}
	})
}
