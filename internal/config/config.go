// Package config is the strict TOML loader both daemons use for their
// configuration files: keys the configuration struct does not declare are
// refused, and every error is a *Error naming the file, the key, the line
// where it is known and what is allowed. It also holds the validators the
// two configurations share (paths, the socket path, listen addresses,
// durations).
package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/vipkeeper/vipkeeper/internal/daemon"
	"github.com/vipkeeper/vipkeeper/internal/hostport"
)

// ErrInvalid matches every *Error (errors.Is(err, ErrInvalid)).
var ErrInvalid = errors.New("invalid configuration")

// ErrUnknownKey is the Err of a *Error for a key the configuration does
// not declare.
var ErrUnknownKey = errors.New("unknown key")

// Error is a configuration error.
type Error struct {
	// File is the file's name as given to Load ("" when built in code
	// or checked apart from a file, e.g. a host check).
	File string
	// Key is the dotted key, e.g. "dataplane.backend"; "" for the file
	// as a whole (a syntax error).
	Key string
	// Line is the line of the key or of the syntax error, 0 when unknown.
	Line int
	// Msg says what is wrong and what is allowed.
	Msg string
	// Err is ErrUnknownKey for an unknown key, the decoder's error for
	// a file that does not decode, else nil.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Errorf is a *Error for file and key with a formatted message.
func Errorf(file, key, format string, args ...any) *Error {
	return &Error{File: file, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Load decodes data (the contents of file, which is only used in errors)
// into v, a pointer to a struct with toml tags, holding the defaults
// already. A key v does not declare is an error (Err ErrUnknownKey) that
// lists the keys allowed in its table. The metadata tells which keys the
// file set.
func Load(file string, data []byte, v any) (toml.MetaData, error) {
	md, err := toml.Decode(string(data), v)
	if err != nil {
		e := &Error{File: file, Msg: err.Error(), Err: err}
		var pe toml.ParseError
		var ppe *toml.ParseError
		switch {
		case errors.As(err, &pe):
			e.Line, e.Key, e.Msg = pe.Position.Line, pe.LastKey, pe.Message
		case errors.As(err, &ppe):
			e.Line, e.Key, e.Msg = ppe.Position.Line, ppe.LastKey, ppe.Message
		default:
			e.Line, e.Key = lineOfMessage(err.Error())
			if e.Line > 0 {
				e.Msg = strings.TrimSpace(err.Error()[strings.Index(err.Error(), "):")+2:])
			}
		}
		return md, e
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		k := und[0]
		msg := "is not a known key"
		if len(keys) > 1 {
			msg += " (unknown keys: " + strings.Join(keys, ", ") + ")"
		}
		if allowed := Keys(v, k[:len(k)-1]...); len(allowed) > 0 {
			where := "here"
			if len(k) > 1 {
				where = "in [" + strings.Join(k[:len(k)-1], ".") + "]"
			}
			msg += "; allowed " + where + ": " + strings.Join(allowed, ", ")
		}
		return md, &Error{File: file, Key: keys[0], Line: keyLine(data, k), Msg: msg, Err: ErrUnknownKey}
	}
	return md, nil
}

var reLastKey = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\)`)

// lineOfMessage reads the line and key from a decoder error that is not
// a toml.ParseError ("toml: line 2 (last key "b.x"): ...").
func lineOfMessage(s string) (int, string) {
	m := reLastKey.FindStringSubmatch(s)
	if m == nil {
		return 0, ""
	}
	var n int
	fmt.Sscan(m[1], &n)
	return n, m[2]
}

var (
	reTable = regexp.MustCompile(`^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$`)
	reKey   = regexp.MustCompile(`^\s*("[^"]*"|[A-Za-z0-9_-]+)\s*=`)
)

// keyLine finds the line of key in data (tables and plain keys; 0 when
// the key is written another way, e.g. dotted or inline).
func keyLine(data []byte, key toml.Key) int {
	table := ""
	want := key.String()
	for i, line := range strings.Split(string(data), "\n") {
		if m := reTable.FindStringSubmatch(line); m != nil {
			table = m[1]
			if table == want {
				return i + 1
			}
			continue
		}
		if m := reKey.FindStringSubmatch(line); m != nil {
			k := strings.Trim(m[1], `"`)
			if table != "" {
				k = table + "." + k
			}
			if k == want {
				return i + 1
			}
		}
	}
	return 0
}

// Keys lists the keys v (a struct or a pointer to one) declares in the
// table at path (the top level without path); a table is listed as
// "[name]", a map as "[name] KEY = ...".
func Keys(v any, path ...string) []string {
	t := reflect.TypeOf(v)
	for _, p := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		f, ok := fieldByKey(t, p)
		if !ok {
			return nil
		}
		t = f.Type
	}
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := tagName(f)
		if name == "" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]():
			name = "[" + name + "]"
		case ft.Kind() == reflect.Map:
			name = "[" + name + "] KEY = ..."
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			name = "[[" + name + "]]"
		}
		keys = append(keys, name)
	}
	slices.Sort(keys)
	return keys
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); tagName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// tagName is the TOML key of f ("" for unexported or skipped fields).
func tagName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return name
}

// AbsPath checks that p is a clean absolute path.
func AbsPath(p string) error {
	if p == "" {
		return errors.New("is required, an absolute path")
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("%q is not a clean absolute path", p)
	}
	return nil
}

// SocketPath checks that p is an absolute path short enough for a unix
// socket (daemon.MaxSocketPath bytes).
func SocketPath(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%q is not an absolute path", p)
	}
	if len(p) > daemon.MaxSocketPath {
		return fmt.Errorf("%q is %d bytes, longer than a unix socket path may be (%d bytes)", p, len(p), daemon.MaxSocketPath)
	}
	return nil
}

// ListenAddr checks a listen address, IP:PORT (see package hostport).
func ListenAddr(v string) error { return hostport.Check(v) }

// Duration checks that d is within [lo, hi].
func Duration(d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("%s is out of range, allowed %s to %s (a string such as \"30s\")", d, lo, hi)
	}
	return nil
}

// Positive checks that d is above zero.
func Positive(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s must be positive, e.g. \"10s\"", d)
	}
	return nil
}
