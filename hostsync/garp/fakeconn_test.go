package garp

import (
	"net"
	"os"
	"sync"
	"time"
)

// write is one WriteTo recorded by fakeConn.
type write struct {
	frame []byte
	dst   net.Addr
	at    time.Time
}

// fakeConn is a net.PacketConn that records writes and serves reads from a
// channel. A read deadline in the past wakes a blocked ReadFrom, as on a
// real socket; future deadlines are ignored.
type fakeConn struct {
	in     chan []byte
	closed chan struct{}

	mu       sync.Mutex
	writes   []write
	writeErr error       // returned by every WriteTo when set
	readErrs []error     // returned by the next ReadFroms, in order
	onWrite  func(write) // called after each recorded write
	// now, when set, is the clock write deadlines are enforced against:
	// a WriteTo at or after the write deadline fails with
	// os.ErrDeadlineExceeded, as on a real socket. Nil ignores deadlines.
	now           func() time.Time
	writeDeadline time.Time
	expired       chan struct{} // closed while the read deadline is in the past
	closeOnce     sync.Once
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan []byte), closed: make(chan struct{}), expired: make(chan struct{})}
}

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.mu.Lock()
	if len(c.readErrs) > 0 {
		err := c.readErrs[0]
		c.readErrs = c.readErrs[1:]
		c.mu.Unlock()
		return 0, nil, err
	}
	expired := c.expired
	c.mu.Unlock()
	select {
	case f := <-c.in:
		return copy(b, f), fakeAddr{}, nil
	case <-expired:
		return 0, nil, os.ErrDeadlineExceeded
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	if c.writeErr != nil {
		err := c.writeErr
		c.mu.Unlock()
		return 0, err
	}
	if c.now != nil && !c.writeDeadline.IsZero() && !c.now().Before(c.writeDeadline) {
		c.mu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	w := write{frame: append([]byte(nil), b...), dst: addr, at: time.Now()}
	c.writes = append(c.writes, w)
	onWrite := c.onWrite
	c.mu.Unlock()
	if onWrite != nil {
		onWrite(w)
	}
	return len(b), nil
}

func (c *fakeConn) recorded() []write {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]write(nil), c.writes...)
}

func (c *fakeConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) LocalAddr() net.Addr { return fakeAddr{} }

func (c *fakeConn) SetDeadline(t time.Time) error {
	_ = c.SetWriteDeadline(t)
	return c.SetReadDeadline(t)
}

func (c *fakeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	past := !t.IsZero() && !t.After(time.Now())
	select {
	case <-c.expired:
		if !past {
			c.expired = make(chan struct{})
		}
	default:
		if past {
			close(c.expired)
		}
	}
	return nil
}

func (c *fakeConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeDeadline = t
	return nil
}

type fakeAddr struct{}

func (fakeAddr) Network() string { return "fake" }
func (fakeAddr) String() string  { return "fake" }
