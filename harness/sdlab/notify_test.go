package sdlab

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestParseNotify(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
		err  bool
	}{
		{name: "nspawn leader", in: "STATUS=Container running.\nX_NSPAWN_LEADER_PID=4242", want: map[string]string{"STATUS": "Container running.", "X_NSPAWN_LEADER_PID": "4242"}},
		{name: "ready with trailing newline", in: "READY=1\n", want: map[string]string{"READY": "1"}},
		{name: "empty lines ignored", in: "\n\nREADY=1\n\n", want: map[string]string{"READY": "1"}},
		{name: "value with equals", in: "STATUS=a=b", want: map[string]string{"STATUS": "a=b"}},
		{name: "empty value", in: "STATUS=", want: map[string]string{"STATUS": ""}},
		{name: "last wins", in: "STATUS=one\nSTATUS=two", want: map[string]string{"STATUS": "two"}},
		{name: "empty datagram", in: "", want: map[string]string{}},
		{name: "no equals", in: "READY", err: true},
		{name: "lower-case key", in: "ready=1", err: true},
		{name: "empty key", in: "=1", err: true},
		{name: "space in key", in: "MAIN PID=1", err: true},
		{name: "NUL in value", in: "STATUS=a\x00b", err: true},
		{name: "too long", in: "STATUS=" + strings.Repeat("x", maxNotify), err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNotify([]byte(tt.in))
			if tt.err {
				if !errors.Is(err, ErrBadNotify) {
					t.Fatalf("ParseNotify(%q) = %v, %v; want ErrBadNotify", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseNotify(%q): %v", tt.in, err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("ParseNotify(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParseNotify: the notify socket takes datagrams from nspawn; any
// input either parses into valid keys and values or is ErrBadNotify.
func FuzzParseNotify(f *testing.F) {
	for _, s := range []string{
		"READY=1",
		"STATUS=Container running.\nX_NSPAWN_LEADER_PID=4242\n",
		"STATUS=Startup finished in 1.2s.\nREADY=1",
		"=", "A", "\n\n", "A=\x00", "WATCHDOG=1\nWATCHDOG_USEC=30000000",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseNotify(b)
		if err != nil {
			if !errors.Is(err, ErrBadNotify) {
				t.Fatalf("error %v is not ErrBadNotify", err)
			}
			return
		}
		for k, v := range m {
			if !validNotifyKey([]byte(k)) {
				t.Errorf("accepted key %q", k)
			}
			if strings.ContainsAny(v, "\n\x00") {
				t.Errorf("value of %s holds a newline or NUL: %q", k, v)
			}
		}
	})
}
