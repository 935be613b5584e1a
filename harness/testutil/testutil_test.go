package testutil

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"testing"
)

func TestListenPortsSeesOwnListener(t *testing.T) {
	before := ListenPorts(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	if got := NewPorts(before, ListenPorts(t)); len(got) != 1 || !got[p] {
		t.Fatalf("new ports with a listener on %d: %v", p, got)
	}
	ln.Close()
	if got := NewPorts(before, ListenPorts(t)); len(got) != 0 {
		t.Fatalf("new ports after closing the listener: %v", got)
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "# HELP up Up.\n# TYPE up gauge\nup 1\n\nreqs_total{code=\"200\",path=\"/a b\"} 42\n")
	}))
	defer srv.Close()
	got := Scrape(t, srv.URL)
	want := map[string]float64{"up": 1, `reqs_total{code="200",path="/a b"}`: 42}
	if len(got) != len(want) {
		t.Fatalf("Scrape = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Scrape[%s] = %v, want %v", k, got[k], v)
		}
	}
}

func TestLogRecorderKeepsLastAttrs(t *testing.T) {
	rec := NewLogRecorder(slog.NewTextHandler(io.Discard, nil))
	log := slog.New(rec).With("component", "x")
	log.Info("started", "addr", "a1")
	log.WithGroup("g").Info("started", "addr", "a2", "extra", 1)
	if v, ok := rec.Attr("started", "addr"); !ok || v != "a2" {
		t.Errorf(`Attr("started", "addr") = %q, %v; want "a2", true`, v, ok)
	}
	if v, ok := rec.Attr("started", "extra"); !ok || v != "1" {
		t.Errorf(`Attr("started", "extra") = %q, %v; want "1", true`, v, ok)
	}
	if _, ok := rec.Attr("stopped", "addr"); ok {
		t.Error(`Attr of a message never logged says there was one`)
	}
}

// netnsIno is the network namespace of the calling goroutine's thread.
func netnsIno(t *testing.T) string {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestInNetns(t *testing.T) {
	RequireRoot(t)
	name := NewNetns(t, "tu")
	if len(name) > 15 {
		t.Fatalf("namespace name %q is longer than 15 characters", name)
	}
	outside := netnsIno(t)
	var inside string
	var ifaces []net.Interface
	if err := InNetns(name, func() (err error) {
		inside = netnsIno(t)
		ifaces, err = net.Interfaces()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == outside {
		t.Fatalf("fn ran in this test's namespace %s", outside)
	}
	if len(ifaces) != 1 || ifaces[0].Name != "lo" || ifaces[0].Flags&net.FlagUp == 0 {
		t.Errorf("interfaces inside %s: %+v, want lo alone and up", name, ifaces)
	}
	if back := netnsIno(t); back != outside {
		t.Errorf("after InNetns the thread is in %s, want %s", back, outside)
	}
	if err := InNetns("vknosuchns", func() error { return nil }); err == nil {
		t.Error("InNetns of a missing namespace succeeded")
	}
}
