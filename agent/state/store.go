// Package state is vipkeeper-agent's state database (bbolt, agent.db in
// state_dir). It owns the persisted role and since when, the applied
// render hash and revision, the bounded transition history, the durable
// outbox of transitions to report to hostsync, the spool dedup record,
// the file's epoch and the last report outcomes. Store is safe for
// concurrent use; every write is one durable transaction.
package state

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/boltutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Buckets of the state database. Keys of history and outbox are the
// transition's sequence number, 8 bytes big-endian, so that cursor order
// is sequence order.
var (
	bucketState   = []byte("state")
	bucketHistory = []byte("history")
	bucketOutbox  = []byte("outbox")
	// bucketSpool holds the names of spool files whose event is recorded,
	// so that a crash between recording and deleting the file does not
	// record the event twice.
	bucketSpool = []byte("spool")
	keyState    = []byte("state")
	// bucketMeta holds facts about the file itself: keyEpoch, its identity.
	bucketMeta = []byte("meta")
	keyEpoch   = []byte("epoch")
	// bucketReports holds hostsync's answers (api.ReportOutcome) to the
	// last maxReports delivered transitions, keyed like the outbox.
	bucketReports = []byte("reports")
)

// maxReports bounds the report outcomes kept.
const maxReports = 16

var (
	// ErrStoreLocked is returned (wrapped) by OpenStore when another
	// process holds the database (another agent with the same state_dir).
	ErrStoreLocked = errors.New("state: state database is locked by another process")
	// ErrStoreCorrupt is returned (wrapped) by Store.Check when bbolt's
	// consistency check finds a problem.
	ErrStoreCorrupt = errors.New("state: state database is inconsistent")
)

// State is what the agent persists besides history and outbox.
type State struct {
	// Role is the last recorded role and Since when it started.
	Role  vrrp.Role `json:"role"`
	Since time.Time `json:"since,omitzero"`
	// VIPPresent is whether the VIP was on the interface at the last record.
	VIPPresent bool `json:"vip_present"`
	// VIP6Present is the same for the IPv6 VIP of a dual-stack group.
	VIP6Present bool `json:"vip6_present,omitempty"`
	// LastSeq is the sequence number of the last recorded transition and
	// LastAt its time.
	LastSeq uint64    `json:"last_seq"`
	LastAt  time.Time `json:"last_at,omitzero"`
	// Member, Group and VIP are this VM's member name, its group's name
	// and the VIP as of the last apply, so that events recorded before the
	// first apply after a restart carry them.
	Member string `json:"member,omitempty"`
	Group  string `json:"group,omitempty"`
	VIP    string `json:"vip,omitempty"`
	// VIP6 is the IPv6 VIP of a dual-stack group as of the last apply.
	VIP6 string `json:"vip6,omitempty"`
	// AppliedHash is the render hash of the files written and, when
	// keepalived runs, reloaded; Revision the metadata revision it came from.
	AppliedHash string    `json:"applied_hash,omitempty"`
	Revision    uint64    `json:"revision,omitempty"`
	LastApply   time.Time `json:"last_apply,omitzero"`
	// Scripts are the script file names the agent wrote into the scripts
	// dir, so that a script no longer rendered is removed (and nothing else).
	Scripts []string `json:"scripts,omitempty"`
}

// Store is the agent's bbolt state database. Its methods are safe for
// concurrent use (bbolt serialises writers); every write is one
// transaction, durable (fsynced) when the method returns.
type Store struct {
	db           *bolt.DB
	historyLimit uint64
	outbox       bool
	epoch        string
}

// StoreOptions tune OpenStore.
type StoreOptions struct {
	// Timeout bounds the wait for the file lock (default 2 s).
	Timeout time.Duration
	// HistoryLimit bounds the history (default 1000).
	HistoryLimit int
	// Outbox says whether recorded transitions also go to the outbox to be
	// reported; off when reporting is disabled.
	Outbox bool
}

// OpenStore opens (creating when missing) the database at path. A file
// that exists but is empty or damaged is refused with an error matching
// boltutil.ErrDamaged that names the file and what to do; bbolt's
// consistency check runs before anything is read.
func OpenStore(path string, opts StoreOptions) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.HistoryLimit <= 0 {
		opts.HistoryLimit = 1000
	}
	db, err := boltutil.Open(path, 0o600, opts.Timeout)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %s)", ErrStoreLocked, path, opts.Timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("state: open state: %w", err)
	}
	var epoch string
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketState, bucketHistory, bucketOutbox, bucketSpool, bucketMeta, bucketReports} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		var err error
		epoch, err = ensureEpoch(tx)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state: init state %s: %w", path, err)
	}
	return &Store{db: db, historyLimit: uint64(opts.HistoryLimit), outbox: opts.Outbox, epoch: epoch}, nil
}

// ensureEpoch returns the database's epoch, creating it when the database
// has none (a new file, or one written by a version before epochs).
func ensureEpoch(tx *bolt.Tx) (string, error) {
	b := tx.Bucket(bucketMeta)
	if v := b.Get(keyEpoch); v != nil {
		return string(v), nil
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("state: make the database epoch: %w", err)
	}
	epoch := hex.EncodeToString(raw[:])
	if err := b.Put(keyEpoch, []byte(epoch)); err != nil {
		return "", err
	}
	return epoch, nil
}

// Epoch identifies this database file: 16 hex digits drawn at random when
// the file was created (or first opened by a version with epochs). Every
// report carries it, so that hostsync treats the sequence numbers of a
// re-created database (a reinstall, a deleted or replaced agent.db) as a
// new stream instead of duplicates of the old one's.
func (s *Store) Epoch() string { return s.epoch }

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("state: close state: %w", err)
	}
	return nil
}

// Path is the database file.
func (s *Store) Path() string { return s.db.Path() }

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func getState(tx *bolt.Tx) (State, error) {
	st := State{Role: vrrp.RoleUnknown}
	v := tx.Bucket(bucketState).Get(keyState)
	if v == nil {
		return st, nil
	}
	if err := json.Unmarshal(v, &st); err != nil {
		return st, fmt.Errorf("state: decode state: %w", err)
	}
	return st, nil
}

func putState(tx *bolt.Tx, st State) error {
	v, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("state: encode state: %w", err)
	}
	return tx.Bucket(bucketState).Put(keyState, v)
}

// State returns the persisted state.
func (s *Store) State() (State, error) {
	var st State
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		st, err = getState(tx)
		return err
	})
	return st, err
}

// Record stores t as the next transition in one transaction: it assigns
// t.Seq (last + 1), sets the role (and since, when the role changes) and
// VIP presence, appends to the history (dropping the oldest beyond the
// limit) and to the outbox. When spoolName is not empty the transition
// comes from that spool file: if the name was recorded before, nothing is
// stored and dup is true.
func (s *Store) Record(t vrrp.Transition, spoolName string) (rec vrrp.Transition, dup bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		if spoolName != "" {
			if tx.Bucket(bucketSpool).Get([]byte(spoolName)) != nil {
				dup = true
				return nil
			}
			if err := tx.Bucket(bucketSpool).Put([]byte(spoolName), seqKey(0)); err != nil {
				return err
			}
		}
		st, err := getState(tx)
		if err != nil {
			return err
		}
		st.LastSeq++
		t.Seq = st.LastSeq
		if st.Role != t.To || st.Since.IsZero() {
			st.Since = t.At
		}
		st.Role = t.To
		st.VIPPresent = t.VIPPresent
		st.VIP6Present = t.VIP6Present != nil && *t.VIP6Present
		st.LastAt = t.At
		v, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("state: encode transition: %w", err)
		}
		hist := tx.Bucket(bucketHistory)
		if err := hist.Put(seqKey(t.Seq), v); err != nil {
			return err
		}
		if t.Seq > s.historyLimit {
			oldest := t.Seq - s.historyLimit // keep (oldest, seq]
			c := hist.Cursor()
			for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= oldest; k, _ = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		if s.outbox {
			if err := tx.Bucket(bucketOutbox).Put(seqKey(t.Seq), v); err != nil {
				return err
			}
		}
		rec = t
		return putState(tx, st)
	})
	if err != nil {
		return vrrp.Transition{}, false, fmt.Errorf("state: record transition: %w", err)
	}
	return rec, dup, nil
}

// ForgetSpool removes a spool file name recorded by Record, after the
// file itself is deleted.
func (s *Store) ForgetSpool(name string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSpool).Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("state: forget spool %s: %w", name, err)
	}
	return nil
}

// Applied describes a successful apply.
type Applied struct {
	Hash     string
	Revision uint64
	Scripts  []string
	Member   string
	Group    string
	VIP      string
	VIP6     string // "" without an IPv6 VIP
	At       time.Time
}

// SetApplied records a successful apply.
func (s *Store) SetApplied(ap Applied) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		st, err := getState(tx)
		if err != nil {
			return err
		}
		st.AppliedHash, st.Revision, st.Scripts, st.LastApply = ap.Hash, ap.Revision, ap.Scripts, ap.At
		st.Member, st.Group, st.VIP, st.VIP6 = ap.Member, ap.Group, ap.VIP, ap.VIP6
		return putState(tx, st)
	})
	if err != nil {
		return fmt.Errorf("state: record apply: %w", err)
	}
	return nil
}

// History returns the last limit transitions, oldest first (limit ≤ 0: all).
func (s *Store) History(limit int) ([]vrrp.Transition, error) {
	var out []vrrp.Transition
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var t vrrp.Transition
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("state: decode history %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Pending returns up to max unreported transitions, lowest sequence first.
func (s *Store) Pending(max int) ([]vrrp.Transition, error) {
	var out []vrrp.Transition
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.First(); k != nil && len(out) < max; k, v = c.Next() {
			var t vrrp.Transition
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("state: decode outbox %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, t)
		}
		return nil
	})
	return out, err
}

// PendingCount is the number of unreported transitions.
func (s *Store) PendingCount() (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketOutbox).Stats().KeyN
		return nil
	})
	return n, err
}

// Ack removes a delivered transition from the outbox.
func (s *Store) Ack(seq uint64) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Delete(seqKey(seq))
	})
	if err != nil {
		return fmt.Errorf("state: ack %d: %w", seq, err)
	}
	return nil
}

// AckReport removes a delivered transition from the outbox and keeps
// hostsync's answer to it (the last maxReports are kept), in one
// transaction.
func (s *Store) AckReport(o api.ReportOutcome) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketOutbox).Delete(seqKey(o.Seq)); err != nil {
			return err
		}
		v, err := json.Marshal(o)
		if err != nil {
			return err
		}
		b := tx.Bucket(bucketReports)
		// Keyed by arrival: a re-created database's seq 1 comes after the
		// old one's seq 7.
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := b.Put(seqKey(n), v); err != nil {
			return err
		}
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k)+maxReports <= n; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: ack %d: %w", o.Seq, err)
	}
	return nil
}

// Reports returns hostsync's answers to the last delivered transitions,
// oldest first.
func (s *Store) Reports() ([]api.ReportOutcome, error) {
	var out []api.ReportOutcome
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketReports).ForEach(func(k, v []byte) error {
			var o api.ReportOutcome
			if err := json.Unmarshal(v, &o); err != nil {
				return fmt.Errorf("state: decode report %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, o)
			return nil
		})
	})
	return out, err
}

// Check runs bbolt's consistency check and the agent's own invariants
// (history and outbox keys at most the last sequence number) and returns
// every problem joined, wrapping ErrStoreCorrupt.
func (s *Store) Check() error {
	return CheckDB(s.db)
}

// ReadState returns the persisted state of an open bbolt database, as
// Store.State does; with CheckDB it inspects a file without OpenStore
// (which creates missing buckets), e.g. one opened read-only.
func ReadState(db *bolt.DB) (State, error) {
	var st State
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		st, err = getState(tx)
		return err
	})
	return st, err
}

// CheckDB is Store.Check on an open bbolt database.
func CheckDB(db *bolt.DB) error {
	var errs []error
	err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		for _, name := range [][]byte{bucketState, bucketHistory, bucketOutbox, bucketSpool} {
			if tx.Bucket(name) == nil {
				errs = append(errs, fmt.Errorf("bucket %s missing", name))
			}
		}
		if len(errs) > 0 {
			return nil
		}
		st, err := getState(tx)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		for _, name := range [][]byte{bucketHistory, bucketOutbox} {
			k, _ := tx.Bucket(name).Cursor().Last()
			if k != nil && binary.BigEndian.Uint64(k) > st.LastSeq {
				errs = append(errs, fmt.Errorf("bucket %s has seq %d beyond last seq %d", name, binary.BigEndian.Uint64(k), st.LastSeq))
			}
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrStoreCorrupt, errors.Join(errs...))
	}
	return nil
}
