package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// newLab builds an empty lab or skips with the reason it cannot.
func newLab(t *testing.T, bin string) *Lab {
	t.Helper()
	if err := Privileged(); err != nil {
		testutil.SkipUnprivileged(t, "skipping: %v", err)
	}
	l, err := New(Options{Bin: bin, Out: tWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
		if left := l.Leftovers(); len(left) > 0 {
			t.Errorf("lab left behind: %v", left)
		}
		if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
			t.Errorf("lab left its directory %s behind (%v)", l.Dir, err)
		}
	})
	return l
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func TestTopologyConnectivity(t *testing.T) {
	l := newLab(t, t.TempDir())
	topo, err := l.BuildTopology()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("ping"); err != nil {
		testutil.SkipUnprivileged(t, "skipping: ping not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, s := topo.Guests[0], topo.Guests[1]
	// Guests on different hosts share one L2 segment.
	if out, err := l.Exec(ctx, m.NS, "ping", "-c1", "-W2", s.Addr.String()); err != nil {
		t.Fatalf("guest to guest across hosts: %v\n%s", err, out)
	}
	// Each guest reaches its host's guest API address.
	if out, err := l.Exec(ctx, s.NS, "ping", "-c1", "-W2", s.Host.Bridge.String()); err != nil {
		t.Fatalf("guest to its host: %v\n%s", err, out)
	}
	// The client reaches a guest through the gateway and the hosts.
	if out, err := l.Exec(ctx, "cl", "ping", "-c1", "-W2", GatewayOutside.String()); err != nil {
		t.Fatalf("client to gateway: %v\n%s", err, out)
	}
}

func TestHTTPAcrossNamespaces(t *testing.T) {
	l := newLab(t, t.TempDir())
	if _, err := l.BuildTopology(); err != nil {
		t.Fatal(err)
	}
	ln, err := l.Listen("m", "tcp", "192.0.2.11:8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from m to %s", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	// The client outside reaches the guest only through gw and h1.
	c := l.HTTPClient("s", 5*time.Second)
	resp, err := c.Get("http://192.0.2.11:8080/")
	if err != nil {
		t.Fatalf("GET from guest s: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "192.0.2.12") {
		t.Fatalf("body %q: want the request to come from 192.0.2.12", body)
	}
}
