package netns_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"

	"github.com/vipkeeper/vipkeeper/harness/netns"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

// TestNamespaces builds two namespaces joined by a veth pair and a bridge,
// serves HTTP in one and fetches it from the other, checks that Run puts
// the thread back, and that Delete removes what Add made.
func TestNamespaces(t *testing.T) {
	testutil.RequireRoot(t)
	var b [3]byte
	rand.Read(b[:])
	prefix := "vkt" + hex.EncodeToString(b[:]) + "-"
	a, c := prefix+"a", prefix+"c"
	for _, n := range []string{a, c} {
		if err := netns.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range netns.List(prefix) {
			if err := netns.Delete(n); err != nil {
				t.Error(err)
			}
		}
	})
	if got := netns.List(prefix); !slices.Equal(got, []string{a, c}) && !slices.Equal(got, []string{c, a}) {
		t.Fatalf("List(%q) = %v", prefix, got)
	}
	if err := netns.Bridge(a, "br0", "192.0.2.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := netns.Veth(a, "p0", c, "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := netns.IPIn(a, "link", "set", "p0", "master", "br0"); err != nil {
		t.Fatal(err)
	}
	if _, err := netns.IPIn(c, "addr", "add", "192.0.2.2/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}

	ln, err := netns.Listen(a, "tcp", "192.0.2.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.RemoteAddr)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	resp, err := netns.HTTPClient(c, 5*time.Second).Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if host, _, _ := net.SplitHostPort(string(body)); host != "192.0.2.2" {
		t.Errorf("request came from %q, want 192.0.2.2 (namespace %s)", body, c)
	}

	before, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if err := netns.Run(c, func() error {
		h, err := vnetns.Get()
		if err != nil {
			return err
		}
		defer h.Close()
		if h.Equal(before) {
			t.Error("Run did not switch the namespace")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h, err := netns.Handle(c)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName("eth0"); err != nil {
		t.Errorf("netlink handle in %s: %v", c, err)
	}
	out, err := netns.Exec(context.Background(), c, "ip", "-o", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(string(out), "192.0.2.2/24") {
		t.Errorf("Exec in %s: %v\n%s", c, err, out)
	}

	for _, n := range []string{a, c} {
		if err := netns.Delete(n); err != nil {
			t.Fatal(err)
		}
	}
	if left := netns.List(prefix); len(left) != 0 {
		t.Errorf("left after Delete: %v", left)
	}
}
