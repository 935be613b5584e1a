package testutil

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// ListenPorts returns the ports of the listening TCP sockets this process
// holds (read from /proc), to tell which listeners a daemon opened. It
// skips the test where there is no Linux /proc.
func ListenPorts(tb testing.TB) map[int]bool {
	tb.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		SkipUnprivileged(tb, "needs Linux /proc to list this process's sockets: %v", err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	ports := map[int]bool{}
	// /proc/self/net is the network namespace of the main thread, which a
	// parallel netns test may have entered for a moment; this goroutine's
	// own (unlocked, so never moved) thread is in the test's namespace.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, name := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		data, err := os.ReadFile(name)
		if err != nil {
			continue // no IPv6
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fs := strings.Fields(line)
			// sl local_address rem_address st ... uid timeout inode; 0A is LISTEN.
			if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
				ports[int(p)] = true
			}
		}
	}
	return ports
}

// NewPorts lists the ports in after and not in before.
func NewPorts(before, after map[int]bool) map[int]bool {
	out := map[int]bool{}
	for p := range after {
		if !before[p] {
			out[p] = true
		}
	}
	return out
}
