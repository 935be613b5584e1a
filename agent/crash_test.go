package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/agent/state"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/fsutil"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// crashSetup is an agent configuration for running the built binary
// without privileges: interface lo, no keepalived, file metadata.
type crashSetup struct {
	dir, cfgPath, metaPath, socket, conf, scripts, db, spool string
}

func newCrashSetup(t testing.TB) crashSetup {
	dir := t.TempDir()
	s := crashSetup{
		dir:      dir,
		cfgPath:  filepath.Join(dir, "agent.toml"),
		metaPath: filepath.Join(dir, "metadata.json"),
		socket:   filepath.Join(dir, "agent.sock"),
		conf:     filepath.Join(dir, "keepalived", "keepalived.conf"),
		scripts:  filepath.Join(dir, "keepalived", "vipkeeper"),
		db:       filepath.Join(dir, "state", "agent.db"),
		spool:    filepath.Join(dir, "spool"),
	}
	cfg := fmt.Sprintf(`
member = "web-1"
interface = "lo"
state_dir = %q
socket = %q
spool_dir = %q
vipctl = "/usr/bin/vipctl"
track_dir = %q
history_limit = 100000
[metadata]
file = %q
poll_interval = "10s"
[keepalived]
skip_config_test = true
reload = "none"
config = %q
scripts_dir = %q
pid_file = %q
`, filepath.Dir(s.db), s.socket, s.spool, filepath.Join(dir, "track"), s.metaPath, s.conf, s.scripts, filepath.Join(dir, "keepalived.pid"))
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s crashSetup) render(t testing.TB, m *vrrp.Metadata) *render.Output {
	t.Helper()
	out, err := render.Render(m, render.Options{Self: "web-1", Interface: "lo", ScriptsDir: s.scripts, Vipctl: "/usr/bin/vipctl", NotifySocket: s.socket, SpoolDir: s.spool, VersionedScripts: true})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkDB opens the state database as a new process would and runs the
// consistency check.
func checkDB(t testing.TB, path string) state.State {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("open state after kill: %v", err)
	}
	defer db.Close()
	if err := state.CheckDB(db); err != nil {
		t.Fatalf("state inconsistent after kill: %v", err)
	}
	st, err := state.ReadState(db)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestCrashSafety kills the agent with SIGKILL many times while it applies
// a new configuration and records notify events: keepalived.conf (and
// every script) is always exactly the old or the new rendering, the state
// database opens and passes tx.Check, and no acknowledged event is lost.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent binary 60 times")
	}
	agentBin, _ := binaries(t)
	s := newCrashSetup(t)
	docs := []*vrrp.Metadata{testMeta(1), testMeta(2)}
	docs[1].VirtualRouterID = 99
	docs[1].Checks = append(docs[1].Checks, vrrp.Check{Name: "chk_proc", Kind: vrrp.CheckProcess, Process: "nginx"})
	outs := []*render.Output{s.render(t, docs[0]), s.render(t, docs[1])}
	valid := map[string]bool{} // every file content a rendering can leave
	for _, o := range outs {
		valid[s.conf+"\x00"+string(o.Config)] = true
		for _, f := range o.Scripts {
			valid[filepath.Join(o.ScriptsDir, f.Name)+"\x00"+string(f.Data)] = true
		}
	}

	run := func(logName string) *proc {
		return startProc(t, "agent", filepath.Join(s.dir, logName), agentBin, "--config", s.cfgPath)
	}
	client := control.NewClient(s.socket, 2*time.Second)
	defer client.Close()
	socketUp := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := client.Status(ctx)
		return err == nil
	}

	// Start from a completed apply of the first document.
	if err := fsutil.WriteAtomic(s.metaPath, metaJSON(t, docs[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	p := run("agent-0.log")
	waitUntil(t, 30*time.Second, "first apply", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := client.Status(ctx)
		return err == nil && st.Ready
	})
	p.stop(t, 10*time.Second)

	var (
		ackMu sync.Mutex
		acked []uint64 // seqs the agent acknowledged as recorded
	)
	seen := map[string]int{} // which rendering keepalived.conf was after each kill
	const iterations = 60
	for i := range iterations {
		next := docs[(i+1)%2]
		if err := fsutil.WriteAtomic(s.metaPath, metaJSON(t, next), 0o644); err != nil {
			t.Fatal(err)
		}
		p := run(fmt.Sprintf("agent-%d.log", i+1))
		// Hammer the socket with role changes until the kill.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			roles := []string{"MASTER", "BACKUP"}
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				res, err := client.Notify(ctx, api.NotifyRequest{Args: []string{"INSTANCE", "VI_web", roles[k%2], "100"}, At: time.Now()})
				cancel()
				if err == nil && res.Transition != nil {
					ackMu.Lock()
					acked = append(acked, res.Transition.Seq)
					ackMu.Unlock()
				} else if err != nil {
					time.Sleep(time.Millisecond)
				}
			}
		}()
		// Kill somewhere between process start and well after the apply.
		time.Sleep(time.Duration(rand.IntN(25)) * time.Millisecond)
		p.kill()
		close(stop)
		wg.Wait()

		conf, err := os.ReadFile(s.conf)
		if err != nil {
			t.Fatalf("iteration %d: keepalived.conf: %v", i, err)
		}
		var live *render.Output
		switch string(conf) {
		case string(outs[0].Config):
			seen["first"]++
			live = outs[0]
		case string(outs[1].Config):
			seen["second"]++
			live = outs[1]
		default:
			t.Fatalf("iteration %d: keepalived.conf is neither rendering:\n%s", i, conf)
		}
		// Every script the live keepalived.conf refers to is in place,
		// and every script on disk is some rendering's.
		for _, f := range live.Scripts {
			if data, err := os.ReadFile(filepath.Join(live.ScriptsDir, f.Name)); err != nil || string(data) != string(f.Data) {
				t.Fatalf("iteration %d: keepalived.conf refers to %s, which is not its rendering: %v", i, f.Name, err)
			}
		}
		dirs, _ := os.ReadDir(s.scripts)
		for _, d := range dirs {
			if strings.HasPrefix(d.Name(), ".") {
				continue // a temporary directory of the interrupted install; removed at the next start
			}
			entries, _ := os.ReadDir(filepath.Join(s.scripts, d.Name()))
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".") {
					continue
				}
				path := filepath.Join(s.scripts, d.Name(), e.Name())
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !valid[path+"\x00"+string(data)] {
					t.Fatalf("iteration %d: script %s is no rendering's:\n%s", i, path, data)
				}
			}
		}
		checkDB(t, s.db)
	}
	t.Logf("after %d kills keepalived.conf was the first rendering %d times, the second %d times; %d notify events acknowledged",
		iterations, seen["first"], seen["second"], len(acked))

	// A clean start completes the last apply and keeps every acknowledged event.
	p = run("agent-final.log")
	waitUntil(t, 30*time.Second, "the final apply", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := client.Status(ctx)
		return err == nil && st.Ready
	})
	last := outs[iterations%2]
	if conf, _ := os.ReadFile(s.conf); string(conf) != string(last.Config) {
		t.Error("after a clean start keepalived.conf is not the last document's rendering")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hist, err := client.History(ctx, 100000)
	if err != nil {
		t.Fatal(err)
	}
	inHistory := map[uint64]bool{}
	for _, tr := range hist {
		inHistory[tr.Seq] = true
	}
	for _, seq := range acked {
		if !inHistory[seq] {
			t.Errorf("acknowledged transition %d missing from the history", seq)
		}
	}
	for i := 1; i < len(hist); i++ {
		if hist[i].Seq != hist[i-1].Seq+1 {
			t.Fatalf("history seq gap: %d then %d", hist[i-1].Seq, hist[i].Seq)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(s.scripts, ".*.tmp-*")); len(left) != 0 {
		t.Errorf("temporary files left after a clean start: %v", left)
	}
	if !socketUp() {
		t.Error("agent not answering")
	}
	p.stop(t, 10*time.Second)
	if p.err != nil {
		t.Errorf("agent exit after SIGTERM: %v, want a clean exit", p.err)
	}
}
