package testutil

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// RecordingRegisterer keeps what is registered on it.
type RecordingRegisterer struct{ cs []prometheus.Collector }

// Register records c.
func (r *RecordingRegisterer) Register(c prometheus.Collector) error {
	r.cs = append(r.cs, c)
	return nil
}

// MustRegister records cs.
func (r *RecordingRegisterer) MustRegister(cs ...prometheus.Collector) { r.cs = append(r.cs, cs...) }

// Unregister does nothing.
func (r *RecordingRegisterer) Unregister(prometheus.Collector) bool { return false }

// MetricNames are the fully qualified names of every metric registered.
func (r *RecordingRegisterer) MetricNames(tb testing.TB) []string {
	tb.Helper()
	reName := regexp.MustCompile(`fqName: "([^"]+)"`)
	var names []string
	for _, c := range r.cs {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := reName.FindStringSubmatch(d.String())
			if m == nil {
				tb.Fatalf("no name in %s", d)
			}
			names = append(names, m[1])
		}
	}
	return names
}

// CheckDocumented fails tb unless the Markdown file at readme has a table
// row "| `NAME` |" for each of the want metrics registered on r (and
// exactly want of them are registered).
func (r *RecordingRegisterer) CheckDocumented(tb testing.TB, readme string, want int) {
	tb.Helper()
	data, err := os.ReadFile(readme)
	if err != nil {
		tb.Fatal(err)
	}
	names := r.MetricNames(tb)
	if len(names) != want {
		tb.Fatalf("metrics %v, want %d", names, want)
	}
	for _, n := range names {
		if !strings.Contains(string(data), "| `"+n+"` |") {
			tb.Errorf("%s's Metrics section has no row for %s", readme, n)
		}
	}
}
