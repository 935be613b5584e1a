package packaging

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/agent"
	"github.com/vipkeeper/vipkeeper/hostsync"
)

// defaultLine is a `#key = value` line of a default configuration file: the
// built-in default of key, shown commented out.
var defaultLine = regexp.MustCompile(`(?m)^#([a-z_]+ = .*)$`)

// uncommentDefaults turns every `#key = value` line into `key = value`.
func uncommentDefaults(data []byte) []byte {
	return defaultLine.ReplaceAll(data, []byte("$1"))
}

// documentedKeys are the keys a configuration file mentions, commented or not.
func documentedKeys(data []byte) map[string]bool {
	keys := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#?\s*([a-z_]+) = `).FindAllSubmatch(data, -1) {
		keys[string(m[1])] = true
	}
	for _, m := range regexp.MustCompile(`(?m)^#?\s*\[\[?([a-z_]+)\]?\]`).FindAllSubmatch(data, -1) {
		keys[string(m[1])] = true
	}
	return keys
}

// tomlKeys lists the toml keys of a config struct and of its nested
// structs (one level: the [tables]), skipping the types in skip.
func tomlKeys(typ reflect.Type, skip ...reflect.Type) []string {
	var keys []string
	for f := range typ.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		keys = append(keys, tag)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() == typ.PkgPath() && !slicesContains(skip, ft) {
			keys = append(keys, tomlKeys(ft, skip...)...)
		}
	}
	return keys
}

func slicesContains(types []reflect.Type, t reflect.Type) bool {
	for _, x := range types {
		if x == t {
			return true
		}
	}
	return false
}

func readPackagingFile(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.FromSlash(rel))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The shipped agent.toml names no metadata source (there is no sensible
// default address), so the daemon refuses it until one is set; every
// `#key = value` it shows is the real built-in default; every key is there.
func TestAgentDefaultConfig(t *testing.T) {
	const path = agent.DefaultConfigPath
	data := readPackagingFile(t, "etc/agent.toml")
	const metadataURL = `url = "http://192.0.2.1:8750/v1/metadata"`

	t.Run("refused until a metadata source is set", func(t *testing.T) {
		_, err := agent.ParseConfig(path, data)
		var ce *agent.ConfigError
		if !errors.As(err, &ce) || ce.Key != "metadata" {
			t.Fatalf("ParseConfig(shipped agent.toml) = %v, want a *agent.ConfigError on key metadata", err)
		}
	})

	t.Run("valid with a metadata url", func(t *testing.T) {
		set := strings.Replace(string(data), "[metadata]\n", "[metadata]\n"+metadataURL+"\n", 1)
		if set == string(data) {
			t.Fatal("agent.toml has no [metadata] table")
		}
		if _, err := agent.ParseConfig(path, []byte(set)); err != nil {
			t.Fatalf("shipped agent.toml + %s: %v", metadataURL, err)
		}
	})

	t.Run("commented defaults are the built-in defaults", func(t *testing.T) {
		if n := len(defaultLine.FindAll(data, -1)); n < 20 {
			t.Fatalf("agent.toml shows %d `#key = value` defaults, want every key's", n)
		}
		all := strings.Replace(string(uncommentDefaults(data)), "[metadata]\n", "[metadata]\n"+metadataURL+"\n", 1)
		got, err := agent.ParseConfig(path, []byte(all))
		if err != nil {
			t.Fatalf("agent.toml with every default uncommented: %v", err)
		}
		want, err := agent.ParseConfig(path, []byte("[metadata]\n"+metadataURL+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(agent.Config{})); diff != "" {
			t.Errorf("uncommented defaults differ from the built-in ones (-built-in +file):\n%s", diff)
		}
	})

	t.Run("every key is documented", func(t *testing.T) {
		doc := documentedKeys(data)
		for _, k := range tomlKeys(reflect.TypeFor[agent.Config](), reflect.TypeFor[agent.CheckConfig]()) {
			if !doc[k] {
				t.Errorf("agent.toml does not mention key %q", k)
			}
		}
	})
}

// The shipped hostsync.toml is valid as it is (hostsync starts on install),
// its `#key = value` lines are the built-in defaults, every key is there.
func TestHostsyncDefaultConfig(t *testing.T) {
	const path = hostsync.DefaultConfigPath
	data := readPackagingFile(t, "etc/hostsync.toml")

	t.Run("valid as shipped", func(t *testing.T) {
		if _, err := hostsync.ParseConfig(path, data); err != nil {
			t.Fatalf("ParseConfig(shipped hostsync.toml): %v", err)
		}
	})

	t.Run("commented defaults are the built-in defaults", func(t *testing.T) {
		if n := len(defaultLine.FindAll(data, -1)); n < 10 {
			t.Fatalf("hostsync.toml shows %d `#key = value` defaults, want every key's", n)
		}
		got, err := hostsync.ParseConfig(path, uncommentDefaults(data))
		if err != nil {
			t.Fatalf("hostsync.toml with every default uncommented: %v", err)
		}
		want, err := hostsync.ParseConfig(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(want, got) {
			t.Errorf("uncommented defaults differ from the built-in ones:\nbuilt-in %+v\nfile     %+v", want, got)
		}
	})

	t.Run("every key is documented", func(t *testing.T) {
		doc := documentedKeys(data)
		for _, k := range tomlKeys(reflect.TypeFor[hostsync.Config]()) {
			if !doc[k] {
				t.Errorf("hostsync.toml does not mention key %q", k)
			}
		}
	})
}
