package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/fsutil"
)

// BenchmarkNotifyToReport measures the agent's share of a failover: from
// keepalived's notify hook posting to the control socket, through the
// durable bbolt record, to the claim arriving at hostsync's (here an
// httptest server's) claims endpoint. Target: p99 under 5 ms.
func BenchmarkNotifyToReport(b *testing.B) {
	arrived := make(chan uint64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c api.Claim
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"accepted":true}`)
		arrived <- c.Transition.Seq
	}))
	defer srv.Close()
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	h := startTestAgentLog(b, quiet, metaJSON(b, testMeta(1)), func(c *Config, _ *deps) {
		c.Report.URL = srv.URL + api.PathClaims
		c.ReconcileInterval = time.Hour // measure the notify path alone
	})
	waitFor(b, "first apply", func() bool { return h.status().Ready })
	client := control.NewClient(h.cfg.Socket, 5*time.Second)
	defer client.Close()
	roles := []string{"MASTER", "BACKUP"}
	lat := make([]time.Duration, 0, b.N)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		res, err := client.Notify(ctx, api.NotifyRequest{Args: []string{"INSTANCE", "VI_web", roles[i%2], "100"}, At: start})
		if err != nil || res.Transition == nil {
			b.Fatalf("notify %d: %+v %v", i, res, err)
		}
		select {
		case seq := <-arrived:
			if seq != res.Transition.Seq {
				b.Fatalf("claim for seq %d arrived, want %d", seq, res.Transition.Seq)
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("claim %d never arrived", res.Transition.Seq)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkIdleRSS starts the built agent idle (file metadata, no
// keepalived) and reads its resident memory once it is ready.
// Target: under 20 MB.
func BenchmarkIdleRSS(b *testing.B) {
	agentBin, _ := binaries(b)
	s := newCrashSetup(b)
	if err := fsutil.WriteAtomic(s.metaPath, metaJSON(b, testMeta(1)), 0o644); err != nil {
		b.Fatal(err)
	}
	p := startProc(b, "agent", filepath.Join(s.dir, "agent.log"), agentBin, "--config", s.cfgPath)
	client := control.NewClient(s.socket, 2*time.Second)
	defer client.Close()
	waitFor(b, "the agent to be ready", func() bool {
		st, err := client.Status(context.Background())
		return err == nil && st.Ready
	})
	// Let the first apply's garbage settle as it would in an idle agent.
	time.Sleep(500 * time.Millisecond)
	var rss float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		kb, err := vmRSS(p.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		rss = max(rss, float64(kb)/1024)
	}
	b.StopTimer()
	b.ReportMetric(rss, "RSS-MB")
	p.stop(b, 10*time.Second)
}

// vmRSS reads VmRSS (kB) from /proc/PID/status.
func vmRSS(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}
