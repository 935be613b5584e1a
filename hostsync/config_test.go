package hostsync

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const fullConfig = `
state_dir = "/var/lib/vipkeeper"
db_path = "/var/lib/vipkeeper/hostsync.db"
db_timeout = "3s"
admin_socket = "/run/vipkeeper/hostsync.sock"
guest_listen = "192.0.2.1:8750"
garp_interface = "br0"
metrics_listen = "127.0.0.1:9750"
reapply_interval = "30s"
split_brain_window = "5s"
stale_claim_age = "1m"

[dataplane]
backend = "nftables"
table = "vipkeeper"
route_table = 100
timeout = "20s"

[hosts]
host-a = "198.51.100.1"
host-b = "198.51.100.2"
`

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig("hostsync.toml", []byte(fullConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.DBTimeout != 3*time.Second || c.ReapplyInterval != 30*time.Second || c.DataPlane.Timeout != 20*time.Second ||
		c.GARPInterface != "br0" || c.DataPlane.RouteTable != 100 || c.Hosts["host-b"] != netip.MustParseAddr("198.51.100.2") {
		t.Fatalf("config = %+v", c)
	}

	d, err := ParseConfig("empty.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.DBPath != "/var/lib/vipkeeper/hostsync.db" || d.AdminSocket != "/run/vipkeeper/hostsync.sock" ||
		d.GuestListen != DefaultGuestListen || d.DataPlane.Backend != BackendNFTables || d.SplitBrainWindow != DefaultSplitBrainWindow {
		t.Fatalf("defaults = %+v", d)
	}
}

func TestParseConfigErrors(t *testing.T) {
	cases := []struct {
		name, toml, has string
	}{
		{"unknown key", `guest_listn = ":8750"`, "unknown key guest_listn"},
		{"unknown key in a table", "[dataplane]\nbackend = \"nftables\"\ntabel = \"x\"", "unknown key dataplane.tabel"},
		{"relative db path", `db_path = "hostsync.db"`, "db_path"},
		{"bad listen", `guest_listen = "8750"`, "guest_listen"},
		{"host name in listen", `guest_listen = "hostsync:8750"`, "guest_listen"},
		{"bad duration", `db_timeout = "soon"`, "db_timeout"},
		{"negative duration", `split_brain_window = "-1s"`, "split_brain_window"},
		{"bad interface", `garp_interface = "br0; rm -rf"`, "garp_interface"},
		{"unknown backend", "[dataplane]\nbackend = \"iptables\"", "dataplane.backend"},
		{"command backend without command", "[dataplane]\nbackend = \"command\"", "dataplane.command"},
		{"command for nftables", "[dataplane]\ncommand = \"/bin/true\"", "dataplane.command"},
		{"bad table", "[dataplane]\ntable = \"vip keeper\"", "dataplane.table"},
		{"negative probe interval", `probe_interval = "-1s"`, "probe_interval"},
		{"bad netns", "[dataplane]\nnetns = \"../gw\"", "dataplane.netns"},
		{"netns for command", "[dataplane]\nbackend = \"command\"\ncommand = \"/bin/true\"\nnetns = \"gw\"", "dataplane.table"},
		{"bad host address", "[hosts]\nhost-a = \"2001:db8::1\"", "hosts.host-a"},
		{"not an address", "[hosts]\nhost-a = \"host-a.example\"", "hosts"},
		{"syntax", `state_dir = `, "hostsync.toml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("hostsync.toml", []byte(tc.toml))
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v, want ErrConfig", err)
			}
			if !strings.Contains(err.Error(), tc.has) || !strings.Contains(err.Error(), "hostsync.toml") {
				t.Fatalf("error %q does not name %q and the file", err, tc.has)
			}
		})
	}
}

func TestCheckHost(t *testing.T) {
	c, _ := ParseConfig("x.toml", []byte(`garp_interface = "vknoexist0"`))
	if err := c.CheckHost(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "vknoexist0") {
		t.Fatalf("CheckHost = %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(fullConfig))
	f.Add([]byte("[dataplane]\nbackend = \"command\"\ncommand = \"/usr/local/bin/hook\"\nargs = [\"--apply\"]"))
	f.Add([]byte(`guest_listen = ":0"`))
	f.Add([]byte("[hosts]\n\"a b\" = \"1.2.3.4\""))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.toml", data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
	})
}
