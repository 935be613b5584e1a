package testutil

import (
	"net"
	"sync"
	"testing"
)

// AcceptingListener listens on a loopback port, accepts and closes every
// connection until the test ends, and returns the listener (its Addr is
// the port to dial).
func AcceptingListener(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln
}
