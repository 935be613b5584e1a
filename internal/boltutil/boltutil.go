// Package boltutil opens vipkeeper's bbolt state databases (the agent's
// agent.db, hostsync's hostsync.db) the one careful way: a zero-length
// file that exists is refused instead of silently becoming a new
// database, bbolt's panics on a damaged file are turned into an error, and
// bbolt's own consistency check runs before the caller touches the data.
// Every such refusal is a *DamagedError (errors.Is ErrDamaged) whose text
// names the file and says what to do, so a daemon can print it and exit
// non-zero instead of dying with a stack trace.
package boltutil

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrDamaged is matched (errors.Is) by the error Open returns when the
// file exists but is empty, cannot be read as a bbolt database, makes
// bbolt panic, or fails bbolt's consistency check. The database is left
// as it was: nothing is repaired or overwritten.
var ErrDamaged = errors.New("boltutil: state database is damaged")

// DamagedError says which file is damaged and why.
type DamagedError struct {
	Path  string
	Cause error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("state database %s is damaged (%v): move it aside (mv %s %s.damaged) and start again to begin with an empty database, or restore it from a backup",
		e.Path, e.Cause, e.Path, e.Path)
}

// Is makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// Unwrap returns the cause (a bbolt error, or the check's findings).
func (e *DamagedError) Unwrap() error { return e.Cause }

// errEmpty is the cause for a zero-length file.
var errEmpty = errors.New("the file exists but is empty (0 bytes)")

// Open opens (creating when missing, with mode) the bbolt database at
// path, waiting at most timeout for its file lock (timeout must be > 0:
// bbolt would wait forever). It returns a *DamagedError when the file is
// damaged (see ErrDamaged); a lock that is not released in time is
// bbolt's errors.ErrTimeout, wrapped. On success the database passed
// bbolt's consistency check (Tx.Check).
func Open(path string, mode os.FileMode, timeout time.Duration) (*bolt.DB, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("boltutil: open %s: the lock timeout must be positive, got %s", path, timeout)
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.Mode().IsRegular() && fi.Size() == 0:
		return nil, &DamagedError{Path: path, Cause: errEmpty}
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("boltutil: open %s: %w", path, err)
	}
	db, err := open(path, mode, timeout)
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("boltutil: %s: waited %s for the lock (another process holds it): %w", path, timeout, err)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum),
			errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, errPanicked):
			return nil, &DamagedError{Path: path, Cause: err}
		}
		return nil, fmt.Errorf("boltutil: open %s: %w", path, err)
	}
	if err := Check(db); err != nil {
		closeQuietly(db)
		return nil, &DamagedError{Path: path, Cause: err}
	}
	return db, nil
}

// errPanicked marks a panic of bbolt turned into an error.
var errPanicked = errors.New("bbolt panicked")

func open(path string, mode os.FileMode, timeout time.Duration) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			// The file lock and mapping of the half-opened database are
			// released when the process exits, which is what a daemon does
			// with this error.
			db, err = nil, fmt.Errorf("%w while reading the file: %v", errPanicked, r)
		}
	}()
	return bolt.Open(path, mode, &bolt.Options{Timeout: timeout})
}

// Check runs bbolt's consistency check on db and returns every problem it
// finds, joined (nil when the database is consistent). A panic of bbolt
// while reading is reported as a problem too.
func Check(db *bolt.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w during the consistency check: %v", errPanicked, r)
		}
	}()
	var errs []error
	verr := db.View(func(tx *bolt.Tx) error {
		// Read the channel to its end (the checker's goroutine blocks
		// otherwise) but keep the first few findings only.
		n := 0
		for err := range tx.Check() {
			if n++; n <= 10 {
				errs = append(errs, err)
			}
		}
		if n > 10 {
			errs = append(errs, fmt.Errorf("and %d more", n-10))
		}
		return nil
	})
	if verr != nil {
		errs = append(errs, verr)
	}
	if len(errs) > 0 {
		return fmt.Errorf("consistency check: %w", errors.Join(errs...))
	}
	return nil
}

func closeQuietly(db *bolt.DB) {
	defer func() { _ = recover() }()
	_ = db.Close()
}
