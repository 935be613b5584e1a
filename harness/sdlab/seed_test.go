package sdlab

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSeedFiles(t *testing.T) {
	t.Run("user-data: the NoCloud seed and the lab's configuration", func(t *testing.T) {
		ud := []byte("#cloud-config\nruncmd: [true]\n")
		files, err := seedFiles("vksd0001-vm1", "vm1", ud)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]seedFile{}
		for _, f := range files {
			got[f.path] = f
		}
		if f := got["/var/lib/cloud/seed/nocloud/user-data"]; string(f.data) != string(ud) || f.mode != 0o600 {
			t.Errorf("user-data %q mode %o, want the document as given, 0600", f.data, f.mode)
		}
		if f := got["/var/lib/cloud/seed/nocloud/meta-data"]; string(f.data) != "instance-id: vksd0001-vm1\nlocal-hostname: vm1\n" || f.mode != 0o600 {
			t.Errorf("meta-data %q mode %o", f.data, f.mode)
		}
		cfg := got[LabCloudConfig]
		for _, want := range []string{"datasource_list: [ NoCloud, None ]\n", "network: {config: disabled}\n"} {
			if !strings.Contains(string(cfg.data), want) {
				t.Errorf("%s lacks %q:\n%s", LabCloudConfig, want, cfg.data)
			}
		}
		if f := got[sshUnit]; f.link != "/dev/null" {
			t.Errorf("%s: %+v, want masked (a link to /dev/null)", sshUnit, f)
		}
		if _, ok := got[CloudInitDisabled]; ok || len(files) != 4 {
			t.Errorf("files %v, want the seed and the configuration only", slices.Collect(maps.Keys(got)))
		}
	})
	t.Run("no user-data: cloud-init disabled", func(t *testing.T) {
		files, err := seedFiles("vksd0001-h1", "h1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(files) != 1 || files[0].path != CloudInitDisabled {
			t.Errorf("files %+v, want %s alone", files, CloudInitDisabled)
		}
	})
	t.Run("refused", func(t *testing.T) {
		for _, ud := range []string{"", "#!/bin/sh\necho\n", "packages: [curl]\n", " #cloud-config\n"} {
			if _, err := seedFiles("i", "vm1", []byte(ud)); err == nil || !strings.Contains(err.Error(), "#cloud-config") {
				t.Errorf("user-data %q: err %v, want a complaint about #cloud-config", ud, err)
			}
		}
	})
}

func TestWriteSeed(t *testing.T) {
	root := t.TempDir()
	files, err := seedFiles("i-1", "vm1", []byte("#cloud-config\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeSeed(root, files); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.link != "" {
			if got, err := os.Readlink(filepath.Join(root, f.path)); err != nil || got != f.link {
				t.Errorf("%s: link to %q (%v), want %q", f.path, got, err, f.link)
			}
			continue
		}
		st, err := os.Stat(filepath.Join(root, f.path))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != f.mode {
			t.Errorf("%s: mode %o, want %o", f.path, st.Mode().Perm(), f.mode)
		}
	}
	// A symlink in the tree cannot lead the seed out of it.
	outside := t.TempDir()
	evil := t.TempDir()
	if err := os.MkdirAll(filepath.Join(evil, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(evil, "etc", "cloud")); err != nil {
		t.Fatal(err)
	}
	if err := writeSeed(evil, []seedFile{{path: CloudInitDisabled, data: nil, mode: 0o644}}); err == nil {
		t.Error("writeSeed followed a symlink out of the tree")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("written outside the tree: %v", ents)
	}
}

func TestParseCloudInitStatus(t *testing.T) {
	// cloud-init 22.4's `status --format json` after a write_files error.
	in := `{
  "_schema_version": "1",
  "boot_status_code": "enabled-by-generator",
  "datasource": "nocloud",
  "detail": "('write-files', KeyError(\"getpwnam(): name not found: 'vipkeeper'\"))",
  "errors": [
    "('write-files', KeyError(\"getpwnam(): name not found: 'vipkeeper'\"))"
  ],
  "last_update": "Tue, 01 Dec 2026 03:00:00 +0000",
  "schemas": {"1": {}},
  "status": "error"
}`
	r, err := parseCloudInitStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != "error" || r.Datasource != "nocloud" || r.BootStatusCode != "enabled-by-generator" || len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "write-files") {
		t.Errorf("parsed %+v", r)
	}
	if err := r.Err(); !errors.Is(err, ErrCloudInit) || !strings.Contains(err.Error(), "write-files") {
		t.Errorf("Err() = %v, want ErrCloudInit naming write-files", err)
	}
	for _, bad := range []string{"", "{}", "status: done", `{"status": 1}`} {
		if _, err := parseCloudInitStatus([]byte(bad)); err == nil {
			t.Errorf("parseCloudInitStatus(%q) accepted it", bad)
		}
	}
}

func TestCloudInitReportErr(t *testing.T) {
	clean := CloudInitReport{Status: "done", Datasource: "nocloud"}
	if err := clean.Err(); err != nil {
		t.Errorf("a clean run: %v", err)
	}
	tests := []struct {
		name string
		r    CloudInitReport
		want string
	}{
		{"running", CloudInitReport{Status: "running", Datasource: "nocloud"}, `status "running"`},
		{"no seed", CloudInitReport{Status: "done", Datasource: "none"}, `datasource "none"`},
		{"schema", CloudInitReport{Status: "done", Datasource: "nocloud", Schema: "write_files.0: Additional properties are not allowed"}, "schema --system: write_files.0"},
		{"warning", CloudInitReport{Status: "done", Datasource: "nocloud", Warnings: []string{"WARNING: Running module x failed"}}, "logged: WARNING: Running module x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Err()
			if !errors.Is(err, ErrCloudInit) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Err() = %v, want ErrCloudInit with %q", err, tt.want)
			}
		})
	}
}

func TestLogWarnings(t *testing.T) {
	log := `2026-12-01 03:00:00,001 - util.py[DEBUG]: Cloud-init v. 22.4.2 running 'init-local'
2026-12-01 03:00:01,002 - schema.py[WARNING]: Invalid cloud-config provided: Please run 'sudo cloud-init schema --system' to see the schema errors.
2026-12-01 03:00:02,003 - util.py[WARNING]: Running module write-files failed
2026-12-01 03:00:02,004 - handlers.py[ERROR]: oops
not a record
`
	got := logWarnings(log)
	want := []string{
		"WARNING: Invalid cloud-config provided: Please run 'sudo cloud-init schema --system' to see the schema errors.",
		"WARNING: Running module write-files failed",
		"ERROR: oops",
	}
	if !slices.Equal(got, want) {
		t.Errorf("logWarnings = %q\nwant %q", got, want)
	}
}
