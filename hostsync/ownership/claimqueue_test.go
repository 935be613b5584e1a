package ownership

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/internal/boltutil"
)

func openQueue(t *testing.T) *ClaimQueue {
	t.Helper()
	q, err := OpenClaimQueue(filepath.Join(t.TempDir(), ClaimQueueFile), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func TestClaimQueueOrderAndDurability(t *testing.T) {
	path := filepath.Join(t.TempDir(), ClaimQueueFile)
	q, err := OpenClaimQueue(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		tr := transition(uint64(i+1), "MASTER")
		if err := q.push(queuedClaim{Kind: queuedClaimKind, Addr: slave.Addr, Transition: &tr}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened (a restart): the entries are there, oldest first.
	q, err = OpenClaimQueue(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Len() != 3 {
		t.Fatalf("Len after reopen = %d, want 3", q.Len())
	}
	for want := uint64(1); want <= 3; want++ {
		key, e, err := q.first()
		if err != nil || e.Transition == nil || e.Transition.Seq != want {
			t.Fatalf("first = %d %+v %v, want seq %d", key, e, err, want)
		}
		if err := q.remove(key); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := q.first(); !errors.Is(err, errQueueEmpty) || q.Len() != 0 {
		t.Fatalf("drained queue: %v, Len %d", err, q.Len())
	}
}

// partitionHost is one host's Service on the test's own etcd.
// TestClaimQueueDamagedFile: the claim queue is a state file too; an
// empty or damaged one is refused with boltutil's error (naming the file,
// saying what to do), never a panic or a silently empty queue.
func TestClaimQueueDamagedFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"zero length", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"data pages overwritten", func(t *testing.T, path string) {
			// 256 bytes of junk over the head of every page past the two
			// meta pages: freelist, root and bucket pages alike.
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			ps := os.Getpagesize()
			for off := 2 * ps; off+256 <= len(data); off += ps {
				for i := range 256 {
					data[off+i] = byte(i*7 + 3)
				}
			}
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), ClaimQueueFile)
			q, err := OpenClaimQueue(path, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, path)
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("OpenClaimQueue panicked: %v", r)
					}
				}()
				q, err = OpenClaimQueue(path, time.Second)
			}()
			if err == nil {
				q.Close()
				t.Fatal("OpenClaimQueue opened a damaged file")
			}
			if !errors.Is(err, boltutil.ErrDamaged) {
				t.Fatalf("err = %v, want boltutil.ErrDamaged", err)
			}
		})
	}
}
