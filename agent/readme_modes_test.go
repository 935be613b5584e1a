package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipkeeper/vipkeeper/render"
)

// readmeRow returns the line of a README's file table that names path.
func readmeRow(t *testing.T, readme, path string) string {
	t.Helper()
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(l, "| `"+path+"`") {
			return l
		}
	}
	t.Fatalf("%s has no table row for %s", readme, path)
	return ""
}

// TestREADMEModes: the READMEs state the modes the code creates (the
// agent's README said 0660 for the control socket, which is 0600).
func TestREADMEModes(t *testing.T) {
	ln, err := listenControl(filepath.Join(t.TempDir(), "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sock := fmt.Sprintf("%04o", fi.Mode().Perm())
	conf, script := fmt.Sprintf("%04o", render.ConfigMode), fmt.Sprintf("%04o", render.ScriptMode)
	for _, tc := range []struct{ readme, path, row, mode string }{
		{"../cmd/vipkeeper-agent/README.md", "/run/vipkeeper/agent.sock", "/run/vipkeeper/agent.sock", sock},
		{"../README.md", "/run/vipkeeper/", "agent.sock", sock},
		{"../cmd/vipkeeper-agent/README.md", "/etc/keepalived/keepalived.conf", "", conf},
		{"../README.md", "/etc/keepalived/keepalived.conf", "", conf},
		{"../cmd/vipkeeper-agent/README.md", "/etc/keepalived/vipkeeper/", "", script},
		{"../README.md", "/etc/keepalived/vipkeeper/", "", script},
	} {
		row := readmeRow(t, tc.readme, tc.path)
		if tc.row != "" {
			_, row, _ = strings.Cut(row, tc.row)
			row, _, _ = strings.Cut(row, ")")
		}
		if !strings.Contains(row, tc.mode) {
			t.Errorf("%s: %s: %q does not say %s", tc.readme, tc.path, row, tc.mode)
		}
	}
}
