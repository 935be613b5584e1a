package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// applyResults are every value of apply_total's result label.
var applyResults = []string{
	ApplyNotModified, ApplyUnchanged, ApplyApplied, ApplyDeferred, ApplyFetchError, ApplyMetadataError,
	ApplyRenderError, ApplyValidateError, ApplyInstallError, ApplyReloadError, ApplyStateError,
}

func applyCounts(m *Metrics) map[string]float64 {
	out := map[string]float64{}
	for _, r := range applyResults {
		out[r] = promtest.ToFloat64(m.apply.WithLabelValues(r))
	}
	return out
}

// roleValues is the role gauge of group by role.
func roleValues(m *Metrics, group string) map[vrrp.Role]float64 {
	out := map[vrrp.Role]float64{}
	for _, r := range metricsRoles {
		out[r] = promtest.ToFloat64(m.role.WithLabelValues(group, string(r)))
	}
	return out
}

func wantRole(t *testing.T, m *Metrics, group string, role vrrp.Role) {
	t.Helper()
	if n := promtest.CollectAndCount(m.role); n != len(metricsRoles) {
		t.Errorf("role series = %d, want %d (one per role of group %s)", n, len(metricsRoles), group)
	}
	for r, v := range roleValues(m, group) {
		want := 0.0
		if r == role {
			want = 1
		}
		if v != want {
			t.Errorf("vipkeeper_agent_role{group=%q,role=%q} = %v, want %v", group, r, v, want)
		}
	}
}

// wantMember checks that member_info has the one series (group, member).
func wantMember(t *testing.T, m *Metrics, group, member string) {
	t.Helper()
	if n := promtest.CollectAndCount(m.memberInfo); n != 1 {
		t.Errorf("member_info series = %d, want 1 (group %s, member %s)", n, group, member)
	}
	if v := promtest.ToFloat64(m.memberInfo.WithLabelValues(group, member)); v != 1 {
		t.Errorf("vipkeeper_agent_member_info{group=%q,member=%q} = %v, want 1", group, member, v)
	}
}

// TestMetricsFollowAgentEvents drives notify events over the control socket
// with a fake hostsync that is down and then up, and apply passes that
// succeed or fail at each step, and checks the metrics each one touches.
func TestMetricsFollowAgentEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cs := &claimServer{seen: map[uint64]int{}, down: true}
	srv := httptest.NewServer(cs)
	defer srv.Close()
	var renderFails atomic.Bool
	h := startTestAgent(t, metaJSON(t, testMeta(1)), func(c *Config, d *deps) {
		c.Report.URL = srv.URL + api.PathClaims
		d.metrics = m
		d.render = func(md *vrrp.Metadata, o render.Options) (*render.Output, error) {
			if renderFails.Load() {
				return nil, errors.New("render: refused")
			}
			return render.Render(md, o)
		}
	})
	waitFor(t, "first apply", func() bool { return h.status().Ready })
	gauge := func(g prometheus.Gauge) float64 { return promtest.ToFloat64(g) }

	t.Run("after the first apply", func(t *testing.T) {
		if got := applyCounts(m)[ApplyApplied]; got != 1 {
			t.Errorf("apply_total{applied} = %v, want 1", got)
		}
		wantRole(t, m, "web", vrrp.RoleUnknown)
		wantMember(t, m, "web", "web-1")
		if gauge(m.vipPresent) != 0 || gauge(m.outbox) != 0 {
			t.Errorf("vip_present %v, outbox_depth %v, want 0 and 0", gauge(m.vipPresent), gauge(m.outbox))
		}
	})

	t.Run("MASTER with the VIP while hostsync is down", func(t *testing.T) {
		h.link.set("192.0.2.11/24", "192.0.2.10/24")
		h.hook("INSTANCE", "VI_web", "MASTER", "100")
		wantRole(t, m, "web", vrrp.RoleMaster)
		if got := promtest.ToFloat64(m.transitions.WithLabelValues("MASTER")); got != 1 {
			t.Errorf("transitions_total{to=MASTER} = %v, want 1", got)
		}
		if gauge(m.vipPresent) != 1 {
			t.Error("vip_present is not 1 with the VIP on the interface")
		}
		waitFor(t, "a failed report", func() bool { return promtest.ToFloat64(m.reports.WithLabelValues("error")) >= 1 })
		if gauge(m.outbox) != 1 {
			t.Errorf("outbox_depth = %v, want 1", gauge(m.outbox))
		}
		h.hook("INSTANCE", "VI_web", "BACKUP", "100")
		if got := promtest.ToFloat64(m.transitions.WithLabelValues("BACKUP")); got != 1 {
			t.Errorf("transitions_total{to=BACKUP} = %v, want 1", got)
		}
		wantRole(t, m, "web", vrrp.RoleBackup)
		if gauge(m.outbox) != 2 {
			t.Errorf("outbox_depth = %v, want 2", gauge(m.outbox))
		}
	})

	t.Run("hostsync back: the outbox drains", func(t *testing.T) {
		cs.setDown(false)
		waitFor(t, "outbox_depth 0", func() bool { return gauge(m.outbox) == 0 })
		if got := promtest.ToFloat64(m.reports.WithLabelValues("ok")); got != 2 {
			t.Errorf("reports_total{ok} = %v, want 2", got)
		}
	})

	t.Run("the VIP leaves the interface", func(t *testing.T) {
		h.link.set("192.0.2.11/24")
		waitFor(t, "vip_present 0", func() bool { return gauge(m.vipPresent) == 0 })
	})

	scripts := h.cfg.Keepalived.ScriptsDir
	rev := uint64(10)
	newDoc := func(t *testing.T) {
		rev++
		md := testMeta(rev)
		md.VirtualRouterID = int(rev) // a content change
		h.writeMeta(metaJSON(t, md))
	}
	// Each step leaves the agent with good files for the next.
	steps := []struct {
		name   string
		result string
		do     func(t *testing.T)
		undo   func(t *testing.T)
	}{
		{"new content", ApplyApplied, func(t *testing.T) { newDoc(t); h.refresh() }, nil},
		{"same content", ApplyUnchanged, func(t *testing.T) { h.refresh() }, nil},
		{"source unchanged", ApplyNotModified, func(t *testing.T) {
			if err := h.apply(context.Background(), false); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"metadata file missing", ApplyFetchError, func(t *testing.T) {
			if err := os.Remove(h.metaPath); err != nil {
				t.Fatal(err)
			}
			h.refresh()
		}, func(t *testing.T) { newDoc(t) }},
		{"invalid metadata", ApplyMetadataError, func(t *testing.T) { h.writeMeta([]byte(`{"version": 1,`)); h.refresh() },
			func(t *testing.T) { newDoc(t) }},
		{"render refuses", ApplyRenderError, func(t *testing.T) { renderFails.Store(true); newDoc(t); h.refresh() },
			func(t *testing.T) { renderFails.Store(false) }},
		{"config test fails", ApplyValidateError, func(t *testing.T) {
			h.val.mu.Lock()
			h.val.err = errors.New("keepalived --config-test failed")
			h.val.mu.Unlock()
			newDoc(t)
			h.refresh()
		}, func(t *testing.T) {
			h.val.mu.Lock()
			h.val.err = nil
			h.val.mu.Unlock()
		}},
		{"scripts dir cannot be created", ApplyInstallError, func(t *testing.T) {
			if err := os.RemoveAll(scripts); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(scripts, []byte("a file in the way"), 0o600); err != nil {
				t.Fatal(err)
			}
			newDoc(t)
			h.refresh()
		}, func(t *testing.T) { os.Remove(scripts) }},
		{"reload fails", ApplyReloadError, func(t *testing.T) {
			h.ka.mu.Lock()
			h.ka.err = errors.New("reload refused")
			h.ka.mu.Unlock()
			newDoc(t)
			h.refresh()
		}, func(t *testing.T) {
			h.ka.mu.Lock()
			h.ka.err = nil
			h.ka.mu.Unlock()
		}},
	}
	for _, s := range steps {
		t.Run("apply: "+s.name, func(t *testing.T) {
			before := applyCounts(m)
			s.do(t)
			after := applyCounts(m)
			for _, r := range applyResults {
				want := before[r]
				if r == s.result {
					want++
				}
				if after[r] != want {
					t.Errorf("apply_total{result=%q} = %v, want %v", r, after[r], want)
				}
			}
			if s.undo != nil {
				s.undo(t)
				if st := h.refresh(); st.LastError != "" {
					t.Fatalf("the next apply still fails: %s", st.LastError)
				}
			}
		})
	}

	t.Run("another group: the old group's series are removed", func(t *testing.T) {
		md := testMeta(100)
		md.Group = vrrp.Group{ID: "ig-shop", Name: "shop"}
		h.writeMeta(metaJSON(t, md))
		if st := h.refresh(); st.LastError != "" {
			t.Fatal(st.LastError)
		}
		wantRole(t, m, "shop", vrrp.RoleBackup)
		wantMember(t, m, "shop", "web-1")
	})
}

// TestMetricsMemberInfo: member_info names this VM's group and member
// once both are known, and a new group or name replaces its series.
func TestMetricsMemberInfo(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name          string
		group, member string
		want          []string // labels of the one series; nil: none
	}{
		{"nothing learnt yet", "", "", nil},
		{"the member from the configuration, no group yet", "", "web-1", nil},
		{"first apply", "web", "web-1", []string{"web", "web-1"}},
		{"the same again", "web", "web-1", []string{"web", "web-1"}},
		{"another name (the address matches another member)", "web", "web-2", []string{"web", "web-2"}},
		{"another group", "shop", "web-2", []string{"shop", "web-2"}},
		{"no member", "shop", "", nil},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			m.state(s.group, s.member, vrrp.RoleBackup, false)
			if s.want == nil {
				if n := promtest.CollectAndCount(m.memberInfo); n != 0 {
					t.Fatalf("member_info has %d series, want none", n)
				}
				return
			}
			wantMember(t, m, s.want[0], s.want[1])
		})
	}
}

// TestMetricsEndpoint runs the agent with metrics_listen set and empty.
// Set: GET /metrics answers on that address (the agent's only TCP
// listener) with the role a notify set, and stops with the agent. Empty:
// the agent opens no TCP listener at all and runs without metrics.
func TestMetricsEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen string
	}{
		{"on", "127.0.0.1:0"},
		{"off", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := testutil.NewLogRecorder(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
			before := testutil.ListenPorts(t)
			h := startTestAgentLog(t, slog.New(logs), metaJSON(t, testMeta(1)), func(c *Config, d *deps) {
				c.MetricsListen = tc.listen
				if tc.listen != "" {
					// As Run does when metrics_listen is set.
					reg := prometheus.NewRegistry()
					m, err := NewMetrics(reg)
					if err != nil {
						t.Fatal(err)
					}
					d.metrics, d.gatherer = m, reg
				}
			})
			waitFor(t, "first apply", func() bool { return h.status().Ready })
			addr, _ := logs.Attr("agent started", "metrics")
			got := testutil.NewPorts(before, testutil.ListenPorts(t))
			h.link.set("192.0.2.11/24", "192.0.2.10/24")
			h.hook("INSTANCE", "VI_web", "MASTER", "100")

			if tc.listen == "" {
				if addr != "off" || len(got) != 0 {
					t.Fatalf("metrics %q, new TCP listeners %v; want off and none", addr, got)
				}
				if h.d.metrics != nil || h.d.gatherer != nil {
					t.Fatal("metrics created although metrics_listen is empty")
				}
				if st := h.status(); st.Role != vrrp.RoleMaster {
					t.Fatalf("role = %s without metrics, want MASTER", st.Role)
				}
				return
			}
			_, p, err := net.SplitHostPort(addr)
			if err != nil {
				t.Fatalf("start log metrics=%q: %v", addr, err)
			}
			if n, _ := strconv.Atoi(p); len(got) != 1 || !got[n] {
				t.Fatalf("new TCP listeners %v, want only the metrics port %s", got, p)
			}
			url := "http://" + addr + "/metrics"
			s := testutil.Scrape(t, url)
			for series, want := range map[string]float64{
				`vipkeeper_agent_role{group="web",role="MASTER"}`:         1,
				`vipkeeper_agent_role{group="web",role="UNKNOWN"}`:        0,
				`vipkeeper_agent_transitions_total{to="MASTER"}`:          1,
				`vipkeeper_agent_apply_total{result="applied"}`:           1,
				"vipkeeper_agent_vip_present":                             1,
				`vipkeeper_agent_member_info{group="web",member="web-1"}`: 1,
				"vipkeeper_agent_outbox_depth":                            0, // reporting is off with a metadata file
			} {
				if v, ok := s[series]; !ok || v != want {
					t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
				}
			}

			h.stop()
			if resp, err := http.Get(url); err == nil {
				resp.Body.Close()
				t.Error("/metrics still answers after the agent stopped")
			}
			if left := testutil.NewPorts(before, testutil.ListenPorts(t)); len(left) != 0 {
				t.Errorf("listeners left open after the agent stopped: %v", left)
			}
		})
	}
}

func TestParseConfigMetricsListen(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"127.0.0.1:9851", true},
		{"[::1]:9851", true},
		{":9851", true},
		{"127.0.0.1:0", true},
		{"localhost:9851", false},
		{"127.0.0.1", false},
		{"127.0.0.1:65536", false},
		{"127.0.0.1:http", false},
	} {
		t.Run(tc.value, func(t *testing.T) {
			cfg, err := ParseConfig("agent.toml", []byte("metrics_listen = "+strconv.Quote(tc.value)+"\n"+minimalConfig))
			if tc.ok {
				if err != nil || cfg.MetricsListen != tc.value {
					t.Fatalf("ParseConfig: %v (metrics_listen %q)", err, cfg.MetricsListen)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != "metrics_listen" {
				t.Fatalf("ParseConfig(%q) = %v, want a *ConfigError on metrics_listen", tc.value, err)
			}
		})
	}
	cfg, err := ParseConfig("agent.toml", []byte(minimalConfig))
	if err != nil || cfg.MetricsListen != "" {
		t.Fatalf("default metrics_listen = %q (%v), want empty: off", cfg.MetricsListen, err)
	}
}

func TestREADMEDocumentsEveryMetric(t *testing.T) {
	var r testutil.RecordingRegisterer
	if _, err := NewMetrics(&r); err != nil {
		t.Fatal(err)
	}
	r.CheckDocumented(t, "../README.md", 10)
}
