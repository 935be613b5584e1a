package eip

import (
	"context"
	"errors"
	"testing"
)

func TestCountTable(t *testing.T) {
	// nft 1.0.6 `--json list ruleset ip` with our table and somebody else's.
	out := []byte(`{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "filter", "handle": 1}},
{"chain": {"family": "ip", "table": "filter", "name": "input", "handle": 1}},
{"rule": {"family": "ip", "table": "filter", "chain": "input", "handle": 2, "expr": []}},
{"table": {"family": "ip", "name": "vipkeeper", "handle": 2}},
{"chain": {"family": "ip", "table": "vipkeeper", "name": "prerouting", "handle": 1}},
{"rule": {"family": "ip", "table": "vipkeeper", "chain": "prerouting", "handle": 2, "expr": []}},
{"rule": {"family": "ip", "table": "vipkeeper", "chain": "output", "handle": 3, "expr": []}},
{"rule": {"family": "ip", "table": "vipkeeper", "chain": "postrouting", "handle": 4, "expr": []}}]}`)
	for _, tc := range []struct {
		table string
		want  State
	}{
		{"vipkeeper", State{Table: true, Rules: 3}},
		{"filter", State{Table: true, Rules: 1}},
		{"other", State{}},
	} {
		got, err := countTable(out, tc.table)
		if err != nil || got != tc.want {
			t.Errorf("countTable(%s) = %+v, %v; want %+v", tc.table, got, err, tc.want)
		}
	}
	if _, err := countTable([]byte("Error: no"), "vipkeeper"); err == nil {
		t.Error("countTable accepted text that is not JSON")
	}
}

func TestProgrammedNeedsQueryWithRun(t *testing.T) {
	n, err := NewNFT(NFTOptions{Run: func(context.Context, []byte) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Programmed(t.Context()); !errors.Is(err, ErrCannotInspect) {
		t.Errorf("Programmed with Run but no Query: %v, want ErrCannotInspect", err)
	}
}
