package sdlab

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A broken example does not pass unnoticed: the inline example with one
// mistake boots a guest, and what cloud-init reports there fails the
// lab's check. A wrong key in a write_files entry (cloud-init 22.4, as
// bookworm ships it, logs a schema warning, applies what it understands
// and reports status done: the file is written with the default mode);
// an owner that does not exist (write_files raises: status error, the
// error in `cloud-init status --long`, cloud-init.service failed, the
// boot degraded).
func TestBrokenExample(t *testing.T) {
	requireLab(t)
	t.Parallel()
	f := getFixture(t)
	good := string(example(t, f, "vipkeeper-agent-inline.yaml"))
	// The example's write_files entries of agent.toml and metadata.json:
	// path, owner, permissions.
	const (
		agentTOML = "  - path: /etc/vipkeeper/agent.toml\n    owner: root:root\n    permissions: \"0640\"\n"
		metadata  = "  - path: /etc/vipkeeper/metadata.json\n    owner: root:root\n    permissions: \"0640\"\n"
	)
	for _, entry := range []string{agentTOML, metadata} {
		if strings.Count(good, entry) != 1 {
			t.Fatalf("the inline example has no write_files entry %q to break", entry)
		}
	}
	tests := []struct {
		name, broken string
		// check judges the guest; r is cloud-init's report there.
		check func(t *testing.T, c *Container, r *CloudInitReport, bootErr error)
	}{
		{
			name:   "wrong key",
			broken: strings.Replace(good, agentTOML, strings.Replace(agentTOML, "permissions:", "permission:", 1), 1),
			check: func(t *testing.T, c *Container, r *CloudInitReport, bootErr error) {
				if bootErr != nil {
					t.Fatalf("boot: %v", bootErr)
				}
				if !strings.Contains(r.Schema, "write_files.0") || !strings.Contains(r.Schema, "'permission' was unexpected") {
					t.Errorf("cloud-init schema --system: %q, want the unexpected key of write_files.0 named", r.Schema)
				}
				if !containsAny(r.Warnings, "Invalid cloud-config provided") {
					t.Errorf("cloud-init.log warnings %q, want the invalid cloud-config", r.Warnings)
				}
				// What the mistake costs: the configuration is readable by all.
				if got := strings.TrimSpace(run(t, t.Context(), c, "stat", "-c", "%a", "/etc/vipkeeper/agent.toml")); got != "644" {
					t.Errorf("agent.toml mode %s; cloud-init 22.4 writes it with its default 644", got)
				}
			},
		},
		{
			name: "owner that does not exist",
			// metadata.json, the last entry: cloud-init writes the file,
			// then fails to give it to the user and stops the module. (On
			// agent.toml the error would also leave metadata.json
			// unwritten: the agent never gets ready and the boot waits
			// for its start timeouts.)
			broken: strings.Replace(good, metadata, strings.Replace(metadata, "owner: root:root", "owner: vipkeeper:root", 1), 1),
			check: func(t *testing.T, c *Container, r *CloudInitReport, bootErr error) {
				if !errors.Is(bootErr, ErrDegraded) || !strings.Contains(bootErr.Error(), "cloud-init.service") {
					t.Errorf("boot: %v; want degraded, with cloud-init.service failed", bootErr)
				}
				if r.Status != "error" || !containsAny(r.Errors, "write-files") {
					t.Errorf("cloud-init status %q, errors %q; want error, from write-files", r.Status, r.Errors)
				}
				if !strings.HasPrefix(r.Long, "status: error\n") || !strings.Contains(r.Long, "write-files") || !strings.Contains(r.Long, "name not found") || !strings.Contains(r.Long, "vipkeeper") {
					t.Errorf("cloud-init status --long:\n%s\nwant status: error naming write-files and the user", r.Long)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.broken == good {
				t.Fatal("the example was not broken")
			}
			l := newLab(t, f)
			ctx := t.Context()
			for _, ns := range []string{"br", "m"} {
				if err := l.AddNS(ns); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Bridge("br", "br0", "192.0.2.1/24"); err != nil {
				t.Fatal(err)
			}
			if err := guestNet(l, "br", "m", "vm-m", "52:54:00:00:02:0b", "192.0.2.11", "192.0.2.1"); err != nil {
				t.Fatal(err)
			}
			serveFiles(t, l.NS("br"), "192.0.2.1:80", map[string]string{
				"/vipkeeper/vipkeeper-agent_amd64.deb": f.v1["vipkeeper-agent"],
			})
			start := time.Now()
			c, bootErr := l.Boot(ctx, "nginx-master", "m", BootOptions{UserData: []byte(tt.broken)})
			if c == nil || c.Leader() == 0 || c.Exited() {
				t.Fatalf("boot: %v", bootErr)
			}
			t.Logf("timing: boot with the broken example in %s", time.Since(start).Round(10*time.Millisecond))
			r, err := c.CloudInit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("cloud-init status --long:\n%s", r.Long)
			cerr := r.Err()
			if !errors.Is(cerr, ErrCloudInit) {
				t.Errorf("the lab's check passed the broken example: %v", cerr)
			}
			t.Logf("the lab's check: %v", cerr)
			tt.check(t, c, r, bootErr)
		})
	}
}

func containsAny(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
