package ownership

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/eip"
)

// inspectingBackend is a fakeBackend that also reports what it holds.
type inspectingBackend struct {
	fakeBackend
	mu    sync.Mutex
	state eip.State
	err   error
}

func (b *inspectingBackend) Programmed(context.Context) (eip.State, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.err
}

func (b *inspectingBackend) applies() int { return b.Applies() }

// TestEmptyRegistryDoesNotWipeDataPlane: hostsync started on a registry
// that holds no group (a mistyped db_path, an empty etcd prefix) must not
// remove the mappings the data plane holds, unless the operator allows it.
func TestEmptyRegistryDoesNotWipeDataPlane(t *testing.T) {
	holding := eip.State{Table: true, Rules: 3, Routes: 1}
	for _, tc := range []struct {
		name      string
		backend   eip.Backend
		allow     bool
		withGroup bool
		wantHeld  bool
	}{
		{"data plane holds mappings", &inspectingBackend{state: holding}, false, false, true},
		{"data plane cannot be read back", &inspectingBackend{err: errors.New("nft: no such file")}, false, false, true},
		{"backend cannot inspect", &fakeBackend{}, false, false, true},
		{"operator allows it", &inspectingBackend{state: holding}, true, false, false},
		{"data plane empty", &inspectingBackend{}, false, false, false},
		{"registry with a group but no EIP", &inspectingBackend{state: holding}, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := testutil.NewLogRecorder(testLogger(t).Handler())
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			store := openStore(t)
			svc, err := newService(t.Context(), store, Options{
				Logger: slog.New(rec), Backend: tc.backend, Metrics: m, AllowEmptyDataPlane: tc.allow,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			if tc.withGroup {
				if _, err := svc.CreateGroup(t.Context(), api.GroupCreate{Name: "nginx"}); err != nil {
					t.Fatal(err)
				}
			}
			if err := svc.Reapply(t.Context()); err != nil {
				t.Fatalf("Reapply: %v", err)
			}
			// A second reconcile holds again (and logs at debug only).
			if err := svc.Reapply(t.Context()); err != nil {
				t.Fatalf("Reapply: %v", err)
			}
			applied := applyCount(tc.backend)
			st, err := svc.Status(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			held := promtest.ToFloat64(m.applies.WithLabelValues("held"))
			reason, logged := rec.Attr("data plane held: not applying an empty set", "reason")
			if tc.wantHeld {
				if applied != 0 {
					t.Errorf("backend applied %d times, want the empty set held", applied)
				}
				if st.DataPlaneHeld == "" || !strings.Contains(st.Sentence, "data plane held") {
					t.Errorf("status does not say the data plane is held: %+v", st)
				}
				if held != 2 {
					t.Errorf("dataplane_applies_total{result=held} = %v, want 2", held)
				}
				if !logged || !strings.Contains(reason, "allow-empty-dataplane") {
					t.Errorf("hold not logged with the way out: %q (logged %v)", reason, logged)
				}
				return
			}
			if applied != 2 {
				t.Errorf("backend applied %d times, want 2", applied)
			}
			if st.DataPlaneHeld != "" || held != 0 || logged {
				t.Errorf("apply held: status %q, metric %v, logged %v", st.DataPlaneHeld, held, logged)
			}
		})
	}
}

// TestDataPlaneHoldEndsWithAGroup: once the operator builds the registry
// again, applies resume and the status clears.
func TestDataPlaneHoldEndsWithAGroup(t *testing.T) {
	b := &inspectingBackend{state: eip.State{Table: true, Rules: 3}}
	svc, err := newService(t.Context(), openStore(t), Options{Logger: testLogger(t), Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if err := svc.Reapply(t.Context()); err != nil || b.applies() != 0 {
		t.Fatalf("Reapply on an empty registry: err %v, %d applies", err, b.applies())
	}
	if _, err := svc.CreateGroup(t.Context(), api.GroupCreate{Name: "nginx"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Reapply(t.Context()); err != nil || b.applies() != 1 {
		t.Fatalf("Reapply with a group: err %v, %d applies", err, b.applies())
	}
	if st, _ := svc.Status(t.Context()); st.DataPlaneHeld != "" {
		t.Errorf("status still held: %q", st.DataPlaneHeld)
	}
}

func applyCount(b eip.Backend) int {
	switch b := b.(type) {
	case *inspectingBackend:
		return b.applies()
	case *fakeBackend:
		return b.Applies()
	}
	return -1
}
