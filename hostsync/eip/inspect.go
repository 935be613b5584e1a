package eip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"time"
)

// ErrCannotInspect is returned by NFT.Programmed when the backend cannot
// read back what it programmed: NFTOptions.Run was replaced without
// NFTOptions.Query, so a plain nft would read another namespace.
var ErrCannotInspect = errors.New("eip: cannot read back the data plane")

// State is what a backend has programmed, read back from the kernel.
type State struct {
	// Table reports whether the backend's nftables table exists.
	Table bool
	// Rules counts the rules in that table (NFT: three per mapping, DNAT
	// on prerouting and output, SNAT on postrouting; Maps: three in all).
	Rules int
	// Routes counts the VIP routes of the backend's route protocol.
	Routes int
	// Mappings counts the EIP → VIP pairs in the Maps backend's
	// eip_to_vip map (zero for NFT, whose pairs are its rules).
	Mappings int
}

// Empty reports whether nothing is programmed.
func (s State) Empty() bool { return !s.Table && s.Rules == 0 && s.Routes == 0 && s.Mappings == 0 }

func (s State) String() string {
	if !s.Table {
		return fmt.Sprintf("no nftables table, %d routes", s.Routes)
	}
	if s.Mappings > 0 {
		return fmt.Sprintf("nftables table with %d rules, %d mappings, %d routes", s.Rules, s.Mappings, s.Routes)
	}
	return fmt.Sprintf("nftables table with %d rules, %d routes", s.Rules, s.Routes)
}

// Inspector is implemented by backends that can read back what they have
// programmed. hostsync asks it before it applies an empty set from a
// registry that never held a mapping (see hostsync's data-plane guard).
type Inspector interface {
	Programmed(ctx context.Context) (State, error)
}

var _ Inspector = (*NFT)(nil)

// Reconciler is implemented by backends that keep what they programmed in
// memory and write only differences (Maps, and NFT backed by it):
// Reconcile reads the kernel and repairs it toward the last Apply. hostsync
// calls it after an apply at start and after its registry watch was
// re-established (changes, and drift, may have been missed meanwhile).
type Reconciler interface {
	Reconcile(ctx context.Context) error
}

var (
	_ Reconciler = (*NFT)(nil)
	_ Reconciler = (*Maps)(nil)
)

// execQuery returns the production query runner: `nft ARGS...`, returning
// its standard output.
func execQuery(path string) func(context.Context, []string) ([]byte, error) {
	return func(ctx context.Context, args []string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, path, args...)
		var stdout bytes.Buffer
		stderr := &boundedBuffer{max: maxOutput}
		cmd.Stdout, cmd.Stderr = &stdout, stderr
		cmd.WaitDelay = time.Second
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: %w", path, ctx.Err())
			}
			return nil, fmt.Errorf("%s: %w: %s", path, err, bytes.TrimSpace(stderr.Bytes()))
		}
		return stdout.Bytes(), nil
	}
}

// listArgs lists every ip-family table as JSON: unlike `list table`, it
// does not fail when the backend's table is absent.
var listArgs = []string{"--json", "list", "ruleset", "ip"}

// Programmed reads back the backend's nftables table and its VIP routes:
// through netlink by default (Maps.Programmed), with `nft --json list
// ruleset ip` for the script backend. Serialised with Apply.
func (n *NFT) Programmed(ctx context.Context) (State, error) {
	if n.maps != nil {
		return n.maps.Programmed(ctx)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.query == nil {
		return State{}, fmt.Errorf("%w: NFTOptions.Run is set without NFTOptions.Query", ErrCannotInspect)
	}
	qctx, cancel := context.WithTimeout(ctx, n.timeout)
	out, err := n.query(qctx, listArgs)
	cancel()
	if err != nil {
		return State{}, fmt.Errorf("eip: list nftables ruleset: %w", err)
	}
	st, err := countTable(out, n.table)
	if err != nil {
		return State{}, err
	}
	routes, err := n.ownedRoutes()
	if err != nil {
		return State{}, err
	}
	st.Routes = len(routes)
	return st, nil
}

// countTable reads nft's JSON ruleset and counts the rules of the
// ip-family table named table.
func countTable(out []byte, table string) (State, error) {
	var doc struct {
		Nftables []struct {
			Table *struct {
				Family string `json:"family"`
				Name   string `json:"name"`
			} `json:"table"`
			Rule *struct {
				Family string `json:"family"`
				Table  string `json:"table"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return State{}, fmt.Errorf("eip: read nft --json ruleset: %w", err)
	}
	var st State
	for _, o := range doc.Nftables {
		switch {
		case o.Table != nil && o.Table.Family == "ip" && o.Table.Name == table:
			st.Table = true
		case o.Rule != nil && o.Rule.Family == "ip" && o.Rule.Table == table:
			st.Rules++
		}
	}
	return st, nil
}
