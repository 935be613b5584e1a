package hstest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// TestManyBulkMatchesAdmin checks that ManyBulk writes the records the
// admin operations write for the same groups (two networks' worth, so the
// network boundary is crossed), apart from what is time or chance.
func TestManyBulkMatchesAdmin(t *testing.T) {
	n := ManyPerNetwork + 2
	admin, bulk := OpenStore(t), OpenStore(t)
	Many(t, t.Context(), inventory.New(admin, inventory.Options{}), n)
	ManyBulk(t, t.Context(), bulk, n)
	a, b := dumpRecords(t, admin), dumpRecords(t, bulk)
	// 3 networks; per group 2 guests with their leases and address
	// index entries, the group, its VIP lease and VIP index entry, the EIP
	// and its lease.
	if want := 3 + 11*n; len(a) != want {
		t.Fatalf("admin registry holds %d records, want %d", len(a), want)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("ManyBulk differs from the admin operations (-admin +bulk):\n%s", diff)
	}
}

// dumpRecords returns every record as decoded JSON by "bucket/key", with
// timestamps, VRIDs and passwords removed.
func dumpRecords(t *testing.T, st registry.Store) map[string]any {
	t.Helper()
	out := map[string]any{}
	err := st.View(t.Context(), func(tx registry.Tx) error {
		for _, b := range registry.Buckets {
			err := tx.ForEach(b, "", func(k string, v []byte) error {
				var rec any
				if err := json.Unmarshal(v, &rec); err != nil {
					return err
				}
				out[string(b)+"/"+k] = scrub(rec)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func scrub(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k := range v {
			if strings.HasSuffix(k, "_at") || k == "vrid" || k == "auth_pass" {
				delete(v, k)
				continue
			}
			v[k] = scrub(v[k])
		}
	case []any:
		for i := range v {
			v[i] = scrub(v[i])
		}
	}
	return v
}
