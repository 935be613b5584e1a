package testutil

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"

	"github.com/vipkeeper/vipkeeper/harness/netns"
)

// RequireRoot skips a privileged test unless it runs as root with ip(8)
// and every other binary named installed (fails it instead with
// VIPKEEPER_REQUIRE_PRIVILEGED=1, see SkipUnprivileged). CI runs these
// tests as root.
func RequireRoot(tb testing.TB, binaries ...string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipUnprivileged(tb, "needs root: creates network namespaces (CI runs the privileged tests as root)")
	}
	for _, b := range append([]string{"ip"}, binaries...) {
		if _, err := exec.LookPath(b); err != nil {
			SkipUnprivileged(tb, "needs the %s binary, which is not installed", b)
		}
	}
}

// IP runs ip(8) with args and returns its output; an error fails the test.
func IP(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := netns.IP(args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// NewNetns creates a network namespace named "vk", tag and a random
// suffix, with its loopback up, and removes it when the test ends (a
// failed removal fails the test). The name is at most 15 characters, so
// tag is at most 8.
func NewNetns(tb testing.TB, tag string) string {
	tb.Helper()
	name := fmt.Sprintf("vk%s%05x", tag, rand.Uint32()&0xfffff)
	if len(name) > 15 {
		tb.Fatalf("network namespace name %q is longer than 15 characters", name)
	}
	IP(tb, "netns", "add", name)
	tb.Cleanup(func() {
		if err := netns.Delete(name); err != nil {
			tb.Error(err)
		}
	})
	IP(tb, "-n", name, "link", "set", "lo", "up")
	return name
}

// InNetns is netns.Run: fn runs on the calling goroutine, locked to an OS
// thread switched into the named namespace for the call.
func InNetns(name string, fn func() error) error { return netns.Run(name, fn) }
