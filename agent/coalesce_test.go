package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/metadata"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// memSource serves the document a test sets, tagged by its revision.
type memSource struct {
	mu  sync.Mutex
	doc []byte
	rev uint64
}

func (s *memSource) set(doc []byte, rev uint64) {
	s.mu.Lock()
	s.doc, s.rev = doc, rev
	s.mu.Unlock()
}

func (s *memSource) Fetch(_ context.Context, prevTag string) ([]byte, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tag := fmt.Sprintf(`"r%d"`, s.rev)
	if tag == prevTag {
		return nil, tag, metadata.ErrNotModified
	}
	return s.doc, tag, nil
}

func (s *memSource) String() string { return "memory" }

// timedKeepalived records when each reload happened.
type timedKeepalived struct {
	mu      sync.Mutex
	reloads []time.Time
}

func (k *timedKeepalived) Running(context.Context) (bool, error) { return true, nil }

func (k *timedKeepalived) Reload(context.Context) error {
	k.mu.Lock()
	k.reloads = append(k.reloads, time.Now())
	k.mu.Unlock()
	return nil
}

// TestBurstOfRevisionsCoalesced: 50 revisions within 5 s, each changing
// what keepalived reads, polled every 100 ms, lead to at most 3 reloads,
// never two within keepalived.min_reload_interval, and the last revision
// ends up installed. (Frequent SIGHUPs flapped VRRP in Neutron,
// LP#1731595.) Time is synctest's fake clock.
func TestBurstOfRevisionsCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		cfg := DefaultConfig()
		cfg.Member = "web-1"
		cfg.StateDir = filepath.Join(dir, "state")
		cfg.SpoolDir = filepath.Join(dir, "spool")
		cfg.Socket = filepath.Join(dir, "agent.sock")
		cfg.Keepalived.Config = filepath.Join(dir, "keepalived", "keepalived.conf")
		cfg.Keepalived.ScriptsDir = filepath.Join(dir, "keepalived", "vipkeeper")
		cfg.Metadata.File = filepath.Join(dir, "unused.json")
		cfg.Metadata.PollInterval = 100 * time.Millisecond
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		doc := func(rev uint64) *vrrp.Metadata {
			m := testMeta(rev)
			m.Checks[0].Weight = int(rev%50) + 1 // a change keepalived reads
			return m
		}
		src := &memSource{}
		src.set(metaJSON(t, doc(1)), 1)
		ka := &timedKeepalived{}
		a, err := newAgent(&cfg, slog.New(slog.NewTextHandler(t.Output(), nil)), deps{
			source: src, link: &fakeLink{}, keepalived: ka, notifier: &fakeNotifier{},
			now: time.Now, render: render.Render,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.applyLoop(ctx) }()

		start := time.Now()
		for rev := uint64(2); rev <= 51; rev++ { // 50 revisions, one every 100 ms
			time.Sleep(100 * time.Millisecond)
			src.set(metaJSON(t, doc(rev)), rev)
		}
		time.Sleep(30 * time.Second) // long after the burst
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}

		ka.mu.Lock()
		reloads := ka.reloads
		ka.mu.Unlock()
		var at []time.Duration
		for _, r := range reloads {
			at = append(at, r.Sub(start))
		}
		t.Logf("reloads at %v", at)
		// The first document is the first reload; the burst adds at most 3.
		if n := len(reloads) - 1; n < 1 || n > 3 {
			t.Errorf("%d reloads for a burst of 50 revisions over 5 s, want 1 to 3", n)
		}
		for i := 1; i < len(reloads); i++ {
			if gap := reloads[i].Sub(reloads[i-1]); gap < cfg.Keepalived.MinReloadInterval {
				t.Errorf("reloads %d and %d only %v apart, want at least %v", i-1, i, gap, cfg.Keepalived.MinReloadInterval)
			}
		}
		a.mu.Lock()
		rev, applied := a.revision, a.applied
		a.mu.Unlock()
		want, err := render.Render(doc(51), render.Options{
			Self: "web-1", Interface: cfg.Interface, ScriptsDir: cfg.Keepalived.ScriptsDir, Vipctl: cfg.Vipctl,
			NotifySocket: cfg.Socket, SpoolDir: cfg.SpoolDir, VersionedScripts: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if rev != 51 || applied != want.Hash {
			t.Errorf("after the burst: revision %d hash %s, want 51 and %s", rev, short(applied), short(want.Hash))
		}
	})
}
