package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds vipkeeper-agent, vipkeeper-hostsync and vipctl once per
// test binary and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	if err := Privileged(); err != nil {
		testutil.SkipUnprivileged(t, "skipping: %v", err)
	}
	if dir := os.Getenv("VIPKEEPER_LAB_BIN"); dir != "" {
		return dir // prebuilt binaries, e.g. make's bin/
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "vipkeeper-lab-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator),
			"../../cmd/vipkeeper-agent", "../../cmd/vipkeeper-hostsync", "../../cmd/vipctl")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" && os.Getenv("VIPKEEPER_LAB_BIN") == "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
