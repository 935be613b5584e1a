package httpapi

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultGuestConnsPerSource bounds the guest API's open connections from
// one source address. An agent needs one (metadata and claims share a
// keep-alive connection); 32 leaves room for tools and retries, while a
// client that opens thousands (14.8k descriptors in one test) gets no
// more than 32.
const DefaultGuestConnsPerSource = 32

// refusedLogEvery bounds the logs of refused connections: a flood of them
// must not become a flood of log lines.
const refusedLogEvery = 10 * time.Second

// perSourceListener caps the connections open at once from each source
// address. A connection over the cap is closed as soon as it is accepted;
// Accept goes on with the next one.
type perSourceListener struct {
	net.Listener
	// Immutable.
	max int
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex // guards the fields below
	open    map[netip.Addr]int
	refused int       // since the last log
	logged  time.Time // last log of refusals
}

// LimitPerSource wraps ln so that at most max connections from one source
// address are open at once.
func LimitPerSource(ln net.Listener, max int, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if max <= 0 {
		max = DefaultGuestConnsPerSource
	}
	return &perSourceListener{Listener: ln, max: max, log: log, now: time.Now, open: map[netip.Addr]int{}}
}

func (l *perSourceListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceAddr(c.RemoteAddr())
		if l.admit(src) {
			return &countedConn{Conn: c, release: func() { l.release(src) }}, nil
		}
		c.Close()
	}
}

// admit counts a new connection from src, or refuses it over the cap.
func (l *perSourceListener) admit(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[src] < l.max {
		l.open[src]++
		return true
	}
	l.refused++
	if now := l.now(); now.Sub(l.logged) >= refusedLogEvery {
		l.log.Warn("guest API: connections refused, too many open from one source",
			"remote", src, "limit", l.max, "refused", l.refused)
		l.logged, l.refused = now, 0
	}
	return false
}

func (l *perSourceListener) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[src]--; l.open[src] <= 0 {
		delete(l.open, src)
	}
}

// sourceAddr is the connection's source address (the zero Addr, one
// shared bucket, for anything that is not IP).
func sourceAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// countedConn releases its slot once, on the first Close.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
