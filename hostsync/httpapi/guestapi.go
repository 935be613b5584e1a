// Package httpapi is hostsync's HTTP surface: the guest API each member's
// agent reads its metadata from (at once, or waiting for its next change)
// and reports its transitions to (strict decoding, the caller identified
// by its source address and MAC, never by the body), the admin API vipctl drives over a unix socket reserved to
// root, and the listener that caps the guest API's connections per
// source. Handlers only decode, call package inventory (admin operations)
// or ownership (claims, metadata, status) and answer; errors map to HTTP
// statuses by the sentinels they wrap.
package httpapi

import (
	"bytes"
	"context"
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
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

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

// Bounds of the metadata waits (api.QueryWait).
const (
	// MaxMetadataWait is the longest wait granted (api.HeaderWait); a
	// longer one asked is cut to it.
	MaxMetadataWait = 60 * time.Second
	// WaitsPerSource bounds the waits pending at once from one source
	// address (an agent has one); a request beyond is answered at once,
	// as without a wait.
	WaitsPerSource = 4
	// MaxWaits bounds the waits pending at once on the host.
	MaxWaits = 4096
)

// GuestAPI serves the guest API (api.PathMetadata, api.PathClaims). The
// caller is identified by the request's source address (and MAC, when the
// neighbour table has it), never by the body.
type GuestAPI struct {
	// Immutable after NewGuestAPI.
	svc      *ownership.Engine
	neigh    Neighbors
	log      *slog.Logger
	mux      *http.ServeMux
	maxWait  time.Duration
	waits    *waitLimits
	stopping chan struct{} // closed by EndWaits
	endWaits sync.Once

	mu     sync.Mutex            // guards hooked
	hooked map[*http.Server]bool // servers that call EndWaits on Shutdown
}

// NewGuestAPI returns the guest API handler; neigh may be nil.
func NewGuestAPI(svc *ownership.Engine, neigh Neighbors, log *slog.Logger) *GuestAPI {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &GuestAPI{
		svc: svc, neigh: neigh, log: log, mux: http.NewServeMux(), maxWait: MaxMetadataWait,
		waits:    &waitLimits{perSource: WaitsPerSource, total: MaxWaits, bySource: map[netip.Addr]int{}},
		stopping: make(chan struct{}), hooked: map[*http.Server]bool{},
	}
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
	w.Header().Set(api.HeaderWait, strconv.FormatInt(int64(g.maxWait/time.Second), 10))
	wait, err := parseWait(r.URL.Query(), g.maxWait)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	c, err := g.caller(r)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	// The channel is taken before the document is read: a change
	// committed after the read closes it.
	_, changed := g.svc.Changes()
	body, etag, err := g.document(r.Context(), c)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	inm := r.Header.Get("If-None-Match")
	if wait > 0 && inm != "" && etagMatch(inm, etag) {
		body, etag, err = g.waitChange(w, r, c, inm, wait, changed, body, etag)
		if err != nil {
			if r.Context().Err() == nil {
				g.fail(w, r, err)
			}
			return
		}
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if etagMatch(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// document is the caller's metadata document and its ETag.
func (g *GuestAPI) document(ctx context.Context, c inventory.Caller) (body []byte, etag string, err error) {
	md, err := g.svc.Metadata(ctx, c)
	if err != nil {
		return nil, "", err
	}
	body, err = md.Marshal()
	if err != nil {
		return nil, "", err
	}
	// The tag is the revision and a hash of the document: revisions start
	// at 1 in every group, so a guest that moved to another group, or whose
	// group was re-created, must never get 304 for its old document.
	sum := sha256.Sum256(body)
	return body, `"` + strconv.FormatUint(md.Revision, 10) + "-" + hex.EncodeToString(sum[:8]) + `"`, nil
}

// waitChange waits, for a caller whose current document (body, etag)
// matches inm, until its document changes (the new one is returned), the
// wait passes, hostsync shuts down (EndWaits) or the request is cancelled
// (its error). Each wakeup of changed reads the document again: a change
// to another group's records wakes it too. A caller with
// waitsPerSource waits pending, or a host with maxWaits, is answered at
// once, as without a wait: the agent's ordinary poll never hangs.
func (g *GuestAPI) waitChange(w http.ResponseWriter, r *http.Request, c inventory.Caller, inm string, wait time.Duration,
	changed <-chan struct{}, body []byte, etag string) ([]byte, string, error) {
	release, ok := g.waits.acquire(c.Addr)
	if !ok {
		g.log.Debug("guest api: too many metadata waits; answered at once", "remote", r.RemoteAddr,
			"per_source", g.waits.perSource, "total", g.waits.total)
		return body, etag, nil
	}
	defer release()
	g.hookShutdown(r)
	extendDeadlines(w, r, wait+waitAnswerMargin)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-changed:
		case <-timer.C:
			return body, etag, nil
		case <-g.stopping:
			return body, etag, nil
		case <-r.Context().Done():
			return nil, "", r.Context().Err()
		}
		_, changed = g.svc.Changes()
		nb, ne, err := g.document(r.Context(), c)
		if err != nil {
			return nil, "", err
		}
		if !etagMatch(inm, ne) {
			return nb, ne, nil
		}
	}
}

// waitAnswerMargin is how long, past the wait, a waiting request's
// connection may take to be answered.
const waitAnswerMargin = 10 * time.Second

// extendDeadlines lets a waiting request outlive its server's
// ReadTimeout and WriteTimeout (which bound ordinary requests): each
// deadline the server sets is moved to d from now. The server sets both
// again for the connection's next request.
func extendDeadlines(w http.ResponseWriter, r *http.Request, d time.Duration) {
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return
	}
	rc := http.NewResponseController(w)
	at := time.Now().Add(d)
	if srv.ReadTimeout > 0 {
		// Else the server's read of the idle connection times out and
		// cancels the request.
		_ = rc.SetReadDeadline(at)
	}
	if srv.WriteTimeout > 0 {
		_ = rc.SetWriteDeadline(at)
	}
}

// hookShutdown makes the server serving r end the pending waits
// (EndWaits) when it shuts down: http.Server.Shutdown waits for active
// requests and does not cancel them.
func (g *GuestAPI) hookShutdown(r *http.Request) {
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hooked[srv] {
		return
	}
	g.hooked[srv] = true
	srv.RegisterOnShutdown(g.EndWaits)
}

// EndWaits answers every pending metadata wait (304, or the new document
// when it changed) and makes later requests answer at once. A server
// serving the GuestAPI calls it when it shuts down (see hookShutdown);
// call it when the handler is served another way.
func (g *GuestAPI) EndWaits() { g.endWaits.Do(func() { close(g.stopping) }) }

// parseWait reads the wait parameter (a Go duration or whole seconds),
// capped at limit; 0 when absent. Errors name the parameter.
func parseWait(q url.Values, limit time.Duration) (time.Duration, error) {
	vs, ok := q[api.QueryWait]
	if !ok {
		return 0, nil
	}
	if len(vs) != 1 {
		return 0, inventory.Invalid(api.QueryWait, "given %d times, give it once", len(vs))
	}
	v := vs[0]
	var d time.Duration
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(v); err != nil || d < 0 {
		return 0, inventory.Invalid(api.QueryWait, "%q is not a duration (30s) or whole seconds (30) of at least 0", v)
	}
	return min(d, limit), nil
}

// waitLimits bounds the metadata waits pending at once, per source
// address and in total.
type waitLimits struct {
	// Immutable.
	perSource, total int

	mu       sync.Mutex // guards the fields below
	bySource map[netip.Addr]int
	n        int
}

// acquire counts a wait from src, or refuses it over a bound; release
// uncounts it.
func (l *waitLimits) acquire(src netip.Addr) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n >= l.total || l.bySource[src] >= l.perSource {
		return nil, false
	}
	l.n++
	l.bySource[src]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.n--
		if l.bySource[src]--; l.bySource[src] <= 0 {
			delete(l.bySource, src)
		}
	}, true
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
