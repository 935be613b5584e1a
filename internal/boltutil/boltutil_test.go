package boltutil

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// makeDB writes a small database like a young agent.db (a few buckets
// with a few keys) and returns its path.
func makeDB(t *testing.T) string { return makeDBKeys(t, 8) }

func makeDBKeys(t *testing.T, keys int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(path, 0o600, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Several transactions, as a daemon writes: bbolt reuses the pages
	// the first ones freed, so pages 2 and 3 hold live data.
	for i := range keys {
		err = db.Update(func(tx *bolt.Tx) error {
			for _, name := range []string{"state", "history", "outbox"} {
				b, err := tx.CreateBucketIfNotExists([]byte(name))
				if err != nil {
					return err
				}
				if err := b.Put([]byte(fmt.Sprintf("key-%06d", i)), make([]byte, 100)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// Smash writes n random bytes at the start of page pg.
func smash(t *testing.T, path string, pg int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	rand.Read(buf)
	if _, err := f.WriteAt(buf, pg*int64(os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
}

func TestOpenDamaged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"page 2 overwritten", func(t *testing.T, path string) { smash(t, path, 2, 256) }},
		{"page 3 overwritten", func(t *testing.T, path string) { smash(t, path, 3, 256) }},
		{"both meta pages overwritten", func(t *testing.T, path string) { smash(t, path, 0, 256); smash(t, path, 1, 256) }},
		{"zero length", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"short garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("not a database"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := makeDB(t)
			tc.damage(t, path)
			before, _ := os.ReadFile(path)
			db, err := Open(path, 0o600, time.Second)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded on a damaged file")
			}
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("err = %v, want ErrDamaged", err)
			}
			var de *DamagedError
			if !errors.As(err, &de) || de.Path != path {
				t.Fatalf("err = %#v, want a *DamagedError naming %s", err, path)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "move it aside") {
				t.Errorf("message %q does not name the file and what to do", msg)
			}
			after, _ := os.ReadFile(path)
			if string(before) != string(after) {
				t.Error("the damaged file was changed")
			}
		})
	}
}

func TestOpenCreatesAndReopens(t *testing.T) {
	path := makeDB(t)
	db, err := Open(path, 0o600, time.Second)
	if err != nil {
		t.Fatalf("reopen a sound database: %v", err)
	}
	defer db.Close()
	if err := Check(db); err != nil {
		t.Fatalf("check: %v", err)
	}
}

func TestOpenLocked(t *testing.T) {
	path := makeDB(t)
	db, err := Open(path, 0o600, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = Open(path, 0o600, 50*time.Millisecond)
	if !errors.Is(err, berrors.ErrTimeout) || errors.Is(err, ErrDamaged) {
		t.Fatalf("err = %v, want bbolt's ErrTimeout and not ErrDamaged", err)
	}
}

// TestOpenNeverPanics damages each page of a larger database in turn:
// Open either opens a database that passes the check or says it is
// damaged, and never panics.
func TestOpenNeverPanics(t *testing.T) {
	src := makeDBKeys(t, 300)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	pages := int64(len(data) / os.Getpagesize())
	damaged := 0
	for pg := range pages {
		path := filepath.Join(t.TempDir(), "state.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		smash(t, path, pg, 256)
		db, err := Open(path, 0o600, time.Second)
		switch {
		case err == nil:
			db.Close()
		case errors.Is(err, ErrDamaged):
			damaged++
		default:
			t.Errorf("page %d: err = %v, want nil or ErrDamaged", pg, err)
		}
	}
	if damaged == 0 {
		t.Errorf("none of %d damaged pages was detected", pages)
	}
	t.Logf("%d of %d pages damaged detected", damaged, pages)
}
