package hostsync

import (
	"testing"
)

func TestConfigAllowEmpty(t *testing.T) {
	cfg, err := ParseConfig("test.toml", []byte("[dataplane]\nallow_empty = true\n"))
	if err != nil || !cfg.DataPlane.AllowEmpty {
		t.Fatalf("allow_empty = true: %+v, %v", cfg.DataPlane, err)
	}
	if cfg, _ := ParseConfig("test.toml", nil); cfg.DataPlane.AllowEmpty {
		t.Fatal("allow_empty defaults to true")
	}
}
