// Package daemon is the plumbing vipkeeper's two daemons (agent and
// hostsync) share: the unix-socket listener of their local APIs, systemd's
// notify protocol and a watchdog tied to a liveness check, the Prometheus
// registry, JSON answers, and serving HTTP until the context ends. It owns
// no state of either daemon.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MaxSocketPath is the longest unix socket path, in bytes, the kernel
// takes: sun_path is 108 bytes on Linux, one of them the terminating NUL.
const MaxSocketPath = 107

// Errors of ListenUnix.
var (
	// ErrSocketInUse is returned (wrapped) when another process answers
	// on the socket path.
	ErrSocketInUse = errors.New("in use by another process")
	// ErrNotSocket is returned (wrapped) when something other than a
	// socket is at the path.
	ErrNotSocket = errors.New("exists and is not a socket")
)

// ListenUnix listens on the unix socket path: its directory is created
// with dirMode when missing, a stale socket (nobody answers on it) is
// replaced, and the socket is made 0600. A socket another process answers
// on (ErrSocketInUse) or a non-socket at path (ErrNotSocket) is an error.
func ListenUnix(path string, dirMode fs.FileMode) (net.Listener, error) {
	if len(path) > MaxSocketPath {
		return nil, fmt.Errorf("daemon: socket %s is longer than %d bytes", path, MaxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("daemon: socket directory %s: %w", dir, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("daemon: socket %s %w", path, ErrNotSocket)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("daemon: socket %s is %w", path, ErrSocketInUse)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("daemon: remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("daemon: listen on socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("daemon: chmod socket: %w", err)
	}
	return ln, nil
}

// Notifier passes state to the service manager (sd_notify(3): "READY=1",
// "STATUS=...", "WATCHDOG=1", "STOPPING=1").
type Notifier interface {
	Notify(state string) error
}

// Systemd is systemd's notifier; outside systemd ($NOTIFY_SOCKET unset)
// every call does nothing.
type Systemd struct{}

// Notify sends state to $NOTIFY_SOCKET.
func (Systemd) Notify(state string) error {
	_, err := sd.SdNotify(false, state)
	return err
}

// WatchdogInterval is systemd's WatchdogSec for this process (0: off).
func (Systemd) WatchdogInterval() time.Duration {
	d, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// Watchdog sends WATCHDOG=1 every interval/2 while alive answers nil
// within interval/2, until ctx ends; a zero interval (no watchdog) returns
// at once. A daemon whose loop is stuck must be restarted, not kept alive
// by a timer: alive should ask the loop that does the work. A check that
// does not answer is not started again until it has.
func Watchdog(ctx context.Context, n Notifier, interval time.Duration, alive func(context.Context) error, log *slog.Logger) {
	if interval <= 0 {
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	var pending chan error // the check still running, if any
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if pending == nil {
			pending = make(chan error, 1)
			go func(done chan<- error) {
				cctx, cancel := context.WithTimeout(ctx, interval/2)
				defer cancel()
				done <- alive(cctx)
			}(pending)
		}
		var err error
		select {
		case err = <-pending:
			pending = nil
		case <-time.After(interval / 2):
			err = fmt.Errorf("no answer within %s", interval/2)
		case <-ctx.Done():
			return
		}
		if err != nil {
			log.Error("liveness check failed; not pinging the watchdog", "op", "watchdog", "err", err)
			continue
		}
		if err := n.Notify("WATCHDOG=1"); err != nil {
			log.Debug("sd_notify", "op", "watchdog", "err", err)
		}
	}
}

// NewRegistry is a Prometheus registry with the Go runtime and process
// collectors; the daemon registers its own metrics on it.
func NewRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("daemon: metrics: %w", err)
		}
	}
	return reg, nil
}

// MetricsServer serves GET /metrics from g, every phase of a connection
// bounded; errors go to log (nil: discarded).
func MetricsServer(g prometheus.Gatherer, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}))
	return &http.Server{
		Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// WriteJSON answers code with v as JSON (with a trailing newline and its
// Content-Length); a v that cannot be encoded answers 500.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"daemon: encode response"}`)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// ShutdownGrace bounds the graceful shutdown of a server in Serve.
const ShutdownGrace = 5 * time.Second

// Serve serves srv on ln until ctx ends, then shuts it down gracefully
// (at most ShutdownGrace) and returns nil. A server that fails on its own
// returns that error.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("daemon: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("daemon: serve %s: %w", ln.Addr(), err)
	}
	return nil
}
