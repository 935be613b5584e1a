package control

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/fsutil"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// ErrBadNotify is returned (wrapped) by DecodeNotify for a request or spool
// file that is not a valid notify event.
var ErrBadNotify = errors.New("control: invalid notify event")

// spoolSuffix ends every spool file name; hidden files (temporary files of
// an atomic write in progress) and other names are never read.
const spoolSuffix = ".notify.json"

// DecodeNotify decodes a notify request body or spool file strictly
// (size-limited, unknown fields refused) and validates its arguments with
// vrrp.ParseNotify.
func DecodeNotify(data []byte) (api.NotifyRequest, vrrp.Notify, error) {
	if len(data) > api.MaxBodySize {
		return api.NotifyRequest{}, vrrp.Notify{}, fmt.Errorf("%w: %d bytes, at most %d", ErrBadNotify, len(data), api.MaxBodySize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var req api.NotifyRequest
	if err := dec.Decode(&req); err != nil {
		return api.NotifyRequest{}, vrrp.Notify{}, fmt.Errorf("%w: %v", ErrBadNotify, err)
	}
	if dec.More() {
		return api.NotifyRequest{}, vrrp.Notify{}, fmt.Errorf("%w: trailing data", ErrBadNotify)
	}
	n, err := vrrp.ParseNotify(req.Args)
	if err != nil {
		return api.NotifyRequest{}, vrrp.Notify{}, fmt.Errorf("%w: %w", ErrBadNotify, err)
	}
	return req, n, nil
}

// SpoolWrite stores one event in dir atomically, mode 0600, under a unique
// name that sorts by the event's time, and returns the file's path. It
// creates dir (0700) when missing.
func SpoolWrite(dir string, req api.NotifyRequest) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("control: spool dir: %w", err)
	}
	data, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("control: encode spool event: %w", err)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("control: spool name: %w", err)
	}
	at := req.At
	if at.IsZero() {
		at = time.Now()
	}
	// Zero-padded nanoseconds first so that lexical order is time order;
	// pid and random bytes make concurrent hooks never collide.
	name := fmt.Sprintf("%020d-%d-%s%s", at.UnixNano(), os.Getpid(), hex.EncodeToString(rnd[:]), spoolSuffix)
	path := filepath.Join(dir, name)
	if err := fsutil.WriteAtomic(path, append(data, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("control: spool event: %w", err)
	}
	return path, nil
}

// SpoolList returns the spooled event files in dir, oldest first. A missing
// dir is an empty spool.
func SpoolList(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("control: read spool: %w", err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, spoolSuffix) || !e.Type().IsRegular() {
			continue
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}
