package agent

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

const minimalConfig = `
member = "nginx-master"
[metadata]
file = "/etc/vipkeeper/metadata.json"
`

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig("agent.toml", []byte(minimalConfig))
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	if cfg.Interface != def.Interface || cfg.StateDir != def.StateDir || cfg.Socket != def.Socket {
		t.Errorf("defaults not kept: %+v", cfg)
	}
	if cfg.SpoolDir != "/var/lib/vipkeeper/spool" {
		t.Errorf("SpoolDir = %q, want state_dir/spool", cfg.SpoolDir)
	}
	if cfg.ReportURL() != "" {
		t.Errorf("ReportURL = %q with a file source and no report.url, want off", cfg.ReportURL())
	}
	if cfg.Path() != "agent.toml" {
		t.Errorf("Path = %q", cfg.Path())
	}
}

func TestParseConfigExample(t *testing.T) {
	data, err := os.ReadFile("../cmd/vipkeeper-agent/agent.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("agent.example.toml", data)
	if err != nil {
		t.Fatalf("the shipped example does not parse: %v", err)
	}
	if got, want := cfg.ReportURL(), "http://192.0.2.1:8750/v1/claims"; got != want {
		t.Errorf("ReportURL = %q, want %q (metadata host + claims path)", got, want)
	}
	if cfg.Report.MinBackoff != 500*time.Millisecond || cfg.Keepalived.Reload != ReloadAuto {
		t.Errorf("example values not decoded: %+v", cfg.Report)
	}
}

func TestParseConfigLocalChecks(t *testing.T) {
	cfg, err := ParseConfig("", []byte(minimalConfig+`
[[checks]]
name = "chk_http"
kind = "http"
url = "http://127.0.0.1/healthz"
interval = "3s"
weight = -5
fall = 2
`))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.LocalChecks()
	want := vrrp.Check{Name: "chk_http", Kind: vrrp.CheckHTTP, URL: "http://127.0.0.1/healthz", Interval: 3000, Weight: -5, Fall: 2}
	if len(got) != 1 || got[0].Name != want.Name || got[0].Kind != want.Kind || got[0].URL != want.URL ||
		got[0].Interval != want.Interval || got[0].Weight != want.Weight || got[0].Fall != want.Fall {
		t.Errorf("LocalChecks = %+v, want %+v", got, want)
	}
}

// TestParseConfigOnFailure: a local check's on_failure is decoded, and a
// resign check (the default without a weight) may run below a second.
func TestParseConfigOnFailure(t *testing.T) {
	cfg, err := ParseConfig("", []byte(minimalConfig+`
[[checks]]
name = "fast"
kind = "tcp"
address = "127.0.0.1:80"
interval = "50ms"
timeout = "50ms"
[[checks]]
name = "weighted"
kind = "tcp"
address = "127.0.0.1:80"
on_failure = "lower_priority"
weight = 2
`))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.LocalChecks()
	if got[0].EffectiveOnFailure() != vrrp.OnFailureResign || got[0].Interval != 50 || got[0].Timeout != 50 {
		t.Errorf("fast: %+v, want resign every 50 ms", got[0])
	}
	if got[1].OnFailure != vrrp.OnFailureLowerPriority {
		t.Errorf("weighted: on_failure %q, want lower_priority", got[1].OnFailure)
	}
}

func TestParseConfigErrors(t *testing.T) {
	const src = "[metadata]\nfile = \"/m.json\"\n"
	const tcp = "[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"127.0.0.1:80\"\n"
	tests := []struct {
		name    string
		body    string
		key     string // the key the error must name
		unknown bool   // errors.Is(err, ErrUnknownKey)
	}{
		{"unknown top key", "hosting_type = 1\n" + src, "hosting_type", true},
		{"unknown nested key", src + "pol_interval = \"1s\"\n", "metadata.pol_interval", true},
		{"unknown check key", src + tcp + "port = 1\n", "checks.port", true},
		{"no source", "member = \"a\"\n", "metadata", false},
		{"both sources", src + "url = \"http://192.0.2.1/v1/metadata\"\n", "metadata", false},
		{"relative file", "[metadata]\nfile = \"m.json\"\n", "metadata.file", false},
		{"bad url", "[metadata]\nurl = \"ftp://192.0.2.1/x\"\n", "metadata.url", false},
		{"url with credentials", "[metadata]\nurl = \"http://u:p@192.0.2.1/x\"\n", "metadata.url", false},
		{"bad report url", src + "[report]\nurl = \"192.0.2.1/v1/claims\"\n", "report.url", false},
		{"bad member", "member = \"-x\"\n" + src, "member", false},
		{"bad interface", "interface = \"eth0 up\"\n" + src, "interface", false},
		{"relative state dir", "state_dir = \"var/lib\"\n" + src, "state_dir", false},
		// The kernel takes 107 bytes (sun_path less its NUL): 108 is refused.
		{"socket path too long", "socket = \"/run/" + strings.Repeat("x", 103) + "\"\n" + src, "socket", false},
		// The rule render applies: keepalived.conf cannot name it.
		{"interface with @", "interface = \"x@y\"\n" + src, "interface", false},
		{"zero poll", src + "poll_interval = \"0s\"\n", "metadata.poll_interval", false},
		{"backoff order", src + "[report]\nmin_backoff = \"10s\"\nmax_backoff = \"1s\"\n", "report.max_backoff", false},
		{"bad reload", src + "[keepalived]\nreload = \"kill\"\n", "keepalived.reload", false},
		{"bad unit", src + "[keepalived]\nunit = \"keepalived\"\n", "keepalived.unit", false},
		{"systemd without unit", src + "[keepalived]\nunit = \"\"\nreload = \"systemd\"\n", "keepalived.unit", false},
		{"bad checks mode", "checks_mode = \"merge\"\n" + src, "checks_mode", false},
		{"history limit", "history_limit = 0\n" + src, "history_limit", false},
		{"invalid check", src + "[[checks]]\nname = \"a b\"\nkind = \"tcp\"\naddress = \"127.0.0.1:80\"\n", "checks[0].name", false},
		{"check sub-ms", src + tcp + "interval = \"1.5ms\"\n", "checks[0]", false},
		{"lower_priority check half second", src + tcp + "weight = 2\ninterval = \"1.5s\"\n", "checks[0].interval", false},
		{"resign check below 50ms", src + tcp + "interval = \"40ms\"\n", "checks[0].interval", false},
		{"resign check in ms steps", src + tcp + "interval = \"105ms\"\n", "checks[0].interval", false},
		{"bad on_failure", src + tcp + "on_failure = \"failover\"\n", "checks[0].on_failure", false},
		{"resign with a weight", src + tcp + "on_failure = \"resign\"\nweight = 2\n", "checks[0].weight", false},
		{"lower_priority without a weight", src + tcp + "on_failure = \"lower_priority\"\n", "checks[0].weight", false},
		{"duplicate check", src + tcp + tcp, "checks[1].name", false},
		{"syntax", "member = \n", "", false},
		{"duration as bad string", src + "timeout = \"five\"\n", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("/etc/vipkeeper/agent.toml", []byte(tt.body))
			if err == nil {
				t.Fatal("accepted")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *ConfigError", err, err)
			}
			if ce.File != "/etc/vipkeeper/agent.toml" {
				t.Errorf("error does not name the file: %v", err)
			}
			if tt.key != "" && ce.Key != tt.key {
				t.Errorf("error names key %q, want %q: %v", ce.Key, tt.key, err)
			}
			if got := errors.Is(err, ErrUnknownKey); got != tt.unknown {
				t.Errorf("errors.Is(err, ErrUnknownKey) = %v, want %v: %v", got, tt.unknown, err)
			}
		})
	}
}

func TestParseConfigErrorLines(t *testing.T) {
	const src = "[metadata]\nfile = \"/m.json\"\n"
	tests := []struct {
		name, body string
		line       int
	}{
		{"unknown top key", "hosting_type = 1\n" + src, 1},
		{"unknown nested key", src + "pol_interval = \"1s\"\n", 3},
		{"syntax", src + "member = \n", 3},
		{"bad duration", src + "timeout = \"five\"\n", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("agent.toml", []byte(tt.body))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *ConfigError", err, err)
			}
			if ce.Line != tt.line {
				t.Errorf("line %d, want %d: %v", ce.Line, tt.line, err)
			}
		})
	}
	long := "socket = \"/run/" + strings.Repeat("x", 102) + "\"\n" + src // 107 bytes
	if _, err := ParseConfig("agent.toml", []byte(long)); err != nil {
		t.Errorf("a 107-byte socket path: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimalConfig))
	f.Add([]byte("[metadata]\nurl = \"http://192.0.2.1:8750/v1/metadata\"\n[[checks]]\nname = \"c\"\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n"))
	f.Add([]byte("interface = 1\n"))
	f.Add([]byte("[report]\nmin_backoff = \"-1s\"\n"))
	if data, err := os.ReadFile("../cmd/vipkeeper-agent/agent.example.toml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("fuzz.toml", data)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *ConfigError: %v", err, err)
			}
			return
		}
		// Whatever is accepted is valid and stays valid.
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		for i, c := range cfg.LocalChecks() {
			if err := vrrp.ValidateCheck("checks", c); err != nil {
				t.Fatalf("accepted check %d invalid: %v", i, err)
			}
		}
	})
}
