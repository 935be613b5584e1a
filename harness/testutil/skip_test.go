package testutil

import (
	"testing"
)

// recordingTB records how a test ended instead of ending it.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper()      {}
func (r *recordingTB) Name() string { return "TestX" }
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = format
}
func (r *recordingTB) Skip(args ...any) { r.skip = "skip" }

func TestSkipUnprivileged(t *testing.T) {
	for _, tc := range []struct {
		env       string
		wantFatal bool
	}{{"", false}, {"0", false}, {"1", true}} {
		t.Setenv(RequirePrivilegedEnv, tc.env)
		r := &recordingTB{TB: t}
		SkipUnprivileged(r, "needs root")
		if (r.fatal != "") != tc.wantFatal || (r.skip != "") == tc.wantFatal {
			t.Errorf("%s=%q: fatal %q, skip %q; want fatal %v", RequirePrivilegedEnv, tc.env, r.fatal, r.skip, tc.wantFatal)
		}
	}
}
