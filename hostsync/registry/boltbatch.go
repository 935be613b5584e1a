package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Batch runs fn like s.Update, but lets a store that supports group
// commit (Bolt) commit it in one transaction, one fsync, with Batch calls
// of other goroutines. It returns only when fn's writes are durably
// committed (or with fn's or the commit's error, nothing written). fn
// may be run more than once, also after other functions' writes in the
// same transaction, so like any Update function it must keep its side
// effects inside the Tx: results captured in variables are valid only
// from the run that returned nil last. Other stores run Update.
func Batch(ctx context.Context, s Store, fn func(Tx) error) error {
	if b, ok := s.(interface {
		Batch(context.Context, func(Tx) error) error
	}); ok {
		return b.Batch(ctx, fn)
	}
	return s.Update(ctx, fn)
}

// maxBatchCalls bounds the functions committed in one transaction: a
// large batch holds every caller in it until the last function has run,
// and a function that fails makes the others run again. 128 claims are
// a few milliseconds of work, beside one fsync per batch.
const maxBatchCalls = 128

// errSolo marks a call whose function failed inside a batch: it runs
// again alone, so its error is its own and not the product of the other
// functions' writes before it.
var errSolo = errors.New("registry: batch call failed, run alone")

// groupCommit is Bolt's commit queue. Unlike bbolt's DB.Batch it has no
// batch timer: a call that finds no commit running commits at once (no
// latency added to a lone claim), and calls that arrive while a commit
// runs (waiting on its fsync) are committed together by the next leader,
// the first of them. A leader runs one batch and hands over, so no caller
// waits behind more than the commit in progress and its own.
//
// Why not DB.Batch: it commits a batch only when MaxBatchDelay has passed
// or MaxBatchSize calls are in, so a lone claim (the common case: one
// failover) would wait MaxBatchDelay on top of its fsync (10 ms by
// default; 1-2 ms still lengthens every move by that much); and with a
// delay near zero its batches hold about one call, as a batch is closed
// before it waits for the write lock.
type groupCommit struct {
	mu      sync.Mutex
	pending []*batchCall // guarded by mu
	busy    bool         // guarded by mu: a leader is committing
}

type batchCall struct {
	fn   func(*bolt.Tx) error
	err  chan error    // buffered, receives the call's result once
	lead chan struct{} // closed when the call is to lead the next batch
}

// Batch runs fn in a read-write transaction shared with concurrent Batch
// calls (see the package function Batch), committed when every function
// in it returned nil; a function that fails is run again alone.
func (s *Bolt) Batch(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := &batchCall{
		fn:   func(tx *bolt.Tx) error { return fn(boltTx{tx}) },
		err:  make(chan error, 1),
		lead: make(chan struct{}),
	}
	q := &s.commits
	q.mu.Lock()
	q.pending = append(q.pending, c)
	leader := !q.busy
	q.busy = true
	q.mu.Unlock()
	if !leader {
		// Once queued the call is committed whatever ctx does: the
		// answer waits for at most two commits.
		select {
		case err := <-c.err:
			return s.solo(c, err)
		case <-c.lead:
		}
	}
	s.lead()
	return s.solo(c, <-c.err)
}

func (s *Bolt) solo(c *batchCall, err error) error {
	if errors.Is(err, errSolo) {
		err = s.db.Update(c.fn)
	}
	return s.wrap(err)
}

// lead takes the pending calls (its own among them), commits them and
// makes the first call queued meanwhile the next leader.
func (s *Bolt) lead() {
	q := &s.commits
	q.mu.Lock()
	n := min(len(q.pending), maxBatchCalls)
	calls := q.pending[:n:n]
	q.pending = q.pending[n:]
	q.mu.Unlock()

	s.commit(calls)

	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		q.busy = false
		q.pending = nil
		return
	}
	close(q.pending[0].lead)
}

// commit runs calls in one transaction. A function that fails (or
// panics) is taken out and answered errSolo, and the others run again in
// a new transaction, as bbolt's DB.Batch does.
func (s *Bolt) commit(calls []*batchCall) {
	for len(calls) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := safeCall(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			calls[failed].err <- errSolo
			calls = append(calls[:failed:failed], calls[failed+1:]...)
			continue
		}
		for _, c := range calls {
			c.err <- err
		}
		return
	}
}

func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("registry: batch function panicked: %v", p)
		}
	}()
	return fn(tx)
}
