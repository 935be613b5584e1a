package ownership

import (
	"sync"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// metadataBuckets are the records the guests' metadata documents are built
// from (inventory.MetadataOf): a watched change to any of them may change
// a document. Owners and roles are not in the documents, so claims wake
// no one.
var metadataBuckets = map[registry.Bucket]bool{
	registry.BucketGroups: true, registry.BucketGuests: true, registry.BucketNetworks: true,
}

// changeBroadcast tells any number of waiters that the registry changed:
// a generation counter and a channel closed (and replaced) on each change.
// A waiter takes the channel before it reads the state the channel guards,
// so a change committed after that read always closes the channel it
// holds; a change that did not touch its state is a spurious wakeup (it
// reads again and waits on the new channel).
type changeBroadcast struct {
	mu  sync.Mutex // guards the fields below
	gen uint64
	ch  chan struct{}
}

func newChangeBroadcast() *changeBroadcast {
	return &changeBroadcast{ch: make(chan struct{})}
}

// current is the generation and the channel closed at the next change.
func (b *changeBroadcast) current() (uint64, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gen, b.ch
}

// fire wakes every waiter.
func (b *changeBroadcast) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	close(b.ch)
	b.ch = make(chan struct{})
}

// Changes returns how many registry changes the engine has learnt of
// (admin operations on this host through Changed, other hosts' changes to
// groups, guests and networks through FollowWatch) and a channel closed
// at the next one. Take it before reading the state it guards (a guest's
// metadata document), then wait on it: after it is closed, read again and
// compare, since not every change touches every document.
func (s *Engine) Changes() (generation uint64, next <-chan struct{}) {
	return s.changes.current()
}

// noteChange wakes the waiters of Changes.
func (s *Engine) noteChange() { s.changes.fire() }
