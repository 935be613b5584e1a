package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrLeaseLost is returned (wrapped, together with ErrUnavailable) by
// Etcd.Update when the store is fenced (SetFence) and the host's lease is
// gone: it expired while the host was cut off from etcd for longer than
// its TTL, was revoked, or the host key was taken by another lease.
// Nothing was written. The host gets a new lease (AcquireHostLease) once
// it reaches etcd again; until then it must not write, since the other
// hosts may have moved on without it.
var ErrLeaseLost = errors.New("registry: this host's etcd lease is lost")

// hostsDir is where, under the prefix, the hosts' lease keys live.
const hostsDir = "_hosts/"

// fence is the lease key every commit requires, attached to lease (0: no
// lease yet, every commit fails).
type fence struct {
	key   string
	lease clientv3.LeaseID
}

// HostKey is the key of host's lease record: PREFIX "_hosts/" host.
func (s *Etcd) HostKey(host string) string { return s.prefix + hostsDir + host }

// SetFence makes every later commit of an Update require that key exists
// attached to lease, in the same etcd transaction as the writes; a commit
// that finds otherwise writes nothing and returns ErrLeaseLost. With
// lease 0 every commit fails so, without asking etcd (the host has no
// lease yet). An empty key removes the fence.
func (s *Etcd) SetFence(key string, lease clientv3.LeaseID) {
	if key == "" {
		s.fence.Store(nil)
		return
	}
	s.fence.Store(&fence{key: key, lease: lease})
}

// Fence returns the current fence ("" when there is none).
func (s *Etcd) Fence() (key string, lease clientv3.LeaseID) {
	if f := s.fence.Load(); f != nil {
		return f.key, f.lease
	}
	return "", 0
}

// FenceLost is signalled (without blocking; one pending signal at most)
// whenever a commit found the fence's lease gone, so that the lease's keeper
// can check the lease at once.
func (s *Etcd) FenceLost() <-chan struct{} { return s.fenceLost }

// AcquireHostLease grants a new lease of ttl (rounded up to whole seconds),
// puts HostKey(host) attached to it and fences this store's writes with
// it. It returns the lease, and the lease the key was attached to before
// (0: none; a live one of another process means two processes use one
// host identity). The caller keeps the lease alive (Client().KeepAlive).
func (s *Etcd) AcquireHostLease(ctx context.Context, host string, ttl time.Duration) (lease, previous clientv3.LeaseID, err error) {
	if s.closed.Load() {
		return 0, 0, ErrClosed
	}
	if host == "" {
		return 0, 0, errors.New("registry: etcd host lease: empty host")
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	if secs < 1 {
		return 0, 0, fmt.Errorf("registry: etcd host lease: ttl %s is not positive", ttl)
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	g, err := s.cli.Grant(cctx, secs)
	if err != nil {
		return 0, 0, etcdFailed(ctx, "grant lease", err)
	}
	key := s.HostKey(host)
	resp, err := s.cli.Put(cctx, key, host, clientv3.WithLease(g.ID), clientv3.WithPrevKV())
	if err != nil {
		// Best effort: the lease would expire by itself anyway.
		s.revoke(g.ID)
		return 0, 0, etcdFailed(ctx, "put "+key, err)
	}
	if resp.PrevKv != nil {
		previous = clientv3.LeaseID(resp.PrevKv.Lease)
	}
	s.SetFence(key, g.ID)
	return g.ID, previous, nil
}

// HostLeaseHeld reports whether HostKey(host) is attached to lease now.
func (s *Etcd) HostLeaseHeld(ctx context.Context, host string, lease clientv3.LeaseID) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := s.HostKey(host)
	resp, err := s.cli.Get(cctx, key)
	if err != nil {
		return false, etcdFailed(ctx, "get "+key, err)
	}
	return len(resp.Kvs) > 0 && clientv3.LeaseID(resp.Kvs[0].Lease) == lease, nil
}

// ReleaseHostLease revokes lease (deleting the host key), bounded by the
// request timeout even when ctx has ended, e.g. at shutdown. The fence
// stays: later writes fail with ErrLeaseLost.
func (s *Etcd) ReleaseHostLease(lease clientv3.LeaseID) error {
	if err := s.revoke(lease); err != nil {
		return etcdFailed(context.Background(), "revoke lease", err)
	}
	return nil
}

func (s *Etcd) revoke(lease clientv3.LeaseID) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	_, err := s.cli.Revoke(ctx, lease)
	return err
}

// fenceCompare returns the compare and the else-read that guard a commit
// with the fence (nil: no fence), or ErrLeaseLost when the fence has no
// lease yet.
func (s *Etcd) fenceCompare() (*fence, []clientv3.Cmp, []clientv3.Op, error) {
	f := s.fence.Load()
	if f == nil {
		return nil, nil, nil, nil
	}
	if f.lease == 0 {
		return nil, nil, nil, s.leaseLost(f, "no lease yet")
	}
	return f, []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(f.key), "=", int64(f.lease))},
		[]clientv3.Op{clientv3.OpGet(f.key)}, nil
}

// fenceFailed tells, from the else-read of a failed commit, whether the
// fence failed (ErrLeaseLost) rather than a read compare (nil: conflict).
func (s *Etcd) fenceFailed(f *fence, resp *clientv3.TxnResponse) error {
	if f == nil || len(resp.Responses) == 0 {
		return nil
	}
	r := resp.Responses[0].GetResponseRange()
	if r == nil {
		return nil
	}
	if len(r.Kvs) == 0 {
		return s.leaseLost(f, "the host key is gone (the lease expired or was revoked)")
	}
	if l := clientv3.LeaseID(r.Kvs[0].Lease); l != f.lease {
		return s.leaseLost(f, fmt.Sprintf("the host key is held by lease %x", int64(l)))
	}
	return nil
}

func (s *Etcd) leaseLost(f *fence, why string) error {
	if f.lease != 0 {
		select {
		case s.fenceLost <- struct{}{}:
		default:
		}
	}
	return fmt.Errorf("registry: etcd commit: %w: %w (%s, lease %x): %s", ErrLeaseLost, ErrUnavailable, f.key, int64(f.lease), why)
}
