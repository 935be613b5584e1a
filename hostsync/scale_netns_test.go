package hostsync

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/netns"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/internal/hstest"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// hostsyncBinary builds cmd/vipkeeper-hostsync once per test binary.
var hostsyncBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "vkbin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "vipkeeper-hostsync")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/vipkeeper/vipkeeper/cmd/vipkeeper-hostsync").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

// BenchmarkHostsyncScale starts a real vipkeeper-hostsync process on a
// bbolt registry of 10,000 groups, each with an EIP and an owner (so
// 20,000 map elements and 10,000 VIP routes), its data plane in a network
// namespace of the benchmark's own. One iteration is one start until the
// first apply and its reconcile are done (the "reconciled" log line):
//
//   - start=cold: an empty namespace (a new one each iteration), so the
//     first apply programs everything;
//   - start=restart: the namespace keeps what the previous process
//     programmed, so the apply writes nothing and the reconcile reads it
//     all back.
//
// start-ms is exec → reconciled; reconcile-ms the reconcile's own time
// as hostsync logs it; rss-MB the process's resident set then, peak-MB
// its peak (VmHWM). make bench runs it with a few iterations
// (-benchtime 3x).
func BenchmarkHostsyncScale(b *testing.B) {
	testutil.RequireRoot(b, "go")
	bin, err := hostsyncBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(filepath.Dir(bin)) })
	const groups = 10_000
	dir := b.TempDir()
	dbPath := filepath.Join(dir, "hostsync.db")
	store, err := registry.OpenBolt(dbPath, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	hstest.ManyBulk(b, b.Context(), store, groups)
	for lo := 0; lo < groups; lo += 1000 {
		err := store.Update(b.Context(), func(tx registry.Tx) error {
			for i := lo; i < min(groups, lo+1000); i++ {
				_, err := registry.SwapOwner(tx, 0, registry.Owner{Group: "ig-" + hstest.ManyGroup(i),
					GuestID: hstest.ManyGroup(i) + "-a", Since: time.Now(), Source: "notify"})
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		b.Fatal(err)
	}
	config := filepath.Join(dir, "hostsync.toml")
	err = os.WriteFile(config, []byte(`
state_dir = "`+dir+`"
db_path = "`+dbPath+`"
admin_socket = "`+filepath.Join(dir, "hostsync.sock")+`"
guest_listen = "127.0.0.1:8750"
metrics_listen = "127.0.0.1:0"
reapply_interval = "1h"
[hosts]
host-a = "192.0.2.1"
host-b = "192.0.2.2"
`), 0o600)
	if err != nil {
		b.Fatal(err)
	}
	newNS := func(b *testing.B) string {
		ns := testutil.NewNetns(b, "sc")
		testutil.IP(b, "-n", ns, "link", "add", "hosts0", "type", "veth", "peer", "name", "hosts1")
		testutil.IP(b, "-n", ns, "addr", "add", "192.0.2.100/24", "dev", "hosts0")
		testutil.IP(b, "-n", ns, "link", "set", "hosts0", "up")
		testutil.IP(b, "-n", ns, "link", "set", "hosts1", "up")
		return ns
	}
	for _, mode := range []string{"cold", "restart"} {
		b.Run(fmt.Sprintf("groups=%d/start=%s", groups, mode), func(b *testing.B) {
			var ns string
			if mode == "restart" {
				ns = newNS(b)
				startHostsync(b, bin, ns, config) // programs it
			}
			var start, reconcile, rss, peak []float64
			for b.Loop() {
				if mode == "cold" {
					b.StopTimer()
					ns = newNS(b)
					b.StartTimer()
				}
				st := startHostsync(b, bin, ns, config)
				start, reconcile = append(start, ms(st.started)), append(reconcile, ms(st.reconcile))
				rss, peak = append(rss, float64(st.rss)/(1<<20)), append(peak, float64(st.peak)/(1<<20))
			}
			b.ReportMetric(median(start), "start-ms")
			b.ReportMetric(median(reconcile), "reconcile-ms")
			b.ReportMetric(median(rss), "rss-MB")
			b.ReportMetric(median(peak), "peak-MB")
		})
	}
}

type startFigures struct {
	started, reconcile time.Duration
	rss, peak          int64
}

// startLimit bounds one start: the process is killed beyond it (which
// ends the log and fails the benchmark).
const startLimit = 2 * time.Minute

// startHostsync runs bin in ns until its first apply is reconciled,
// measures it, and stops it (SIGTERM, waited for).
func startHostsync(b *testing.B, bin, ns, config string) startFigures {
	b.Helper()
	cmd := netns.Command(ns, bin, "-config", config, "-log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	limit := time.AfterFunc(startLimit, func() { _ = cmd.Process.Kill() })
	defer limit.Stop()
	var f startFigures
	var logged []string
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if len(logged) < 40 {
			logged = append(logged, line)
		}
		var rec struct {
			Msg  string        `json:"msg"`
			Took time.Duration `json:"took"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "data plane read back and reconciled" {
			continue
		}
		f.started, f.reconcile = time.Since(t0), rec.Took
		f.rss, f.peak = procStatusKB(b, cmd.Process.Pid, "VmRSS")*1024, procStatusKB(b, cmd.Process.Pid, "VmHWM")*1024
		go func() { _, _ = io.Copy(io.Discard, stderr) }() // keep draining
		return f
	}
	b.Fatalf("vipkeeper-hostsync ended (or was killed after %s) before its data plane was reconciled:\n%s",
		startLimit, strings.Join(logged, "\n"))
	return f
}

// procStatusKB reads a "Key:  N kB" line of /proc/PID/status.
func procStatusKB(b *testing.B, pid int, key string) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatalf("%s %q: %v", key, l, err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", key, pid)
	return 0
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
