package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// counter is a record every batch function increments: read, +1, write.
func bumpCounter(tx Tx) (int, error) {
	var n int
	if err := tx.Get(BucketRoles, "counter", &n); err != nil && !errors.Is(err, ErrNotFound) {
		return 0, err
	}
	n++
	return n, tx.Put(BucketRoles, "counter", n)
}

func TestBatch(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		errBoom := errors.New("boom")
		const calls = 20
		var wg sync.WaitGroup
		errs := make([]error, calls)
		for i := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = Batch(ctx, s, func(tx Tx) error {
					if _, err := bumpCounter(tx); err != nil {
						return err
					}
					if i == 7 {
						return errBoom
					}
					return tx.Put(BucketRoles, fmt.Sprintf("k%02d", i), i)
				})
			}()
		}
		wg.Wait()
		var n int
		err := s.View(ctx, func(tx Tx) error {
			for i := range calls {
				var v int
				err := tx.Get(BucketRoles, fmt.Sprintf("k%02d", i), &v)
				if i == 7 {
					if !errors.Is(err, ErrNotFound) {
						return fmt.Errorf("the failed function's write is there: %v", err)
					}
					continue
				}
				if err != nil {
					return err
				}
			}
			return tx.Get(BucketRoles, "counter", &n)
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, err := range errs {
			switch {
			case i == 7:
				if !errors.Is(err, errBoom) {
					t.Errorf("call 7: %v, want its own error", err)
				}
			case err != nil:
				t.Errorf("call %d: %v", i, err)
			}
		}
		if n != calls-1 {
			t.Errorf("counter %d, want %d: every committed function once", n, calls-1)
		}
	})
}

// TestBoltBatchGroupsWaiters checks the group commit: calls that queue
// while a commit runs are committed together in the next transaction,
// a failing one alone, and each answer comes after its commit.
func TestBoltBatchGroupsWaiters(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	errBoom := errors.New("boom")
	release := make(chan struct{})
	first := make(chan error, 1)
	var once sync.Once
	go func() {
		first <- s.Batch(ctx, func(tx Tx) error {
			once.Do(func() { <-release }) // hold the commit while others queue
			_, err := bumpCounter(tx)
			return err
		})
	}()
	const waiters = 16
	var mu sync.Mutex
	txOf := map[int]int{} // call -> bbolt tx id of its last run
	var wg sync.WaitGroup
	errs := make([]error, waiters)
	waitQueued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s.commits.mu.Lock()
			l, busy := len(s.commits.pending), s.commits.busy
			s.commits.mu.Unlock()
			if busy && l == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d calls queued, want %d", l, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitQueued(0) // the first call leads, its commit held
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Batch(ctx, func(tx Tx) error {
				mu.Lock()
				txOf[i] = tx.(boltTx).tx.ID()
				mu.Unlock()
				if _, err := bumpCounter(tx); err != nil {
					return err
				}
				if i == 3 {
					return errBoom
				}
				return nil
			})
		}()
	}
	waitQueued(waiters)
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	ids := map[int]bool{}
	for i, err := range errs {
		switch {
		case i == 3:
			if !errors.Is(err, errBoom) {
				t.Errorf("call 3: %v, want its own error", err)
			}
		case err != nil:
			t.Errorf("call %d: %v", i, err)
		default:
			ids[txOf[i]] = true
		}
	}
	if len(ids) != 1 {
		t.Errorf("the %d queued calls were committed in transactions %v, want one", waiters-1, ids)
	}
	var n int
	if err := s.View(ctx, func(tx Tx) error { return tx.Get(BucketRoles, "counter", &n) }); err != nil {
		t.Fatal(err)
	}
	if n != waiters {
		t.Errorf("counter %d, want %d", n, waiters)
	}
	s.commits.mu.Lock()
	busy := s.commits.busy
	s.commits.mu.Unlock()
	if busy {
		t.Error("the queue is still marked busy with nothing pending")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Batch(ctx, func(Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Batch after Close: %v, want ErrClosed", err)
	}
}
