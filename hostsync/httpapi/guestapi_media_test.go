package httpapi

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/vipkeeper/vipkeeper/api"
)

// TestGuestClaimsNeedJSON: a claim body not declared application/json is
// refused with 415 and changes nothing.
func TestGuestClaimsNeedJSON(t *testing.T) {
	f := newFixture(t)
	f.nginx()
	h := NewGuestAPI(f.svc.Engine, nil, testLogger(t))
	body := `{"transition":{"seq":1,"to":"MASTER","source":"notify"}}`
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "multipart/form-data; boundary=x"} {
		w := guestDo(h, "POST", api.PathClaims, "192.0.2.11", body, map[string]string{"Content-Type": ct})
		if w.Code != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %q: status %d, want 415: %s", ct, w.Code, w.Body)
		}
	}
	if o := f.owner("ig-nginx"); o.Revision != 0 {
		t.Fatalf("a refused claim changed the owner: %+v", o)
	}
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON"} {
		seq := map[string]string{"application/json": "1", "application/json; charset=utf-8": "2", "Application/JSON": "3"}[ct]
		w := guestDo(h, "POST", api.PathClaims, "192.0.2.11", `{"transition":{"seq":`+seq+`,"to":"MASTER","source":"notify"}}`,
			map[string]string{"Content-Type": ct})
		if w.Code != http.StatusOK {
			t.Errorf("Content-Type %q: status %d: %s", ct, w.Code, w.Body)
		}
	}
}

func TestJSONFault(t *testing.T) {
	type inner struct {
		A int `json:"a"`
	}
	type doc struct {
		Items []inner          `json:"items"`
		M     map[string]inner `json:"m"`
		P     *inner           `json:"p"`
	}
	for _, tc := range []struct {
		data    string
		path    string
		unknown bool
	}{
		{`{"items":[{"a":1},{"b":2}]}`, "items[1].b", true},
		{`{"items":[{"a":1},{"a":"x"}]}`, "items[1].a", false},
		{`{"m":{"k":{"z":1}}}`, "m.k.z", true},
		{`{"p":{"A":1},"q":1}`, "q", true},
		{`{"p":null,"items":null}`, "", false},
	} {
		path, unknown := jsonFault([]byte(tc.data), reflect.TypeFor[*doc]())
		if path != tc.path || unknown != tc.unknown {
			t.Errorf("jsonFault(%s) = %q, %v; want %q, %v", tc.data, path, unknown, tc.path, tc.unknown)
		}
	}
}
