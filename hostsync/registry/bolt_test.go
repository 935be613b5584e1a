package registry

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

func openTest(t *testing.T) *Bolt {
	t.Helper()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "r.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestGetPutListDelete(t *testing.T) { forEachStore(t, testGetPutListDelete) }

func testGetPutListDelete(t *testing.T, s Store) {
	ctx := context.Background()
	err := s.View(ctx, func(tx Tx) error {
		_, err := Get[Guest](tx, "g1")
		return err
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing record: %v, want ErrNotFound", err)
	}
	want := Guest{ID: "g1", Name: "a", NICs: 1, Address: netip.MustParseAddr("192.0.2.11"), MAC: "52:54:00:00:00:11"}
	err = s.Update(ctx, func(tx Tx) error {
		for _, l := range []Lease{
			{NetworkID: "n1", Address: netip.MustParseAddr("192.0.2.11"), Kind: LeaseGuest, Holder: "g1"},
			{NetworkID: "n1", Address: netip.MustParseAddr("192.0.2.12"), Kind: LeaseVIP, Holder: "ig"},
			{NetworkID: "n10", Address: netip.MustParseAddr("198.51.100.1"), Kind: LeaseVIP, Holder: "x"},
		} {
			if err := Put(tx, l); err != nil {
				return err
			}
		}
		return Put(tx, want)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(ctx, func(tx Tx) error {
		got, err := Get[Guest](tx, "g1")
		if err != nil {
			return err
		}
		if got.Address != want.Address || got.MAC != want.MAC || got.Name != want.Name {
			t.Fatalf("got %+v, want %+v", got, want)
		}
		ls, err := List[Lease](tx, "n1/")
		if err != nil {
			return err
		}
		if len(ls) != 2 || ls[0].Holder != "g1" || ls[1].Holder != "ig" {
			t.Fatalf("leases with prefix n1/ = %+v, want the two of n1 only", ls)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx Tx) error { return tx.Delete(BucketGuests, "g1") }); err != nil {
		t.Fatal(err)
	}
	if err := s.View(ctx, func(tx Tx) error { _, err := Get[Guest](tx, "g1"); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}
}

func TestUpdateRollsBackOnError(t *testing.T) { forEachStore(t, testUpdateRollsBackOnError) }

func testUpdateRollsBackOnError(t *testing.T, s Store) {
	ctx := context.Background()
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx Tx) error {
		if err := Put(tx, Network{ID: "n1"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v", err)
	}
	if err := s.View(ctx, func(tx Tx) error { _, err := Get[Network](tx, "n1"); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("write of a failed Update is visible: %v", err)
	}
}

func TestSwapOwner(t *testing.T) { forEachStore(t, testSwapOwner) }

func testSwapOwner(t *testing.T, s Store) {
	ctx := context.Background()
	swap := func(expect uint64, guest string) (Owner, error) {
		var o Owner
		err := s.Update(ctx, func(tx Tx) error {
			var err error
			o, err = SwapOwner(tx, expect, Owner{Group: "ig", GuestID: guest})
			return err
		})
		return o, err
	}
	o, err := swap(0, "g1")
	if err != nil || o.Revision != 1 {
		t.Fatalf("first swap: %+v, %v", o, err)
	}
	if o, err = swap(1, "g2"); err != nil || o.Revision != 2 {
		t.Fatalf("second swap: %+v, %v", o, err)
	}
	// A writer that read revision 1 lost the race.
	if _, err := swap(1, "g3"); !errors.Is(err, ErrRevisionMismatch) {
		t.Fatalf("stale swap: %v, want ErrRevisionMismatch", err)
	}
	err = s.View(ctx, func(tx Tx) error {
		o, err := Get[Owner](tx, "ig")
		if err == nil && (o.GuestID != "g2" || o.Revision != 2) {
			t.Fatalf("owner %+v after a refused swap", o)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenTimesOutOnLock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r.db")
	s, err := OpenBolt(p, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	if _, err := OpenBolt(p, 100*time.Millisecond); err == nil {
		t.Fatal("second open of a locked database succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %s", d)
	}
}

func TestClosed(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "r.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.View(context.Background(), func(Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("View after Close: %v, want ErrClosed", err)
	}
}
