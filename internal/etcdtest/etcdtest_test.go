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
