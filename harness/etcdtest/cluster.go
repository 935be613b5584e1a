package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a real etcd cluster of embedded members on 127.0.0.1, each
// with its own data directory, that tests stop and start member by member
// (a leader killed, quorum lost and back). Its methods are safe for
// concurrent use.
type Cluster struct {
	// Immutable after StartCluster.
	dir     string
	members []*member
	initial string // the initial-cluster string naming every member
}

type member struct {
	name      string
	clientURL url.URL
	peerURL   url.URL
	mu        sync.Mutex // guards e
	e         *embed.Etcd
}

// StartCluster starts n members (3 for a quorum of 2) under a new
// temporary directory, removed by Close, and waits until they have a
// leader.
func StartCluster(n int) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("etcdtest: cluster of %d members", n)
	}
	dir, err := os.MkdirTemp("", "etcdtest-cluster-")
	if err != nil {
		return nil, fmt.Errorf("etcdtest: %w", err)
	}
	c := &Cluster{dir: dir}
	ports, err := freePorts(2 * n)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var initial []string
	for i := range n {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			clientURL: url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])},
			peerURL:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])},
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL.String())
	}
	c.initial = strings.Join(initial, ",")
	// Members become ready only together (a quorum elects a leader).
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = c.Start(i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Size is the number of members.
func (c *Cluster) Size() int { return len(c.members) }

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	out := make([]string, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m.clientURL.String())
	}
	return out
}

// Client returns a new client of every member; the caller closes it.
func (c *Cluster) Client() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcdtest: client: %w", err)
	}
	return cli, nil
}

// Stop stops member i, keeping its data (a crash of the process).
func (c *Cluster) Stop(i int) {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e != nil {
		m.e.Close()
		m.e = nil
	}
}

// Running reports whether member i runs.
func (c *Cluster) Running(i int) bool {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e != nil
}

// Start starts (or restarts) member i on its ports and data and waits
// until it is ready, which needs a quorum of the cluster running.
func (c *Cluster) Start(i int) error {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e != nil {
		return nil
	}
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = filepath.Join(c.dir, m.name)
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.InitialCluster = c.initial
	cfg.InitialClusterToken = "etcdtest-" + filepath.Base(c.dir)
	cfg.ClusterState = embed.ClusterStateFlagNew // ignored once the member has data
	cfg.LogLevel = "panic"
	cfg.Logger = "zap"
	cfg.LogOutputs = []string{"stderr"}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcdtest: start member %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcdtest: start member %s: %w", m.name, err)
	case <-time.After(startTimeout):
		e.Server.Stop()
		e.Close()
		return fmt.Errorf("etcdtest: member %s not ready in time (is a quorum running?)", m.name)
	}
	m.e = e
	return nil
}

// Leader returns the index of the member that is the leader now, as the
// running members see it; -1 when none knows one (no quorum).
func (c *Cluster) Leader() int {
	for _, m := range c.members {
		m.mu.Lock()
		e := m.e
		m.mu.Unlock()
		if e == nil {
			continue
		}
		lead := uint64(e.Server.Leader())
		if lead == 0 {
			continue
		}
		for i, o := range c.members {
			o.mu.Lock()
			oe := o.e
			o.mu.Unlock()
			if oe != nil && uint64(oe.Server.MemberID()) == lead {
				return i
			}
		}
	}
	return -1
}

// WaitLeader waits until a running member is the leader and returns its
// index.
func (c *Cluster) WaitLeader(ctx context.Context) (int, error) {
	for {
		if i := c.Leader(); i >= 0 {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("etcdtest: no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops every member and removes the data.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Stop(i)
	}
	os.RemoveAll(c.dir)
}
