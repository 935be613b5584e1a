package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binDir holds the binaries built for the tests that run real processes.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vkbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// binaries builds vipkeeper-agent and vipctl once per test binary (only
// when a test needs them) and returns their paths.
func binaries(t testing.TB) (agentBin, vipctlBin string) {
	t.Helper()
	buildOnce.Do(func() {
		for _, pkg := range []string{"vipkeeper-agent", "vipctl"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, pkg), "github.com/vipkeeper/vipkeeper/cmd/"+pkg)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "vipkeeper-agent"), filepath.Join(binDir, "vipctl")
}
