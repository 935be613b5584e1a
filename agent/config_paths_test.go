package agent

import (
	"errors"
	"testing"

	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// TestConfigRefusesDangerousPaths: --check-config refuses paths that would
// make the agent replace or remove what is not its own, naming the key.
func TestConfigRefusesDangerousPaths(t *testing.T) {
	const src = "[metadata]\nfile = \"/var/lib/vipkeeper/metadata.json\"\n"
	tests := []struct {
		name, top, keepalived, key string
	}{
		{"scripts_dir /", "", `scripts_dir = "/"`, "keepalived.scripts_dir"},
		{"scripts_dir /etc", "", `scripts_dir = "/etc"`, "keepalived.scripts_dir"},
		{"scripts_dir /usr/bin", "", `scripts_dir = "/usr/bin"`, "keepalived.scripts_dir"},
		{"scripts_dir /var/lib", "", `scripts_dir = "/var/lib"`, "keepalived.scripts_dir"},
		{"scripts_dir the config's directory", "", "config = \"/srv/ka/keepalived.conf\"\nscripts_dir = \"/srv/ka\"", "keepalived.scripts_dir"},
		{"pid_file is keepalived.conf", "", `pid_file = "/etc/keepalived/keepalived.conf"`, "keepalived.pid_file"},
		{"pid_file is the socket", "socket = \"/run/vipkeeper/agent.sock\"\n", `pid_file = "/run/vipkeeper/agent.sock"`, "keepalived.pid_file"},
		{"pid_file inside scripts_dir", "", `pid_file = "/etc/keepalived/vipkeeper/ka.pid"`, "keepalived.pid_file"},
		{"state_dir inside scripts_dir", "state_dir = \"/etc/keepalived/vipkeeper/state\"\n", "", "state_dir"},
		{"state_dir is scripts_dir", "state_dir = \"/etc/keepalived/vipkeeper\"\n", "", "state_dir"},
		{"spool_dir inside scripts_dir", "spool_dir = \"/etc/keepalived/vipkeeper/spool\"\n", "", "spool_dir"},
		{"scripts_dir inside state_dir", "", `scripts_dir = "/var/lib/vipkeeper/scripts"`, "keepalived.scripts_dir"},
		{"config inside scripts_dir", "", "config = \"/etc/keepalived/vipkeeper/conf/keepalived.conf\"", "keepalived.config"},
		{"track_dir relative", "track_dir = \"run/track\"\n", "", "track_dir"},
		{"track_dir /run", "track_dir = \"/run\"\n", "", "track_dir"},
		{"track_dir /etc/keepalived", "track_dir = \"/etc/keepalived\"\n", "", "track_dir"},
		{"track_dir holds the socket", "track_dir = \"/run/vipkeeper\"\n", "", "track_dir"},
		{"track_dir holds the metadata file", "track_dir = \"/var/lib/vipkeeper\"\nstate_dir = \"/srv/state\"\n", "", "track_dir"},
		{"track_dir is scripts_dir", "track_dir = \"/etc/keepalived/vipkeeper\"\n", "", "track_dir"},
		{"track_dir inside scripts_dir", "track_dir = \"/etc/keepalived/vipkeeper/track\"\n", "", "track_dir"},
		{"track_dir inside state_dir", "track_dir = \"/var/lib/vipkeeper/stage\"\n", "", "track_dir"},
		{"track_dir holds the pid file", "track_dir = \"/run/ka\"\n", `pid_file = "/run/ka/keepalived.pid"`, "track_dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.top + src + "[keepalived]\n" + tt.keepalived + "\n"
			_, err := ParseConfig("/etc/vipkeeper/agent.toml", []byte(body))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseConfig accepted (or failed otherwise: %v):\n%s", err, body)
			}
			if ce.Key != tt.key {
				t.Errorf("error names key %q, want %q: %v", ce.Key, tt.key, err)
			}
		})
	}
	t.Run("the defaults pass", func(t *testing.T) {
		cfg, err := ParseConfig("", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TrackDir != "/run/vipkeeper/track" {
			t.Errorf("track_dir defaults to %q, want /run/vipkeeper/track", cfg.TrackDir)
		}
	})
	t.Run("a track_dir of its own passes", func(t *testing.T) {
		cfg, err := ParseConfig("", []byte("track_dir = \"/run/keepalived-track\"\n"+src))
		if err != nil || cfg.TrackDir != "/run/keepalived-track" {
			t.Fatalf("track_dir: %v, %q", err, cfg.TrackDir)
		}
	})
}

// TestConfigInterfaceRuleIsRenders: the agent accepts exactly the
// interface names render accepts (it used to accept "x@y", which render
// then refused at every apply).
func TestConfigInterfaceRuleIsRenders(t *testing.T) {
	m := testMeta(1)
	for _, name := range []string{"eth0", "ens3", "eth0.100", "br-lan", "x@y", "eth0 up", "a/b", "veryveryverylong0", ".", "..", "-eth", "eth:1", ""} {
		_, cfgErr := ParseConfig("", []byte("interface = \""+name+"\"\n[metadata]\nfile = \"/m.json\"\n"))
		_, renderErr := render.Render(m, render.Options{Self: "web-1", Interface: name})
		if name == "" {
			continue // render's default applies
		}
		if (cfgErr == nil) != (renderErr == nil) {
			t.Errorf("interface %q: config says %v, render says %v", name, cfgErr, renderErr)
		}
		var ce *ConfigError
		if cfgErr != nil && (!errors.As(cfgErr, &ce) || ce.Key != "interface") {
			t.Errorf("interface %q: error %v does not name the key interface", name, cfgErr)
		}
		if vrrp.ValidInterfaceName(name) != (cfgErr == nil) {
			t.Errorf("interface %q: vrrp.ValidInterfaceName disagrees with the config", name)
		}
	}
	if _, err := ParseConfig("", []byte("interface = \"x@y\"\n[metadata]\nfile = \"/m.json\"\n")); err == nil {
		t.Error(`interface = "x@y" accepted`)
	}
}
