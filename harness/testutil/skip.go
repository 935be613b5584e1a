package testutil

import (
	"fmt"
	"os"
	"testing"
)

// RequirePrivilegedEnv is the environment variable that turns the skips
// of privileged tests into failures: with it set to 1 (.ci/run sets it), a
// test that cannot run because it is not root, a tool is missing or the
// kernel lacks a feature fails instead of passing as skipped, so CI cannot
// go green by running nothing.
const RequirePrivilegedEnv = "VIPKEEPER_REQUIRE_PRIVILEGED"

// PrivilegedRequired reports whether RequirePrivilegedEnv is set to 1.
func PrivilegedRequired() bool { return os.Getenv(RequirePrivilegedEnv) == "1" }

// SkipUnprivileged skips tb, saying why (not root, a tool missing), or
// fails it when PrivilegedRequired. Use it for every skip about privileges
// or missing tools; skips for -short or for a platform the test is not
// meant for (no package for this architecture) stay plain skips.
func SkipUnprivileged(tb testing.TB, format string, args ...any) {
	tb.Helper()
	reason := fmt.Sprintf(format, args...)
	if PrivilegedRequired() {
		tb.Fatalf("%s, and %s=1 forbids skipping: %s", tb.Name(), RequirePrivilegedEnv, reason)
		return
	}
	tb.Skip(reason)
}
