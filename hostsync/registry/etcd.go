package registry

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vipkeeper/vipkeeper/internal/wait"
)

// Defaults of the etcd store.
const (
	// DefaultEtcdPrefix is where the registry lives in etcd.
	DefaultEtcdPrefix = "/vipkeeper/"
	// DefaultEtcdAttempts bounds how often Update runs fn again after a
	// conflicting commit of another writer.
	DefaultEtcdAttempts = 64
	// DefaultEtcdDialTimeout bounds the first connection to etcd.
	DefaultEtcdDialTimeout = 5 * time.Second
	// DefaultEtcdRequestTimeout bounds one read or commit, so that a
	// caller without a deadline is not held while etcd is unreachable.
	DefaultEtcdRequestTimeout = 5 * time.Second
)

// maxPointCompares is how many single keys of one bucket an Update
// guards with their own compare before it guards the whole bucket
// instead (etcd limits a transaction to 128 operations by default).
const maxPointCompares = 12

// ErrConflict is returned (wrapped) by Etcd.Update when other writers kept
// committing conflicting changes for DefaultEtcdAttempts runs of fn.
var ErrConflict = errors.New("registry: transaction kept conflicting")

// Etcd is the shared Store: every hostsync and gateway of a deployment
// reads and writes one registry in etcd.
//
// Layout: a record is the JSON value at PREFIX BUCKET "/" KEY; every
// commit that writes a bucket also writes PREFIX "_rev/" BUCKET, so a
// reader of a range can tell that the range changed.
//
// Transactions are optimistic. View reads every key at one etcd revision
// (a consistent snapshot). Update runs fn against the same snapshot,
// buffering its writes and noting what it read: the mod revision of every
// key it got (0 when absent), and for a ForEach the bucket's "_rev" key.
// It then commits in one etcd Txn: if all of those are unchanged, the
// writes are applied; otherwise fn runs again on a fresh snapshot (hence
// the Store contract that fn has no side effects). Updates are therefore
// serializable, as on bbolt, and the owner record in particular is a
// compare-and-swap on its key's mod revision: a host that read an older
// owner can never overwrite a newer one.
//
// A host's store may be fenced with its etcd lease (SetFence,
// AcquireHostLease): every commit then also requires the host's key
// PREFIX "_hosts/" HOST to be attached to that lease, so a host whose
// lease expired (cut off from etcd longer than the TTL) can commit
// nothing, even where its reads are still current (ErrLeaseLost).
type Etcd struct {
	// Immutable after NewEtcd.
	cli       *clientv3.Client
	prefix    string
	attempts  int
	timeout   time.Duration
	ownClient bool
	fenceLost chan struct{}

	closed atomic.Bool
	fence  atomic.Pointer[fence] // see SetFence
}

var _ Store = (*Etcd)(nil)
var _ Watcher = (*Etcd)(nil)

// EtcdOptions configures NewEtcd. Zero values are the defaults.
type EtcdOptions struct {
	// Prefix of every key (default DefaultEtcdPrefix); it must start and
	// end with "/".
	Prefix string
	// Attempts bounds the runs of fn in one Update (default
	// DefaultEtcdAttempts).
	Attempts int
	// RequestTimeout bounds each read and commit (default
	// DefaultEtcdRequestTimeout).
	RequestTimeout time.Duration
}

// NewEtcd returns a Store on cli. Close does not close cli.
func NewEtcd(cli *clientv3.Client, opts EtcdOptions) (*Etcd, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultEtcdPrefix
	}
	if !strings.HasPrefix(opts.Prefix, "/") || !strings.HasSuffix(opts.Prefix, "/") {
		return nil, fmt.Errorf("registry: etcd prefix %q must start and end with /", opts.Prefix)
	}
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultEtcdAttempts
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultEtcdRequestTimeout
	}
	return &Etcd{cli: cli, prefix: opts.Prefix, attempts: opts.Attempts, timeout: opts.RequestTimeout,
		fenceLost: make(chan struct{}, 1)}, nil
}

// EtcdConfig is how OpenEtcd reaches etcd.
type EtcdConfig struct {
	// Endpoints are etcd's client URLs (http:// or https://).
	Endpoints []string
	// DialTimeout bounds the first connection (default
	// DefaultEtcdDialTimeout).
	DialTimeout time.Duration
	// CAFile verifies the servers (PEM); empty uses the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate (PEM), both or
	// neither.
	CertFile, KeyFile string
	// Prefix: see EtcdOptions.Prefix.
	Prefix string
	// RequestTimeout: see EtcdOptions.RequestTimeout.
	RequestTimeout time.Duration
}

// OpenEtcd connects to etcd and returns a Store that closes its client on
// Close. TLS is used when any endpoint is https:// or a file is set.
func OpenEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("registry: etcd: no endpoints")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultEtcdDialTimeout
	}
	tlsCfg, err := etcdTLS(cfg)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, TLS: tlsCfg, Logger: zap.NewNop(),
		// Keepalive pings notice a dead connection so that the client
		// moves to another endpoint; each request has its own deadline.
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: etcd %v: %w", cfg.Endpoints, err)
	}
	s, err := NewEtcd(cli, EtcdOptions{Prefix: cfg.Prefix, RequestTimeout: cfg.RequestTimeout})
	if err != nil {
		cli.Close()
		return nil, err
	}
	s.ownClient = true
	return s, nil
}

// etcdTLS builds the client's TLS configuration (nil: plain http).
func etcdTLS(cfg EtcdConfig) (*tls.Config, error) {
	https := slices.ContainsFunc(cfg.Endpoints, func(e string) bool { return strings.HasPrefix(e, "https://") })
	if !https && cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("registry: etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry: etcd CA: no PEM certificate in %s", cfg.CAFile)
		}
		c.RootCAs = pool
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("registry: etcd: cert_file and key_file go together")
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("registry: etcd client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Client is the etcd client the store uses.
func (s *Etcd) Client() *clientv3.Client { return s.cli }

// Prefix is the key prefix of the registry.
func (s *Etcd) Prefix() string { return s.prefix }

// Close stops the store (and closes the client OpenEtcd made). Later
// calls return ErrClosed.
func (s *Etcd) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.ownClient {
		if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("registry: close etcd client: %w", err)
		}
	}
	return nil
}

// View runs fn on a consistent snapshot (one etcd revision).
func (s *Etcd) View(ctx context.Context, fn func(Tx) error) error {
	for range s.attempts {
		if s.closed.Load() {
			return ErrClosed
		}
		tx := s.newTx(ctx, false)
		err := fn(tx)
		if errors.Is(err, rpctypes.ErrCompacted) {
			continue // the snapshot was compacted away: take a newer one
		}
		return err
	}
	return fmt.Errorf("%w: view", ErrConflict)
}

// Update runs fn and commits its writes when nothing it read has changed
// since; otherwise it runs fn again on a fresh snapshot, at most
// Attempts times (then ErrConflict).
func (s *Etcd) Update(ctx context.Context, fn func(Tx) error) error {
	for attempt := range s.attempts {
		if s.closed.Load() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		tx := s.newTx(ctx, true)
		err := fn(tx)
		if errors.Is(err, rpctypes.ErrCompacted) {
			continue
		}
		if err != nil {
			return err
		}
		ok, err := tx.commit()
		if errors.Is(err, rpctypes.ErrCompacted) {
			continue
		}
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		// Another writer committed first: back off a little, randomly,
		// so that contending writers do not collide again in step.
		if err := wait.Sleep(ctx, time.Duration(rand.IntN(attempt+1)+1)*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: %d attempts", ErrConflict, s.attempts)
}

// etcdFailed wraps a failed request, with ErrUnavailable when etcd could
// not be reached in time and the caller's ctx is still live.
func etcdFailed(ctx context.Context, what string, err error) error {
	if ctx.Err() == nil && etcdUnreachable(err) {
		return fmt.Errorf("registry: etcd %s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("registry: etcd %s: %w", what, err)
}

// etcdUnreachable reports whether err says etcd could not serve the
// request now (as opposed to refusing it): no connection, no leader, a
// leader change, or a deadline, the client's or the server's. etcd 3.4
// reports its own server-side deadline (a proposal not applied in time,
// typically during a leader election) as gRPC code Unknown with the
// message "context deadline exceeded"; the client passes that through
// as it is, so it is recognised by code and message.
func etcdUnreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.Unknown:
		if s, ok := status.FromError(err); ok && strings.Contains(s.Message(), context.DeadlineExceeded.Error()) {
			return true
		}
	}
	// The client turns etcd's known errors into rpctypes.EtcdError
	// values, which carry no gRPC status: every one with code
	// Unavailable (no leader, leader changed, request timed out, ...)
	// is etcd not serving now; "not leader" (FailedPrecondition) is a
	// member that lost its leadership, a leader change too.
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) && ee.Code() == codes.Unavailable {
		return true
	}
	return errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) || errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) ||
		errors.Is(err, rpctypes.ErrLeaderChanged) || errors.Is(err, rpctypes.ErrNotLeader) || errors.Is(err, rpctypes.ErrStopped)
}

func (s *Etcd) newTx(ctx context.Context, write bool) *etcdTx {
	tx := &etcdTx{s: s, ctx: ctx, write: write}
	if write {
		tx.reads = map[string]int64{}
		tx.points = map[Bucket]int{}
		tx.ranged = map[Bucket]bool{}
		tx.writes = map[string]etcdWrite{}
	}
	return tx
}

func (s *Etcd) key(b Bucket, key string) string { return s.prefix + string(b) + "/" + key }
func (s *Etcd) revKey(b Bucket) string          { return s.prefix + "_rev/" + string(b) }

// etcdWrite is a buffered Put (value) or Delete (del).
type etcdWrite struct {
	bucket Bucket
	value  []byte
	del    bool
}

// etcdTx reads at one revision and, in an Update, buffers writes.
type etcdTx struct {
	s     *Etcd
	ctx   context.Context
	write bool
	// rev is the snapshot revision, fixed by the first read (0: none yet).
	rev int64
	// reads holds the mod revision seen of every key got (0: absent).
	reads map[string]int64
	// points counts the keys got per bucket; ranged marks buckets read
	// with ForEach (guarded by their "_rev" key).
	points map[Bucket]int
	ranged map[Bucket]bool
	writes map[string]etcdWrite
}

func (t *etcdTx) checkBucket(b Bucket) error {
	if !slices.Contains(Buckets, b) {
		return fmt.Errorf("registry: unknown bucket %q", b)
	}
	return nil
}

// get reads at the snapshot revision, fixing it on the first read.
func (t *etcdTx) get(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.s.timeout)
	defer cancel()
	resp, err := t.s.cli.Get(ctx, key, opts...)
	if err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			return nil, err
		}
		return nil, etcdFailed(t.ctx, "get "+key, err)
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	return resp, nil
}

func (t *etcdTx) Get(b Bucket, key string, v any) error {
	if err := t.checkBucket(b); err != nil {
		return err
	}
	k := t.s.key(b, key)
	var data []byte
	if w, ok := t.writes[k]; ok {
		if w.del {
			return fmt.Errorf("%w: %s %q", ErrNotFound, b, key)
		}
		data = w.value
	} else {
		resp, err := t.get(k)
		if err != nil {
			return err
		}
		var mod int64
		if len(resp.Kvs) > 0 {
			data, mod = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
		}
		if t.write {
			if _, seen := t.reads[k]; !seen {
				t.points[b]++
			}
			t.reads[k] = mod
		}
		if data == nil {
			return fmt.Errorf("%w: %s %q", ErrNotFound, b, key)
		}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("registry: decode %s/%s: %w", b, key, err)
	}
	return nil
}

func (t *etcdTx) Put(b Bucket, key string, v any) error {
	if err := t.checkBucket(b); err != nil {
		return err
	}
	if !t.write {
		return fmt.Errorf("registry: put %s/%s in a read-only transaction", b, key)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("registry: encode %s/%s: %w", b, key, err)
	}
	t.writes[t.s.key(b, key)] = etcdWrite{bucket: b, value: data}
	return nil
}

func (t *etcdTx) Delete(b Bucket, key string) error {
	if err := t.checkBucket(b); err != nil {
		return err
	}
	if !t.write {
		return fmt.Errorf("registry: delete %s/%s in a read-only transaction", b, key)
	}
	t.writes[t.s.key(b, key)] = etcdWrite{bucket: b, del: true}
	return nil
}

func (t *etcdTx) ForEach(b Bucket, prefix string, fn func(key string, value []byte) error) error {
	if err := t.checkBucket(b); err != nil {
		return err
	}
	base := t.s.key(b, "")
	resp, err := t.get(base+prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return err
	}
	type kv struct {
		key   string
		value []byte
	}
	var kvs []kv
	for _, e := range resp.Kvs {
		kvs = append(kvs, kv{string(e.Key), e.Value})
	}
	if t.write {
		t.ranged[b] = true
		// Overlay this transaction's own writes.
		for k, w := range t.writes {
			if w.bucket != b || !strings.HasPrefix(k, base+prefix) {
				continue
			}
			i, found := slices.BinarySearchFunc(kvs, k, func(e kv, k string) int { return strings.Compare(e.key, k) })
			switch {
			case w.del && found:
				kvs = slices.Delete(kvs, i, i+1)
			case !w.del && found:
				kvs[i].value = w.value
			case !w.del:
				kvs = slices.Insert(kvs, i, kv{k, w.value})
			}
		}
	}
	for _, e := range kvs {
		if err := fn(strings.TrimPrefix(e.key, base), e.value); err != nil {
			return err
		}
	}
	return nil
}

// commit applies the buffered writes if nothing read has changed; false
// means a conflict (nothing written).
func (t *etcdTx) commit() (bool, error) {
	if len(t.writes) == 0 {
		// Nothing to write: the reads were of one snapshot, which is a
		// serializable outcome already.
		return true, nil
	}
	f, cmps, orElse, err := t.s.fenceCompare()
	if err != nil {
		return false, err
	}
	guard := map[Bucket]bool{}
	for b := range t.ranged {
		guard[b] = true
	}
	for b, n := range t.points {
		if n > maxPointCompares {
			guard[b] = true
		}
	}
	for k, mod := range t.reads {
		if guard[t.bucketOf(k)] {
			continue
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", mod))
	}
	for b := range guard {
		mod := int64(0)
		if t.rev != 0 {
			resp, err := t.get(t.s.revKey(b))
			if err != nil {
				return false, err
			}
			if len(resp.Kvs) > 0 {
				mod = resp.Kvs[0].ModRevision
			}
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(t.s.revKey(b)), "=", mod))
	}
	var ops []clientv3.Op
	touched := map[Bucket]bool{}
	keys := make([]string, 0, len(t.writes))
	for k := range t.writes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w := t.writes[k]
		touched[w.bucket] = true
		if w.del {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(w.value)))
		}
	}
	for _, b := range Buckets {
		if touched[b] {
			ops = append(ops, clientv3.OpPut(t.s.revKey(b), ""))
		}
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.s.timeout)
	defer cancel()
	resp, err := t.s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(orElse...).Commit()
	if err != nil {
		return false, etcdFailed(t.ctx, "commit", err)
	}
	if !resp.Succeeded {
		if err := t.s.fenceFailed(f, resp); err != nil {
			return false, err
		}
	}
	return resp.Succeeded, nil
}

// bucketOf returns the bucket of a full record key.
func (t *etcdTx) bucketOf(k string) Bucket {
	rest := strings.TrimPrefix(k, t.s.prefix)
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return Bucket(rest[:i])
	}
	return ""
}

// Change is one changed record seen by a Watcher.
type Change struct {
	Bucket  Bucket
	Key     string
	Deleted bool
	// Revision is the etcd revision of the change.
	Revision int64
}

// Watcher is implemented by stores shared between processes (Etcd): it
// tells a process that another one changed the registry.
type Watcher interface {
	// Watch calls fn with no changes once the watch is established (and
	// again whenever it had to be re-established, since changes may have
	// been missed: the caller re-reads everything), then with every batch
	// of changed records, from one goroutine, until ctx ends; it returns
	// ctx's error, or ErrClosed.
	Watch(ctx context.Context, fn func([]Change)) error
}

// watchRetry is the pause before a broken watch is set up again.
const watchRetry = 200 * time.Millisecond

// Watch implements Watcher on the whole registry prefix.
func (s *Etcd) Watch(ctx context.Context, fn func([]Change)) error {
	for {
		if s.closed.Load() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		s.watchOnce(ctx, fn)
		if err := wait.Sleep(ctx, watchRetry); err != nil {
			return err
		}
	}
}

// watchOnce runs one etcd watch until it breaks or ctx ends.
func (s *Etcd) watchOnce(ctx context.Context, fn func([]Change)) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	ch := s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	revPrefix := []byte(s.prefix + "_rev/")
	hostsPrefix := []byte(s.prefix + hostsDir)
	for resp := range ch {
		if err := resp.Err(); err != nil {
			return
		}
		if resp.Created {
			fn(nil)
			continue
		}
		var out []Change
		for _, ev := range resp.Events {
			if bytes.HasPrefix(ev.Kv.Key, revPrefix) || bytes.HasPrefix(ev.Kv.Key, hostsPrefix) {
				continue
			}
			rest := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
			b, key, _ := strings.Cut(rest, "/")
			out = append(out, Change{Bucket: Bucket(b), Key: key, Deleted: ev.Type == clientv3.EventTypeDelete, Revision: ev.Kv.ModRevision})
		}
		if len(out) > 0 {
			fn(out)
		}
	}
}

// ValidEndpoint reports whether ep is an etcd client URL hostsync takes:
// http:// or https:// with a host and port, or unix:// with an absolute
// socket path (an etcd on the same machine).
func ValidEndpoint(ep string) bool {
	u, err := url.Parse(ep)
	if err != nil || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return false
	}
	switch u.Scheme {
	case "http", "https":
		return u.Host != "" && u.Port() != "" && (u.Path == "" || u.Path == "/")
	case "unix":
		return u.Host == "" && filepath.IsAbs(u.Path) && filepath.Clean(u.Path) == u.Path
	}
	return false
}
