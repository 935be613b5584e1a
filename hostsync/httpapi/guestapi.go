// Package httpapi is hostsync's HTTP surface: the guest API each member's
// agent reads its metadata from and reports its transitions to (strict
// decoding, the caller identified by its source address and MAC, never by
// the body), the admin API vipctl drives over a unix socket reserved to
// root, and the listener that caps the guest API's connections per
// source. Handlers only decode, call package inventory (admin operations)
// or ownership (claims, metadata, status) and answer; errors map to HTTP
// statuses by the sentinels they wrap.
package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/internal/daemon"
)

// Neighbors looks up the MAC behind an address in the host's neighbour
// table. A missing entry is (nil, nil), not an error: the caller is then
// identified by its address alone.
type Neighbors interface {
	Lookup(addr netip.Addr) (net.HardwareAddr, error)
}

// GuestAPI serves the guest API (api.PathMetadata, api.PathClaims). The
// caller is identified by the request's source address (and MAC, when the
// neighbour table has it), never by the body.
type GuestAPI struct {
	svc   *ownership.Engine
	neigh Neighbors
	log   *slog.Logger
	mux   *http.ServeMux
}

// NewGuestAPI returns the guest API handler; neigh may be nil.
func NewGuestAPI(svc *ownership.Engine, neigh Neighbors, log *slog.Logger) *GuestAPI {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &GuestAPI{svc: svc, neigh: neigh, log: log, mux: http.NewServeMux()}
	g.mux.HandleFunc("GET "+api.PathMetadata, g.metadata)
	g.mux.HandleFunc("POST "+api.PathClaims, g.claims)
	return g
}

func (g *GuestAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.mux.ServeHTTP(w, r) }

// caller identifies the request's sender.
func (g *GuestAPI) caller(r *http.Request) (inventory.Caller, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return inventory.Caller{}, fmt.Errorf("%w: source address %q", inventory.ErrForbidden, r.RemoteAddr)
	}
	c := inventory.Caller{Addr: ap.Addr().Unmap()}
	if g.neigh != nil {
		mac, err := g.neigh.Lookup(c.Addr)
		if err != nil {
			g.log.Debug("neighbour lookup failed", "addr", c.Addr, "err", err)
		}
		c.MAC = mac
	}
	return c, nil
}

func (g *GuestAPI) metadata(w http.ResponseWriter, r *http.Request) {
	c, err := g.caller(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	md, err := g.svc.Metadata(r.Context(), c)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	body, err := md.Marshal()
	if err != nil {
		g.fail(w, r, err)
		return
	}
	// The tag is the revision and a hash of the document: revisions start
	// at 1 in every group, so a guest that moved to another group, or whose
	// group was re-created, must never get 304 for its old document.
	sum := sha256.Sum256(body)
	etag := `"` + strconv.FormatUint(md.Revision, 10) + "-" + hex.EncodeToString(sum[:8]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if etagMatch(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// etagMatch implements If-None-Match's weak comparison.
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

func (g *GuestAPI) claims(w http.ResponseWriter, r *http.Request) {
	c, err := g.caller(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if err := requireJSON(r); err != nil {
		g.fail(w, r, err)
		return
	}
	claim, err := DecodeClaim(http.MaxBytesReader(w, r.Body, api.MaxBodySize))
	if err != nil {
		g.fail(w, r, err)
		return
	}
	res, err := g.svc.ClaimEpoch(r.Context(), c, claim.Epoch, claim.Transition)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	if res.Queued {
		// Stored durably in the claim queue: the agent may forget it.
		daemon.WriteJSON(w, http.StatusAccepted, res)
		return
	}
	daemon.WriteJSON(w, http.StatusOK, res)
}

// ErrUnsupportedMediaType is returned (wrapped) for a request body that is
// not declared as application/json; the guest API answers 415.
var ErrUnsupportedMediaType = errors.New("hostsync: unsupported media type")

// requireJSON checks that the request declares a JSON body
// (Content-Type application/json, parameters such as charset allowed).
func requireJSON(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return fmt.Errorf("%w: Content-Type %q: send the claim as application/json", ErrUnsupportedMediaType, ct)
	}
	return nil
}

// Limits of a claim's free-text fields.
// DecodeClaim reads one api.Claim strictly: unknown fields and trailing
// data rejected, every field checked (ownership.CheckClaim). Errors wrap
// inventory.ErrInvalid and name the field.
func DecodeClaim(r io.Reader) (api.Claim, error) {
	var c api.Claim
	data, err := io.ReadAll(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return c, inventory.Invalid("", "body larger than %d bytes", mbe.Limit)
		}
		return c, inventory.Invalid("", "read body: %v", err)
	}
	if err := decodeStrict(data, &c); err != nil {
		return c, err
	}
	if err := ownership.CheckClaim(c.Epoch, c.Transition); err != nil {
		return c, err
	}
	return c, nil
}

// decodeStrict decodes exactly one JSON value into v, rejecting unknown
// fields and trailing data; the error names the field.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return inventory.Invalid(te.Field, "expected %s, got JSON %s", te.Type, te.Value)
		}
		msg := strings.TrimPrefix(err.Error(), "json: ")
		// encoding/json names neither the path of an unknown field nor
		// the field whose UnmarshalJSON failed: find it.
		if path, unknown := jsonFault(data, reflect.TypeOf(v)); path != "" {
			if unknown {
				return inventory.Invalid(path, "unknown field")
			}
			return inventory.Invalid(path, "%s", msg)
		}
		return inventory.Invalid("", "%s", msg)
	}
	if _, err := dec.Token(); err != io.EOF {
		return inventory.Invalid("", "trailing data after the JSON value")
	}
	return nil
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, inventory.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, inventory.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrUnsupportedMediaType):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, inventory.ErrNotFound):
		return http.StatusNotFound
	case inventory.IsRefusal(err):
		return http.StatusConflict
	case errors.Is(err, registry.ErrUnavailable), errors.Is(err, ownership.ErrQueueFull):
		// The agent keeps the claim in its outbox and retries.
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// errorBody is err's HTTP status and the api.Error that says it, with the
// field when err is an *inventory.InvalidError.
func errorBody(err error) (int, api.Error) {
	body := api.Error{Error: err.Error()}
	var ie *inventory.InvalidError
	if errors.As(err, &ie) {
		body.Field = ie.Field
	}
	return statusOf(err), body
}

func (g *GuestAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, body := errorBody(err)
	if code == http.StatusInternalServerError {
		g.log.Error("guest api", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
		body.Error = "hostsync: internal error"
	} else {
		g.log.Info("guest api refused", "path", r.URL.Path, "remote", r.RemoteAddr, "status", code, "err", err)
	}
	daemon.WriteJSON(w, code, body)
}
