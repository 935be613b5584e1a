package sdlab

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrBadNotify is returned (wrapped) by ParseNotify for a datagram that is
// not a list of KEY=VALUE lines.
var ErrBadNotify = errors.New("sdlab: malformed notify message")

// maxNotify is the largest datagram read from the notify socket; systemd
// itself accepts messages of up to a page or so, nspawn sends a few lines.
const maxNotify = 64 << 10

// ParseNotify decodes one sd_notify(3) datagram, as systemd-nspawn sends
// it to $NOTIFY_SOCKET: newline-separated assignments KEY=VALUE, KEY of
// A-Z, 0-9 and _. Empty lines are ignored; a key given twice keeps its last
// value. Anything else is ErrBadNotify.
func ParseNotify(b []byte) (map[string]string, error) {
	if len(b) > maxNotify {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadNotify, len(b))
	}
	m := make(map[string]string)
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			return nil, fmt.Errorf("%w: line %q has no '='", ErrBadNotify, truncate(line))
		}
		if !validNotifyKey(k) {
			return nil, fmt.Errorf("%w: bad key %q", ErrBadNotify, truncate(k))
		}
		if bytes.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("%w: NUL in the value of %s", ErrBadNotify, k)
		}
		m[string(k)] = string(v)
	}
	return m, nil
}

func validNotifyKey(k []byte) bool {
	if len(k) == 0 || len(k) > 64 {
		return false
	}
	for _, c := range k {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func truncate(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}
