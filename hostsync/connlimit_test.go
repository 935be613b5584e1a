package hostsync

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
)

// startGuestAPI runs hostsync (no data plane) with extra configuration
// and returns the guest API's address.
func startGuestAPI(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	cfg, err := ParseConfig("test.toml", []byte(`
state_dir = "`+dir+`"
admin_socket = "`+filepath.Join(dir, "hostsync.sock")+`"
guest_listen = "127.0.0.1:0"
reapply_interval = "1h"
`+extra+`
[dataplane]
backend = "none"
`))
	if err != nil {
		t.Fatal(err)
	}
	logs := testutil.NewLogRecorder(testLogger(t).Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWith(ctx, cfg, slog.New(logs), nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not stop")
		}
	})
	var addr string
	waitFor(t, "hostsync started", func() bool {
		addr, _ = logs.Attr("hostsync started", "guest_api")
		return addr != ""
	})
	return addr
}

// guestConn is a raw keep-alive HTTP connection to the guest API.
type guestConn struct {
	net.Conn
	r *bufio.Reader
}

func dialGuest(t *testing.T, addr, from string) *guestConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &guestConn{Conn: c, r: bufio.NewReader(c)}
}

// get sends one metadata request on the connection and reads the answer
// (any status: the caller is no member); it fails when the connection
// gives none within 5 s.
func (c *guestConn) get() error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET "+api.PathMetadata+" HTTP/1.1\r\nHost: hostsync\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

// closedWithin reports how the server ended the connection: nil when it
// closed it (EOF or reset) within d, an error when it was still open.
func (c *guestConn) closedWithin(d time.Duration) error {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.r.ReadByte()
	var ne net.Error
	switch {
	case err == nil:
		return errors.New("the server sent data instead of closing")
	case errors.As(err, &ne) && ne.Timeout():
		return errors.New("still open")
	}
	return nil // io.EOF or connection reset
}

// TestGuestAPIConnsPerSource: one source address gets at most
// guest_conns_per_source connections at once; the next is closed at once
// while another source is still served, and a closed one frees its slot.
func TestGuestAPIConnsPerSource(t *testing.T) {
	const limit = 3
	addr := startGuestAPI(t, "guest_conns_per_source = 3")
	var conns []*guestConn
	for i := range limit {
		c := dialGuest(t, addr, "127.0.0.1")
		if err := c.get(); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	extra := dialGuest(t, addr, "127.0.0.1")
	if err := extra.closedWithin(5 * time.Second); err != nil {
		t.Fatalf("connection %d from one source: %v, want it closed", limit+1, err)
	}
	if err := dialGuest(t, addr, "127.0.0.2").get(); err != nil {
		t.Fatalf("another source refused while the first is at its limit: %v", err)
	}
	for i, c := range conns {
		if err := c.get(); err != nil {
			t.Fatalf("connection %d no longer served: %v", i+1, err)
		}
	}
	// A closed connection frees its slot once the server has seen the
	// close; a connection over the limit is closed, so retry.
	conns[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if dialGuest(t, addr, "127.0.0.1").get() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed connection was never freed")
		}
	}
}

// TestGuestAPIIdleTimeout: a keep-alive connection idle longer than
// guest_idle_timeout is closed by the server.
func TestGuestAPIIdleTimeout(t *testing.T) {
	addr := startGuestAPI(t, `guest_idle_timeout = "200ms"`)
	c := dialGuest(t, addr, "127.0.0.1")
	if err := c.get(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.closedWithin(10 * time.Second); err != nil {
		t.Fatalf("idle connection: %v after %s, want it closed", err, time.Since(start))
	}
	t.Logf("idle connection closed after %s", time.Since(start).Round(time.Millisecond))
}

func TestConfigGuestLimits(t *testing.T) {
	c, err := ParseConfig("test.toml", nil)
	if err != nil || c.GuestConnsPerSource != httpapi.DefaultGuestConnsPerSource || c.GuestIdleTimeout != DefaultGuestIdleTimeout {
		t.Fatalf("defaults: %d, %s, %v", c.GuestConnsPerSource, c.GuestIdleTimeout, err)
	}
	for _, bad := range []string{"guest_conns_per_source = -1", "guest_conns_per_source = 70000", `guest_idle_timeout = "-1s"`} {
		if _, err := ParseConfig("test.toml", []byte(bad)); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", bad, err)
		}
	}
}
