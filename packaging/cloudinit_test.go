package packaging

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/vipkeeper/vipkeeper/agent"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// cloudConfig is the part of a cloud-config the examples use.
type cloudConfig struct {
	Packages   []string `yaml:"packages"`
	WriteFiles []struct {
		Path        string `yaml:"path"`
		Owner       string `yaml:"owner"`
		Permissions string `yaml:"permissions"`
		Content     string `yaml:"content"`
	} `yaml:"write_files"`
	Runcmd []any `yaml:"runcmd"`
}

func cloudInitExamples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("cloud-init", "*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("cloud-init examples: %v %v, want at least two", files, err)
	}
	return files
}

// Every example installs the agent, writes an agent.toml the agent accepts
// (mode 0640, like the packaged one) and, when it points at a metadata
// file, a metadata document that validates; it enables the service; it
// uses documentation addresses only.
func TestCloudInitExamples(t *testing.T) {
	docNets := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
	}
	for _, file := range cloudInitExamples(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(data), "#cloud-config\n") {
				t.Fatal("does not start with #cloud-config")
			}
			var cc cloudConfig
			if err := yaml.Unmarshal(data, &cc); err != nil {
				t.Fatal(err)
			}
			written := map[string]string{}
			for _, wf := range cc.WriteFiles {
				written[wf.Path] = wf.Content
				if strings.HasPrefix(wf.Path, "/etc/vipkeeper/") && (wf.Permissions != "0640" || wf.Owner != "root:root") {
					t.Errorf("%s: owner %q permissions %q, want root:root 0640", wf.Path, wf.Owner, wf.Permissions)
				}
			}
			toml, ok := written[agent.DefaultConfigPath]
			if !ok {
				t.Fatalf("does not write %s", agent.DefaultConfigPath)
			}
			cfg, err := agent.ParseConfig(agent.DefaultConfigPath, []byte(toml))
			if err != nil {
				t.Fatalf("its agent.toml: %v", err)
			}
			if cfg.Metadata.File != "" {
				doc, ok := written[cfg.Metadata.File]
				if !ok {
					t.Fatalf("agent.toml reads metadata from %s, which the example does not write", cfg.Metadata.File)
				}
				md, err := vrrp.Parse([]byte(doc))
				if err != nil {
					t.Fatalf("its metadata document: %v", err)
				}
				if cfg.Member != "" && !slices.ContainsFunc(md.Members, func(m vrrp.Member) bool { return m.Name == cfg.Member }) {
					t.Errorf("agent.toml member %q is not a member of the group", cfg.Member)
				}
			}
			runcmd := strings.ToLower(strings.Join(flatten(cc.Runcmd), " "))
			if !slices.Contains(cc.Packages, "vipkeeper-agent") && !strings.Contains(runcmd, "vipkeeper-agent") {
				t.Error("installs no vipkeeper-agent package")
			}
			if !regexp.MustCompile(`systemctl enable --now vipkeeper-agent\.service keepalived\.service`).MatchString(runcmd) {
				t.Errorf("runcmd %q does not enable and start vipkeeper-agent and keepalived", runcmd)
			}
			for _, m := range regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}\b`).FindAllString(string(data), -1) {
				a, err := netip.ParseAddr(m)
				if err != nil {
					continue
				}
				if !slices.ContainsFunc(docNets, func(p netip.Prefix) bool { return p.Contains(a) }) {
					t.Errorf("address %s is outside the documentation ranges", a)
				}
			}
		})
	}
}

// flatten turns runcmd entries (strings or lists of strings) into strings.
func flatten(items []any) []string {
	var out []string
	for _, it := range items {
		switch v := it.(type) {
		case string:
			out = append(out, v)
		case []any:
			var words []string
			for _, w := range v {
				if s, ok := w.(string); ok {
					words = append(words, s)
				}
			}
			out = append(out, strings.Join(words, " "))
		}
	}
	return out
}

// cloud-init's own schema accepts every example; the control shows that it
// rejects a wrong one.
func TestCloudInitSchema(t *testing.T) {
	requireCommands(t, "cloud-init")
	schema := func(file string) (string, error) {
		out, err := exec.Command("cloud-init", "schema", "--config-file", file).CombinedOutput()
		return string(out), err
	}
	for _, file := range cloudInitExamples(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			out, err := schema(file)
			if err != nil || !strings.Contains(out, "Valid cloud-config") {
				t.Fatalf("cloud-init schema --config-file %s: %v\n%s", file, err, out)
			}
		})
	}
	t.Run("control: invalid example", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		writeFile(t, bad, "#cloud-config\nwrite_files:\n  - path: /etc/vipkeeper/agent.toml\n    permissions: 640\n", 0o644)
		if out, err := schema(bad); err == nil {
			t.Fatalf("cloud-init schema accepted a numeric permissions field:\n%s", out)
		}
	})
}
