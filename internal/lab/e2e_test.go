package lab

import (
	"context"
	"os"
	"testing"
	"time"
)

// startStack builds the lab with the seed's group and both guests running,
// and waits until nginx-master owns the VIP everywhere.
func startStack(t *testing.T, p Profile) *Stack {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/keepalived"); err != nil {
		t.Skip("skipping: keepalived is not installed")
	}
	l := newLab(t, binaries(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := l.NewStack(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.DumpLogs(tWriter{t})
		}
	})
	if err := s.Seed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, g := range s.Topo.Guests {
		if err := s.StartGuest(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WaitOwner(ctx, s.Topo.Guest("nginx-master"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFailoverHealthCheck(t *testing.T) {
	s := startStack(t, ProfileDefault)
	ctx := context.Background()
	master, slave := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	if err := s.Web(master).Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitOwner(ctx, slave, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
