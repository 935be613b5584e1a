package testutil

import (
	"crypto/rand"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/vipkeeper/vipkeeper/internal/boltutil"
)

// RequireDamagedRefused is the shared check of a state file's opener (the
// agent's agent.db, hostsync's hostsync.db and claim queue): 256 random
// bytes over page 2, over page 3, and a zero-length file each make open
// return an error matching boltutil.ErrDamaged that names the file and
// says what to do — never a panic, never a silently new database. fresh
// returns the path of a good, closed database to damage (a new one per
// case).
func RequireDamagedRefused(t *testing.T, fresh func(t *testing.T) string, open func(path string) (io.Closer, error)) {
	t.Helper()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"page 2", func(t *testing.T, path string) { overwritePage(t, path, 2) }},
		{"page 3", func(t *testing.T, path string) { overwritePage(t, path, 3) }},
		{"zero length", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := fresh(t)
			tc.damage(t, path)
			var c io.Closer
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("open panicked: %v", r)
					}
				}()
				c, err = open(path)
			}()
			if err == nil {
				c.Close()
				t.Fatal("a damaged database was opened")
			}
			if !errors.Is(err, boltutil.ErrDamaged) {
				t.Fatalf("err = %v, want boltutil.ErrDamaged", err)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "move it aside") {
				t.Errorf("message %q does not name the file and what to do", msg)
			}
		})
	}
}

// overwritePage writes 256 random bytes at the start of page n of path.
func overwritePage(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := make([]byte, 256)
	rand.Read(junk)
	if _, err := f.WriteAt(junk, n*int64(os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
}
