package vrrp

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzDecode feeds arbitrary bytes to Parse. It must never panic, and any
// document it accepts must survive Marshal and Parse unchanged.
func FuzzDecode(f *testing.F) {
	var seeds []string
	for _, pattern := range []string{
		filepath.Join("..", "examples", "*.json"),
		filepath.Join("..", "render", "testdata", "*.json"),
	} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, files...)
	}
	if len(seeds) == 0 {
		f.Fatal("no seed documents in examples/ or render/testdata/")
	}
	for _, file := range seeds {
		if strings.HasSuffix(file, ".opts.json") {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"version":1}`, `{"version":"1"}`, `{"version":1.5}`, `{"version":2}`,
		`{"version":1,"vip":"192.0.2.10/24","group":{"id":"g","name":"g"},"members":[{"name":"a","address":"192.0.2.11","priority":1}]}`,
		`{"version":1,"advert_int":1e3}`, `{"version":1,"advert_int":-1}`, `{"version":1,"advert_int":0.0001}`,
		`{"version":1,"checks":[{"name":"c\n}","kind":"exec","command":["/bin/x","$(id)"]}]}`,
		`{"version":1,"vip":"192.0.2.10/24","group":{"id":"g","name":"g"},"members":[{"name":"a","address":"192.0.2.11","priority":9},{"name":"b","address":"192.0.2.12","priority":9}],"checks":[{"name":"c","kind":"tcp","address":"127.0.0.1:80","on_failure":"resign","interval":0.05,"timeout":0.03}]}`,
		`{"version":1,"vip":"192.0.2.10/24","group":{"id":"g","name":"g"},"members":[{"name":"a","address":"192.0.2.11","priority":9}],"checks":[{"name":"c","kind":"tcp","address":"127.0.0.1:80","on_failure":"lower_priority","weight":-5,"interval":1.5}]}`,
		`{"version":1} {"version":1}`, `{"version":1,"unknown":true}`, `{"VERSION":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if m != nil {
				t.Fatalf("Parse returned a document and an error: %v", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Parse accepted a document that Validate refuses: %v", err)
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of an accepted document: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-Parse of the marshalled document: %v\n%s", err, out)
		}
		// Empty and absent lists mean the same; omitempty drops them.
		if diff := cmp.Diff(m, again, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})); diff != "" {
			t.Fatalf("round trip changed the document (-parsed +reparsed):\n%s", diff)
		}
		out2, err := again.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if string(out2) != string(out) {
			t.Fatalf("Marshal is not stable:\n%s\n---\n%s", out, out2)
		}
	})
}
