package sdlab

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// examples are vipkeeper's cloud-init examples, the documents the systemd
// tests apply.
func examples(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "packaging", "cloud-init", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cloud-init examples under packaging/cloud-init: %v", err)
	}
	m := make(map[string][]byte)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m[filepath.Base(f)] = data
	}
	return m
}

func TestParseCloudConfigExamples(t *testing.T) {
	for name, data := range examples(t) {
		t.Run(name, func(t *testing.T) {
			cfg, err := ParseCloudConfig(data)
			if err != nil {
				t.Fatalf("ParseCloudConfig: %v", err)
			}
			i := slices.IndexFunc(cfg.WriteFiles, func(f WriteFile) bool { return f.Path == "/etc/vipkeeper/agent.toml" })
			if i < 0 {
				t.Fatalf("no write_files entry for /etc/vipkeeper/agent.toml: %+v", cfg.WriteFiles)
			}
			if f := cfg.WriteFiles[i]; f.Owner != "root:root" || f.Permissions != "0640" || !strings.Contains(f.Content, "[metadata]") {
				t.Errorf("agent.toml entry = %+v", f)
			}
			if !slices.Contains(cfg.Packages, "keepalived") && !slices.Contains(cfg.Packages, "curl") {
				t.Errorf("packages %v install neither keepalived nor curl", cfg.Packages)
			}
			if len(cfg.Runcmd) == 0 {
				t.Fatal("no runcmd")
			}
			last := cfg.Runcmd[len(cfg.Runcmd)-1]
			if !slices.Equal(last.Argv, []string{"systemctl", "enable", "--now", "vipkeeper-agent.service", "keepalived.service"}) {
				t.Errorf("last runcmd = %s, want systemctl enable --now of the agent and keepalived", last)
			}
		})
	}
}

func TestParseCloudConfig(t *testing.T) {
	cfg, err := ParseCloudConfig([]byte(`#cloud-config
apt:
  sources:
    repo:
      source: "deb [trusted=yes] http://192.0.2.1/r ./"
package_update: true
packages: [keepalived, vipkeeper-agent]
write_files:
  - path: /etc/a
    content: |
      x
  - path: /etc/b
    owner: root:adm
    permissions: "0600"
    content: y
runcmd:
  - echo one
  - [systemctl, start, a b]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Apt.Sources["repo"].Source; got != "deb [trusted=yes] http://192.0.2.1/r ./" {
		t.Errorf("apt source = %q", got)
	}
	if !cfg.PackageUpdate || !slices.Equal(cfg.Packages, []string{"keepalived", "vipkeeper-agent"}) {
		t.Errorf("package_update %v, packages %v", cfg.PackageUpdate, cfg.Packages)
	}
	want := []WriteFile{
		{Path: "/etc/a", Owner: "root:root", Permissions: "0644", Content: "x\n"},
		{Path: "/etc/b", Owner: "root:adm", Permissions: "0600", Content: "y"},
	}
	if !slices.Equal(cfg.WriteFiles, want) {
		t.Errorf("write_files = %+v, want %+v (defaults filled in)", cfg.WriteFiles, want)
	}
	if len(cfg.Runcmd) != 2 || cfg.Runcmd[0].Shell != "echo one" || !slices.Equal(cfg.Runcmd[1].Argv, []string{"systemctl", "start", "a b"}) {
		t.Fatalf("runcmd = %+v", cfg.Runcmd)
	}
	if got := cfg.Runcmd[1].String(); got != `"systemctl" "start" "a b"` {
		t.Errorf("String() = %s", got)
	}
}

func TestParseCloudConfigRefuses(t *testing.T) {
	tests := []struct{ name, doc string }{
		{"no header", "packages: [curl]\n"},
		{"other header", "#!/bin/sh\necho\n"},
		{"unknown key", "#cloud-config\nusers: [default]\n"},
		{"unknown write_files key", "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: b64\n    content: eA==\n"},
		{"relative path", "#cloud-config\nwrite_files:\n  - path: etc/a\n"},
		{"unclean path", "#cloud-config\nwrite_files:\n  - path: /etc/../a\n"},
		{"root path", "#cloud-config\nwrite_files:\n  - path: /\n"},
		{"decimal permissions", "#cloud-config\nwrite_files:\n  - path: /a\n    permissions: \"0689\"\n"},
		{"owner with spaces", "#cloud-config\nwrite_files:\n  - path: /a\n    owner: \"root; rm\"\n"},
		{"package with space", "#cloud-config\npackages: [\"curl wget\"]\n"},
		{"package option", "#cloud-config\npackages: [\"--force-yes\"]\n"},
		{"source file name", "#cloud-config\napt:\n  sources:\n    ../x:\n      source: deb http://192.0.2.1/ ./\n"},
		{"two-line source", "#cloud-config\napt:\n  sources:\n    x:\n      source: \"deb a\\ndeb b\"\n"},
		{"empty runcmd", "#cloud-config\nruncmd:\n  - \"\"\n"},
		{"nested runcmd", "#cloud-config\nruncmd:\n  - [a, [b]]\n"},
		{"runcmd map", "#cloud-config\nruncmd:\n  - {a: b}\n"},
		{"not yaml", "#cloud-config\n: : :\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseCloudConfig([]byte(tt.doc))
			if !errors.Is(err, ErrCloudConfig) {
				t.Fatalf("ParseCloudConfig = %+v, %v; want ErrCloudConfig", cfg, err)
			}
		})
	}
}

// FuzzParseCloudConfig: whatever the document, the runner either refuses
// it or gets entries it can apply safely.
func FuzzParseCloudConfig(f *testing.F) {
	for _, data := range examples(f) {
		f.Add(data)
	}
	f.Add([]byte("#cloud-config\nruncmd:\n  - [a, b]\n  - c\n"))
	f.Add([]byte("#cloud-config\nwrite_files:\n  - path: /a\n    permissions: '0600'\n"))
	f.Add([]byte("#cloud-config\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseCloudConfig(data)
		if err != nil {
			if !errors.Is(err, ErrCloudConfig) {
				t.Fatalf("error %v is not ErrCloudConfig", err)
			}
			return
		}
		for _, w := range cfg.WriteFiles {
			if !strings.HasPrefix(w.Path, "/") || strings.Contains(w.Path, "/../") || !rePerm.MatchString(w.Permissions) || !reOwner.MatchString(w.Owner) {
				t.Errorf("accepted write_files entry %+v", w)
			}
		}
		for _, p := range cfg.Packages {
			if strings.HasPrefix(p, "-") || strings.ContainsAny(p, " \t\n") {
				t.Errorf("accepted package %q", p)
			}
		}
		for _, c := range cfg.Runcmd {
			if c.Shell == "" && (len(c.Argv) == 0 || c.Argv[0] == "") {
				t.Errorf("accepted empty command %+v", c)
			}
		}
	})
}
