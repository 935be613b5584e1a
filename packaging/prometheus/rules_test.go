package prometheus

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	promclient "github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/vipkeeper/vipkeeper/agent"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

const (
	rulesFile = "vipkeeper.rules.yml"
	testsFile = "vipkeeper.rules.test.yml"
)

// promtool is Debian's promtool (package prometheus, in the Makefile's
// TEST_DEPS); a missing one skips the test, or fails it where
// VIPKEEPER_REQUIRE_PRIVILEGED=1 (CI).
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		testutil.SkipUnprivileged(t, "skipping: promtool not installed (apt-get install prometheus): %v", err)
	}
	cmd := exec.Command(path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func TestPromtoolCheckRules(t *testing.T) {
	out := promtool(t, "check", "rules", rulesFile)
	n := len(readRules(t))
	if !strings.Contains(out, "SUCCESS: "+strconv.Itoa(n)+" rules found") {
		t.Errorf("promtool check rules: %s, want all %d rules found", out, n)
	}
}

// The rules' unit tests: each alert fires where it should and stays quiet
// where it should, with its labels and annotations rendered.
func TestPromtoolTestRules(t *testing.T) {
	out := promtool(t, "test", "rules", testsFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules: %s", out)
	}
	t.Logf("promtool test rules %s: %s", testsFile, strings.TrimSpace(out))
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readRules(t *testing.T) []rule {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var rules []rule
	for _, g := range doc.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s has no rules", rulesFile)
	}
	return rules
}

// registered are the metrics the daemons register, with their label names:
// the agent's (agent.NewMetrics, its checks' included) and hostsync's
// (ownership.NewMetrics, and with an etcd store registry.NewLeaseMetrics).
func registered(t *testing.T) map[string][]string {
	t.Helper()
	var rec descRecorder
	if _, err := agent.NewMetrics(&rec); err != nil {
		t.Fatal(err)
	}
	if _, err := ownership.NewMetrics(&rec); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.NewLeaseMetrics(&rec); err != nil {
		t.Fatal(err)
	}
	m := map[string][]string{}
	for _, d := range rec.descs {
		sm := reDesc.FindStringSubmatch(d.String())
		if sm == nil {
			t.Fatalf("cannot read %s", d)
		}
		m[sm[1]] = []string{}
		if sm[2] != "" {
			m[sm[1]] = strings.Split(sm[2], ",")
		}
	}
	if len(m) < 10 {
		t.Fatalf("only %d metrics registered: %v", len(m), m)
	}
	return m
}

var (
	reMetric   = regexp.MustCompile(`\bvipkeeper_[a-z0-9_]+`)
	reSelector = regexp.MustCompile(`\b(vipkeeper_[a-z0-9_]+)\{([^}]*)\}`)
	reMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	reGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
)

// Every metric a rule uses is one the daemons register, every label it
// selects on is one of that metric's, and every label it groups or joins
// by is one of its metrics' or a target's (instance, job): a rule cannot
// watch a series that never comes.
func TestRulesUseRegisteredMetrics(t *testing.T) {
	metrics := registered(t)
	for _, r := range readRules(t) {
		t.Run(r.Alert, func(t *testing.T) {
			allowed := map[string]bool{"instance": true, "job": true}
			names := reMetric.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Fatalf("expr uses no vipkeeper metric:\n%s", r.Expr)
			}
			for _, n := range names {
				base := n
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suffix); ok && metrics[b] != nil {
						base = b
					}
				}
				labels, ok := metrics[base]
				if !ok {
					t.Errorf("%s is not a metric the daemons register", n)
					continue
				}
				for _, l := range labels {
					allowed[l] = true
				}
			}
			for _, sel := range reSelector.FindAllStringSubmatch(r.Expr, -1) {
				for _, m := range reMatcher.FindAllStringSubmatch(sel[2], -1) {
					if !slices.Contains(metrics[sel[1]], m[1]) {
						t.Errorf("%s has no label %q (its labels: %v)", sel[1], m[1], metrics[sel[1]])
					}
				}
			}
			for _, g := range reGrouping.FindAllStringSubmatch(r.Expr, -1) {
				for l := range strings.SplitSeq(g[1], ",") {
					if l = strings.TrimSpace(l); l != "" && !allowed[l] {
						t.Errorf("groups or joins by %q, a label of none of its metrics nor of a target", l)
					}
				}
			}
		})
	}
}

// Every alert says how bad it is, what happened and what to run: the
// summary names the group (or, for a host's alert, the host) and a vipctl
// command; the description says more.
func TestRulesAnnotations(t *testing.T) {
	for _, r := range readRules(t) {
		t.Run(r.Alert, func(t *testing.T) {
			if !strings.HasPrefix(r.Alert, "Vipkeeper") {
				t.Errorf("alert %q: want a Vipkeeper prefix", r.Alert)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("severity %q, want critical or warning", s)
			}
			sum, desc := r.Annotations["summary"], r.Annotations["description"]
			if !strings.Contains(sum, "`vipctl ") {
				t.Errorf("summary %q names no vipctl command", sum)
			}
			byGroup := false // the result carries the label group
			for _, g := range reGrouping.FindAllStringSubmatch(r.Expr, -1) {
				for l := range strings.SplitSeq(g[1], ",") {
					byGroup = byGroup || strings.TrimSpace(l) == "group"
				}
			}
			if byGroup && !strings.Contains(sum, "{{ $labels.group }}") {
				t.Errorf("summary %q does not name the group", sum)
			}
			if !byGroup && !strings.Contains(sum, "{{ $labels.instance }}") {
				t.Errorf("summary %q names neither a group nor the host", sum)
			}
			if len(desc) < len(sum) || !strings.Contains(desc, "`vipctl ") {
				t.Errorf("description %q: want more than the summary, with what to run", desc)
			}
			if len(r.Annotations) != 2 {
				t.Errorf("annotations %v, want summary and description", r.Annotations)
			}
		})
	}
}

// The unit tests cover every alert both ways: at least one evaluation
// where it fires and one where it stays quiet.
func TestRulesTestedBothWays(t *testing.T) {
	data, err := os.ReadFile(testsFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name  string `yaml:"name"`
			Cases []struct {
				Alert     string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(doc.RuleFiles, []string{rulesFile}) {
		t.Errorf("rule_files %v, want [%s]", doc.RuleFiles, rulesFile)
	}
	fires, quiet := map[string]int{}, map[string]int{}
	for _, tc := range doc.Tests {
		for _, c := range tc.Cases {
			if len(c.ExpAlerts) > 0 {
				fires[c.Alert]++
			} else {
				quiet[c.Alert]++
			}
		}
	}
	for _, r := range readRules(t) {
		if fires[r.Alert] == 0 || quiet[r.Alert] == 0 {
			t.Errorf("%s: %d evaluations where it fires, %d where it stays quiet; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
		}
		delete(fires, r.Alert)
		delete(quiet, r.Alert)
	}
	for a := range fires {
		t.Errorf("%s tests an alert %s does not have: %s", testsFile, rulesFile, a)
	}
}

// descRecorder is a prometheus.Registerer that keeps the descriptions of
// what is registered on it.
type descRecorder struct{ descs []*promclient.Desc }

func (r *descRecorder) Register(c promclient.Collector) error {
	ch := make(chan *promclient.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		r.descs = append(r.descs, d)
	}
	return nil
}

func (r *descRecorder) MustRegister(cs ...promclient.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *descRecorder) Unregister(promclient.Collector) bool { return false }

// reDesc reads a Desc's String(): its name and variable labels.
var reDesc = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^}]*)\}\}$`)
