package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

type table struct {
	Backend string   `toml:"backend"`
	Args    []string `toml:"args"`
}

type item struct {
	Name string `toml:"name"`
}

type testConfig struct {
	Dir     string            `toml:"dir"`
	Timeout time.Duration     `toml:"timeout"`
	Table   table             `toml:"table"`
	Hosts   map[string]string `toml:"hosts"`
	Items   []item            `toml:"items"`
	Skipped string            `toml:"-"`
	private string            //lint:ignore U1000 an unexported field is not a key
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name, data string
		key        string
		line       int
		unknown    bool
		msgHas     string // part of the allowed keys the message lists
	}{
		{"unknown top key", "dir = \"/x\"\ntimout = \"1s\"\n", "timout", 2, true, "allowed here: [[items]], [hosts] KEY = ..., [table], dir, timeout"},
		{"unknown key in a table", "[table]\nbackend = \"a\"\nbakend = \"b\"\n", "table.bakend", 3, true, "allowed in [table]: args, backend"},
		{"skipped field", "Skipped = \"x\"\n", "Skipped", 1, true, ""},
		{"syntax", "dir = \"/x\"\ntimeout = \n", "timeout", 2, false, ""},
		{"bad duration", "timeout = \"soon\"\n", "timeout", 1, false, ""},
		{"wrong type", "[table]\nbackend = 1\n", "table.backend", 2, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c testConfig
			_, err := Load("test.toml", []byte(tt.data), &c)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *Error", err, err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not match ErrInvalid: %v", err)
			}
			if ce.File != "test.toml" || ce.Key != tt.key || ce.Line != tt.line {
				t.Errorf("file %q key %q line %d, want test.toml %q %d: %v", ce.File, ce.Key, ce.Line, tt.key, tt.line, err)
			}
			if got := errors.Is(err, ErrUnknownKey); got != tt.unknown {
				t.Errorf("errors.Is(err, ErrUnknownKey) = %v, want %v", got, tt.unknown)
			}
			if !strings.Contains(ce.Msg, tt.msgHas) {
				t.Errorf("message %q does not list %q", ce.Msg, tt.msgHas)
			}
		})
	}
}

func TestLoadAccepts(t *testing.T) {
	c := testConfig{Timeout: time.Second}
	md, err := Load("t.toml", []byte("dir = \"/x\"\n[hosts]\na = \"b\"\n[[items]]\nname = \"i\"\n"), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Dir != "/x" || c.Timeout != time.Second || c.Hosts["a"] != "b" || len(c.Items) != 1 || !md.IsDefined("dir") {
		t.Errorf("decoded %+v", c)
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{File: "a.toml", Key: "k", Line: 3, Msg: "is wrong"}
	if got, want := e.Error(), "config: a.toml:3: k: is wrong"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &Error{Key: "k", Msg: "is wrong"}
	if got, want := e.Error(), "config: k: is wrong"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestKeys(t *testing.T) {
	if got, want := Keys(&testConfig{}, "table"), []string{"args", "backend"}; !slices.Equal(got, want) {
		t.Errorf("Keys(table) = %q, want %q", got, want)
	}
	if got, want := Keys(testConfig{}, "items"), []string{"name"}; !slices.Equal(got, want) {
		t.Errorf("Keys(items) = %q, want %q", got, want)
	}
	if got := Keys(testConfig{}, "nope"); got != nil {
		t.Errorf("Keys(nope) = %q", got)
	}
}

func TestValidators(t *testing.T) {
	ok := func(name string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := func(name string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ok("clean abs", AbsPath("/var/lib/x"))
	bad("relative", AbsPath("var/lib"))
	bad("unclean", AbsPath("/var//lib"))
	bad("empty", AbsPath(""))
	ok("socket 107", SocketPath("/"+strings.Repeat("s", 106)))
	bad("socket 108", SocketPath("/"+strings.Repeat("s", 107)))
	bad("relative socket", SocketPath("run/x.sock"))
	ok("listen", ListenAddr("127.0.0.1:9851"))
	bad("listen name", ListenAddr("localhost:9851"))
	ok("duration", Duration(time.Second, 0, time.Minute))
	bad("duration above", Duration(time.Hour, 0, time.Minute))
	ok("positive", Positive(time.Nanosecond))
	bad("zero", Positive(0))
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte("dir = \"/x\"\n[table]\nbackend = \"a\"\n"))
	f.Add([]byte("[[items]]\nname = 1\n"))
	f.Add([]byte("timeout = \"1s\"\nx = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c testConfig
		if _, err := Load("fuzz.toml", data, &c); err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *Error: %v", err, err)
			}
		}
	})
}
