package ownership

import (
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
)

// TestObserveRefusesFramesFromAnotherPort is the engine-level regression
// test for issue 11 defect 6: a GARP (or an answer to a probe) naming a
// member's MAC but coming in on another bridge port than the one that MAC
// is pinned to — a stranger's port, or another member's — moves nothing:
// owner, GARP and data plane are untouched, the attempt is counted as
// forged and logged with the group, VIP and port. The same frame from the
// member's own port still moves the VIP.
func TestObserveRefusesFramesFromAnotherPort(t *testing.T) {
	slaveMAC, _ := net.ParseMAC("52:54:00:00:00:12")
	cases := []struct {
		name   string
		o      garp.Observation
		result string
	}{
		{
			name:   "the slave's MAC from a stranger's port",
			o:      garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, Port: "vm-x", Pinned: "vm-s"},
			result: observationForged,
		},
		{
			name:   "the slave's MAC from the master's port",
			o:      garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, Port: "vm-m", Pinned: "vm-s"},
			result: observationForged,
		},
		{
			name:   "a probe answer with the slave's MAC from a stranger's port",
			o:      garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, Reply: true, Port: "vm-x", Pinned: "vm-s"},
			result: observationForged,
		},
		{
			name:   "the slave's MAC before the bridge ever learnt it",
			o:      garp.Observation{VIP: ip("192.0.2.10"), MAC: slaveMAC, Port: "vm-x"},
			result: observationUnverified,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := testutil.NewLogRecorder(testLogger(t).Handler())
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			f := newFixture(t, func(o *Options) { o.Logger = slog.New(logs); o.Metrics = m })
			f.nginx()
			if _, err := f.svc.Claim(f.ctx, master, transition(1, "MASTER")); err != nil {
				t.Fatal(err)
			}
			f.clock.Advance(time.Minute) // past the split-brain window: a real move would be accepted
			f.rec.Take()
			before := f.owner("ig-nginx")

			tc.o.At = f.clock.Now()
			res, err := f.svc.Observe(f.ctx, tc.o)
			if !errors.Is(err, ErrForgedObservation) || !errors.Is(err, inventory.ErrForbidden) {
				t.Fatalf("Observe = %+v, %v; want ErrForgedObservation (an inventory.ErrForbidden)", res, err)
			}
			if after := f.owner("ig-nginx"); after != before {
				t.Errorf("owner changed: %+v -> %+v", before, after)
			}
			if ev := f.rec.Take(); len(ev) != 0 {
				t.Errorf("side effects: %q, want none (no GARP, no data-plane apply)", ev)
			}
			if got := promtest.ToFloat64(m.observations.WithLabelValues(tc.result)); got != 1 {
				t.Errorf("garp_observations_total{result=%q} = %v, want 1", tc.result, got)
			}
			if got := promtest.ToFloat64(m.observations.WithLabelValues("accepted")); got != 0 {
				t.Errorf("garp_observations_total{result=accepted} = %v, want 0", got)
			}
			for key, want := range map[string]string{"group": "nginx", "vip": "192.0.2.10", "iface": tc.o.Port} {
				if got, _ := logs.Attr(msgObservationRefused, key); got != want {
					t.Errorf("log %s = %q, want %q", key, got, want)
				}
			}
			if st, err := f.svc.Status(f.ctx); err != nil || st.SplitBrains != 0 {
				t.Errorf("status = %+v, %v; want no split brain", st, err)
			}

			// The slave's own port: the move goes through.
			ok := tc.o
			ok.Port, ok.Pinned = "vm-s", "vm-s"
			if res, err := f.svc.Observe(f.ctx, ok); err != nil || res.Owner != "nginx-slave" {
				t.Fatalf("Observe from the member's port = %+v, %v; want owner nginx-slave", res, err)
			}
		})
	}
}
