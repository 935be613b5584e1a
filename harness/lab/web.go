package lab

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// Web is the service the group protects: nginx from Debian when installed,
// else a small Go HTTP server. It listens on port 80 of every address of the
// guest, IPv4 and IPv6 (so it answers on the VIP once the VIP lands there) and answers
// "nginx on NAME".
type Web interface {
	// Kind is "nginx" or "go".
	Kind() string
	// Stop takes the service down (the fault the scenario injects).
	Stop() error
	// Start brings it back.
	Start() error
}

// StartWeb starts the web service in guest g.
func (l *Lab) StartWeb(g *Guest) (Web, error) {
	var w Web
	if path, err := exec.LookPath("nginx"); err == nil {
		w = &nginxWeb{l: l, g: g, bin: path, dir: filepath.Join(l.Dir, g.NS, "nginx")}
	} else {
		w = &goWeb{l: l, g: g}
	}
	return w, w.Start()
}

type nginxWeb struct {
	l    *Lab
	g    *Guest
	bin  string
	dir  string
	proc *Proc
}

func (n *nginxWeb) Kind() string { return "nginx" }

func (n *nginxWeb) Start() error {
	if err := os.MkdirAll(filepath.Join(n.dir, "logs"), 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen 80;
        listen [::]:80;
        location / { default_type text/plain; return 200 "nginx on %[2]s\n"; }
    }
}
`, n.dir, n.g.Name)
	path := filepath.Join(n.dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	p, err := n.l.Start(n.g.NS, "nginx-"+n.g.NS, nil, n.bin, "-e", filepath.Join(n.dir, "logs", "error.log"), "-p", n.dir, "-c", path)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

func (n *nginxWeb) Stop() error {
	if n.proc == nil {
		return errors.New("lab: nginx not started")
	}
	// nginx's master ends its workers on SIGTERM (fast shutdown).
	err := n.proc.Stop(5 * time.Second)
	n.proc = nil
	return err
}

type goWeb struct {
	l *Lab
	g *Guest

	mu  sync.Mutex
	srv *http.Server
}

func (w *goWeb) Kind() string { return "go" }

func (w *goWeb) Start() error {
	ln, err := w.l.Listen(w.g.NS, "tcp", ":80")
	if err != nil {
		return err
	}
	name := w.g.Name
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(rw, "nginx on %s\n", name)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	w.mu.Lock()
	w.srv = srv
	w.mu.Unlock()
	return nil
}

func (w *goWeb) Stop() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.srv == nil {
		return errors.New("lab: web not started")
	}
	err := w.srv.Close()
	w.srv = nil
	return err
}

// WaitTCP waits until addr accepts TCP connections from namespace n.
func (l *Lab) WaitTCP(n, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var c net.Conn
		err := l.InNS(n, func() error {
			var err error
			c, err = net.DialTimeout("tcp", addr, 500*time.Millisecond)
			return err
		})
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %s not reachable from %s after %s: %w", addr, n, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
