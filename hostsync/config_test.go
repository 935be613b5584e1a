package hostsync

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/internal/config"
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
		name, toml string
		key        string // the key the error names
		unknown    bool   // errors.Is(err, config.ErrUnknownKey)
		line       int    // 0: not checked
	}{
		{"unknown key", `guest_listn = ":8750"`, "guest_listn", true, 1},
		{"unknown key in a table", "[dataplane]\nbackend = \"nftables\"\ntabel = \"x\"", "dataplane.tabel", true, 3},
		{"relative db path", `db_path = "hostsync.db"`, "db_path", false, 0},
		{"relative admin socket", `admin_socket = "hostsync.sock"`, "admin_socket", false, 0},
		{"admin socket too long", `admin_socket = "/run/` + strings.Repeat("x", 103) + `"`, "admin_socket", false, 0},
		{"bad listen", `guest_listen = "8750"`, "guest_listen", false, 0},
		{"host name in listen", `guest_listen = "hostsync:8750"`, "guest_listen", false, 0},
		{"bad duration", `db_timeout = "soon"`, "db_timeout", false, 1},
		{"negative duration", `split_brain_window = "-1s"`, "split_brain_window", false, 0},
		{"bad interface", `garp_interface = "br0; rm -rf"`, "garp_interface", false, 0},
		{"unknown backend", "[dataplane]\nbackend = \"iptables\"", "dataplane.backend", false, 0},
		{"command backend without command", "[dataplane]\nbackend = \"command\"", "dataplane.command", false, 0},
		{"command for nftables", "[dataplane]\ncommand = \"/bin/true\"", "dataplane.command", false, 0},
		{"bad table", "[dataplane]\ntable = \"vip keeper\"", "dataplane.table", false, 0},
		{"negative probe interval", `probe_interval = "-1s"`, "probe_interval", false, 0},
		{"bad netns", "[dataplane]\nnetns = \"../gw\"", "dataplane.netns", false, 0},
		{"netns with the nft script backend", "[dataplane]\nnft = \"/usr/sbin/nft\"\nnetns = \"gw\"", "dataplane.netns", false, 0},
		{"netns for command", "[dataplane]\nbackend = \"command\"\ncommand = \"/bin/true\"\nnetns = \"gw\"", "dataplane.table", false, 0},
		{"bad host address", "[hosts]\nhost-a = \"2001:db8::1\"", "hosts.host-a", false, 0},
		{"not an address", "[hosts]\nhost-a = \"host-a.example\"", "hosts.host-a", false, 2},
		{"syntax", "\nstate_dir = ", "state_dir", false, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("hostsync.toml", []byte(tc.toml))
			checkConfigError(t, err, tc.key, tc.unknown, tc.line)
		})
	}
}

// checkConfigError checks that err is a *config.Error on hostsync.toml
// naming key (and line, unless 0).
func checkConfigError(t *testing.T, err error, key string, unknown bool, line int) {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %T %v is not a *config.Error", err, err)
	}
	if !errors.Is(err, ErrConfig) {
		t.Errorf("error %v does not match ErrConfig", err)
	}
	if ce.File != "hostsync.toml" || ce.Key != key {
		t.Errorf("error names file %q key %q, want hostsync.toml %q: %v", ce.File, ce.Key, key, err)
	}
	if got := errors.Is(err, config.ErrUnknownKey); got != unknown {
		t.Errorf("errors.Is(err, config.ErrUnknownKey) = %v, want %v: %v", got, unknown, err)
	}
	if line != 0 && ce.Line != line {
		t.Errorf("error on line %d, want %d: %v", ce.Line, line, err)
	}
}

// TestUnknownKeysFromTheStruct: the keys a file may hold are Config's, so
// store, role and [etcd] are known (a hand-written list once missed them)
// and an unknown key's error lists what its table allows.
func TestUnknownKeysFromTheStruct(t *testing.T) {
	if _, err := ParseConfig("hostsync.toml", []byte("store = \"bbolt\"\nrole = \"host\"\n")); err != nil {
		t.Fatal(err)
	}
	_, err := ParseConfig("hostsync.toml", []byte("store = \"etcd\"\n[etcd]\nendpoints = [\"http://192.0.2.1:2379\"]\nusername = \"x\""))
	checkConfigError(t, err, "etcd.username", true, 4)
	var ce *config.Error
	if errors.As(err, &ce) && !strings.Contains(ce.Msg, "allowed in [etcd]: ca_file, cert_file, dial_timeout, endpoints, host_id, key_file, lease_ttl, prefix") {
		t.Errorf("message does not list [etcd]'s keys: %q", ce.Msg)
	}
}

func TestCheckHost(t *testing.T) {
	c, _ := ParseConfig("x.toml", []byte(`garp_interface = "vknoexist0"`))
	err := c.CheckHost()
	var ce *config.Error
	if !errors.As(err, &ce) || !errors.Is(err, ErrConfig) || ce.Key != "garp_interface" {
		t.Fatalf("CheckHost = %v, want a *config.Error on garp_interface", err)
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
			var ce *config.Error
			if !errors.As(err, &ce) || !errors.Is(err, ErrConfig) {
				t.Fatalf("error %T %v is not a *config.Error", err, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
	})
}
