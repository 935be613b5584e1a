package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// nsAddrs lists the addresses of dev inside namespace ns.
func nsAddrs(t testing.TB, ns, dev string) []netip.Prefix {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-j", "addr", "show", "dev", dev).Output()
	if err != nil {
		t.Fatalf("ip -n %s addr show %s: %v", ns, dev, err)
	}
	var links []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatal(err)
	}
	var ps []netip.Prefix
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if ad, err := netip.ParseAddr(a.Local); err == nil {
				ps = append(ps, netip.PrefixFrom(ad, a.Prefixlen))
			}
		}
	}
	return ps
}

func nsHasAddr(t testing.TB, ns, dev string, addr netip.Addr) bool {
	for _, p := range nsAddrs(t, ns, dev) {
		if p.Addr() == addr {
			return true
		}
	}
	return false
}

// fakeHostsync serves the guest API from the bridge namespace: metadata
// with an ETag of the revision, and claims it records.
type fakeHostsync struct {
	mu     sync.Mutex
	meta   []byte
	rev    uint64
	claims []vrrp.Transition
	seen   map[string]bool
	down   bool
}

func (f *fakeHostsync) setMeta(t testing.TB, m *vrrp.Metadata) {
	b := metaJSON(t, m)
	f.mu.Lock()
	f.meta, f.rev = b, m.Revision
	f.mu.Unlock()
}

// setRaw serves doc as it is, with the ETag of rev.
func (f *fakeHostsync) setRaw(doc []byte, rev uint64) {
	f.mu.Lock()
	f.meta, f.rev = doc, rev
	f.mu.Unlock()
}

func (f *fakeHostsync) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == api.PathMetadata:
		etag := fmt.Sprintf(`"%d"`, f.rev)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/json")
		w.Write(f.meta)
	case r.Method == http.MethodPost && r.URL.Path == api.PathClaims:
		if f.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(api.Error{Error: "hostsync: down for the test"})
			return
		}
		var c api.Claim
		if err := json.NewDecoder(io.LimitReader(r.Body, api.MaxBodySize)).Decode(&c); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		key := fmt.Sprintf("%s/%d", c.Transition.Member, c.Transition.Seq)
		dup := f.seen[key]
		if !dup {
			f.seen[key] = true
			f.claims = append(f.claims, c.Transition)
		}
		json.NewEncoder(w).Encode(api.ClaimResult{Accepted: true, Duplicate: dup})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (f *fakeHostsync) claimsOf(member string) []vrrp.Transition {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []vrrp.Transition
	for _, c := range f.claims {
		if c.Member == member {
			out = append(out, c)
		}
	}
	return out
}

// proc is a process the test started; stopped by PID in t.Cleanup.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc starts argv in its own process group with output to logPath.
func startProc(t testing.TB, name, logPath string, argv ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t, 10*time.Second) })
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group and waits, then SIGKILL.
func (p *proc) stop(t testing.TB, wait time.Duration) {
	if p.exited() {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(wait):
	}
	t.Logf("%s did not stop on SIGTERM within %s; SIGKILL", p.name, wait)
	p.kill()
}

// kill sends SIGKILL to the whole process group at once and waits.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func dumpLog(t testing.TB, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(data) > 16000 {
		data = data[len(data)-16000:]
	}
	t.Logf("--- %s ---\n%s", filepath.Base(path), data)
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctxTimeout is a context for one control-socket call.
func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}
