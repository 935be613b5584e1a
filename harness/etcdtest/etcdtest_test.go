package etcdtest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartUnix(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: starts an etcd server")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "etcd.sock")
	s, err := StartUnix(filepath.Join(dir, "data"), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if eps := s.Endpoints(); len(eps) != 1 || eps[0] != "unix://"+sock {
		t.Fatalf("endpoints %v, want [unix://%s]", eps, sock)
	}
	cli, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/k", "v1"); err != nil {
		t.Fatal(err)
	}
	// Paused and resumed on the same socket and data: the key is kept.
	s.Pause()
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("after resume: %v, want /k = v1", resp.Kvs)
	}
	if _, err := StartUnix(dir, "relative.sock"); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("relative socket: %v, want an error", err)
	}
}

// TestCluster: three members elect a leader; with the leader stopped the
// other two elect another and keep serving; with two of three stopped
// nothing is served; with one back the cluster serves again and the data
// written before is there.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: starts three etcd members")
	}
	c, err := StartCluster(3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put := func(v string) error {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := cli.Put(pctx, "/k", v)
		return err
	}
	lead, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := put("1"); err != nil {
		t.Fatal(err)
	}
	c.Stop(lead)
	next, err := c.WaitLeader(ctx)
	if err != nil || next == lead {
		t.Fatalf("leader after stopping %d: %d, %v", lead, next, err)
	}
	if err := put("2"); err != nil {
		t.Fatalf("put with two of three: %v", err)
	}
	c.Stop(next)
	if err := put("3"); err == nil {
		t.Fatal("put with one of three succeeded")
	}
	if err := c.Start(lead); err != nil {
		t.Fatal(err)
	}
	// "3" timed out without a quorum, but its proposal may still be
	// committed once the quorum is back (an ambiguous commit).
	resp, err := cli.Get(ctx, "/k")
	if err != nil || len(resp.Kvs) != 1 || (string(resp.Kvs[0].Value) != "2" && string(resp.Kvs[0].Value) != "3") {
		t.Fatalf("get after quorum is back: %v, %v", resp, err)
	}
}
