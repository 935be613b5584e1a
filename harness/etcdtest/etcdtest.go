// Package etcdtest runs real etcd inside a test binary
// (go.etcd.io/etcd/server/v3/embed) on 127.0.0.1, for the tests and
// benchmarks of the etcd registry and of hostsync on etcd: one member
// (Start), or a cluster whose members are stopped and started one by one
// (StartCluster: a leader killed, quorum lost and back). A server can be
// stopped and started again on the same ports and data directory, which is
// how tests make etcd unreachable for a while. Needs no root.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds the wait for the server to become ready.
const startTimeout = 30 * time.Second

// Server is an embedded etcd. Its methods are safe for concurrent use.
type Server struct {
	// Immutable after Start.
	dir       string
	clientURL url.URL
	// advertURL is the client URL the member advertises: clientURL, or
	// for a unix socket (which etcd does not advertise) the unused
	// loopback port.
	advertURL url.URL
	peerURL   url.URL
	ownsDir   bool
	mu        sync.Mutex // guards e
	e         *embed.Etcd
}

// Start starts a server with its data under dir (a new temporary
// directory, removed by Close, when dir is empty).
func Start(dir string) (*Server, error) { return start(dir, "") }

// StartUnix is Start with the client URL on the unix socket at the
// absolute path socket ("unix:///PATH"), which processes in every network
// namespace of the machine reach (the peer URL stays on 127.0.0.1).
func StartUnix(dir, socket string) (*Server, error) {
	if !filepath.IsAbs(socket) {
		return nil, fmt.Errorf("etcdtest: socket %q is not an absolute path", socket)
	}
	return start(dir, socket)
}

func start(dir, socket string) (*Server, error) {
	s := &Server{dir: dir}
	if dir == "" {
		d, err := os.MkdirTemp("", "etcdtest-")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: %w", err)
		}
		s.dir, s.ownsDir = d, true
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	s.clientURL = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	s.advertURL = s.clientURL
	if socket != "" {
		s.clientURL = url.URL{Scheme: "unix", Path: socket}
	}
	s.peerURL = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	if err := s.Resume(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// freePorts asks the kernel for n unused loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Endpoints are the client URLs.
func (s *Server) Endpoints() []string { return []string{s.clientURL.String()} }

// Client returns a new client of the server; the caller closes it.
func (s *Server) Client() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdtest: client: %w", err)
	}
	return cli, nil
}

// Pause stops the server, keeping its data: clients see it unreachable
// until Resume.
func (s *Server) Pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Resume starts the (paused) server again on the same ports and data.
func (s *Server) Resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e != nil {
		return nil
	}
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = s.dir
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.advertURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Start errors are returned; the server's own log (which reports
	// its listeners closing on every Pause as errors) is kept quiet.
	cfg.LogLevel = "panic"
	cfg.Logger = "zap"
	cfg.LogOutputs = []string{"stderr"}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcdtest: start: %w", err)
	case <-time.After(startTimeout):
		e.Server.Stop()
		e.Close()
		return errors.New("etcdtest: server not ready in time")
	}
	s.e = e
	return nil
}

// Close stops the server and removes a data directory it created.
func (s *Server) Close() {
	s.Pause()
	if s.ownsDir {
		os.RemoveAll(s.dir)
	}
}
