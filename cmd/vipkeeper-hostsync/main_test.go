package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFlags: the flags both daemons share (-config, -check-config,
// -log-level, -version) and their exit codes: 0 done, 2 refused.
func TestFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(good, []byte("state_dir = \"/var/lib/vipkeeper\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("state_dir = \"/var/lib/vipkeeper\"\n"+"bogus_key = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    string // exact
		stderrHas string
	}{
		{"version", []string{"-version"}, 0, name + " dev\n", ""},
		{"check-config", []string{"-check-config", "-config", good}, 0, good + ": ok\n", ""},
		{"check-config with a log level", []string{"-log-level", "debug", "-check-config", "-config", good}, 0, good + ": ok\n", ""},
		{"unknown key", []string{"-check-config", "-config", bad}, 2, "", "bogus_key"},
		{"missing file", []string{"-check-config", "-config", filepath.Join(dir, "none.toml")}, 2, "", "none.toml"},
		{"bad log level", []string{"-log-level", "loud", "-config", good}, 2, "", "-log-level"},
		{"unknown flag", []string{"-verbose"}, 2, "", "-verbose"},
		{"extra argument", []string{"-config", good, "run"}, 2, "", "unexpected arguments"},
		{"deprecated -debug", []string{"-debug", "-check-config", "-config", good}, 0, good + ": ok\n", ""},
		{"role override", []string{"-role", "router", "-check-config", "-config", good}, 2, "", "role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code || stdout.String() != tt.stdout || !strings.Contains(stderr.String(), tt.stderrHas) {
				t.Errorf("run(%q) = %d, stdout %q, stderr %q; want %d, %q, stderr with %q", tt.args, code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stderrHas)
			}
		})
	}
}
