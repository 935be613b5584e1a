package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/vipkeeper/vipkeeper/internal/boltutil"
)

// DefaultOpenTimeout bounds the wait for bbolt's file lock when another
// process holds the database.
const DefaultOpenTimeout = 5 * time.Second

// Bolt is the embedded Store: one bbolt file, one bucket per record type,
// JSON values. bbolt serializes read-write transactions, which is what makes
// a rule check followed by a write inside Update race-free.
type Bolt struct {
	db      *bolt.DB
	commits groupCommit // Batch's queue
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating when absent, mode 0600, parent directory 0700)
// the database at path. timeout bounds the wait for the file lock (zero
// means DefaultOpenTimeout; bbolt itself would wait forever). A file that
// exists but is empty or damaged is refused with an error matching
// boltutil.ErrDamaged that names the file and what to do; bbolt's
// consistency check runs before anything is read.
func OpenBolt(path string, timeout time.Duration) (*Bolt, error) {
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("registry: create directory of %s: %w", path, err)
	}
	db, err := boltutil.Open(path, 0o600, timeout)
	if err != nil {
		return nil, fmt.Errorf("registry: open: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range Buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("registry: create buckets in %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Path is the database file.
func (s *Bolt) Path() string { return s.db.Path() }

// View runs fn in a read-only transaction.
func (s *Bolt) View(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.wrap(s.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) }))
}

// Update runs fn in a read-write transaction, committed when fn returns nil.
func (s *Bolt) Update(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.wrap(s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) }))
}

func (s *Bolt) wrap(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Close closes the database.
func (s *Bolt) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("registry: close: %w", err)
	}
	return nil
}

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) bucket(b Bucket) (*bolt.Bucket, error) {
	bk := t.tx.Bucket([]byte(b))
	if bk == nil {
		return nil, fmt.Errorf("registry: unknown bucket %q", b)
	}
	return bk, nil
}

func (t boltTx) Get(b Bucket, key string, v any) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	data := bk.Get([]byte(key))
	if data == nil {
		return fmt.Errorf("%w: %s %q", ErrNotFound, b, key)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("registry: decode %s/%s: %w", b, key, err)
	}
	return nil
}

func (t boltTx) Put(b Bucket, key string, v any) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("registry: encode %s/%s: %w", b, key, err)
	}
	if err := bk.Put([]byte(key), data); err != nil {
		return fmt.Errorf("registry: put %s/%s: %w", b, key, err)
	}
	return nil
}

func (t boltTx) Delete(b Bucket, key string) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	if err := bk.Delete([]byte(key)); err != nil {
		return fmt.Errorf("registry: delete %s/%s: %w", b, key, err)
	}
	return nil
}

func (t boltTx) ForEach(b Bucket, prefix string, fn func(key string, value []byte) error) error {
	bk, err := t.bucket(b)
	if err != nil {
		return err
	}
	c := bk.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}
