// Package metadata is where vipkeeper-agent gets the group's raw VIP
// metadata document: Source, with HTTPSource (hostsync's guest API, ETag,
// no redirects followed, waiting for a change where hostsync offers it:
// Waiter) and FileSource (a file written by cloud-init,
// tagged by content hash). It owns the size limit (vrrp.MaxDocumentSize)
// and the sentinels ErrNotModified, ErrMetadataTooLarge and
// ErrMetadataRedirect; decoding and validation are package vrrp's.
package metadata

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// ErrNotModified is returned by Source.Fetch when the document did not
// change since the given tag.
var ErrNotModified = errors.New("metadata: metadata not modified")

// ErrMetadataTooLarge is returned (wrapped) by a Source whose document is
// larger than vrrp.MaxDocumentSize.
var ErrMetadataTooLarge = errors.New("metadata: metadata document too large")

// ErrMetadataRedirect is returned (wrapped) by HTTPSource.Fetch when the
// server answers with a redirect: the agent never follows one, to another
// host or the same (hostsync does not redirect; a redirect is a
// misconfiguration or someone else answering).
var ErrMetadataRedirect = errors.New("metadata: metadata URL redirects; redirects are not followed")

// Source gives the raw metadata document. Fetch returns the document and a
// tag identifying its content (an HTTP ETag, or a content hash); when tag
// equals the previous tag it may return ErrNotModified instead. Fetch is
// called from one goroutine at a time.
type Source interface {
	Fetch(ctx context.Context, prevTag string) (doc []byte, tag string, err error)
	// String describes the source for logs and status.
	String() string
}

// Waiter is a Source that can wait for its document to change, so that a
// change reaches the agent at once instead of at the next poll.
type Waiter interface {
	// MaxWait is the longest wait the source grants, as it said in its
	// last answer; 0 when it does not wait (an older hostsync): poll.
	MaxWait() time.Duration
	// Wait waits up to d for the document to differ from the one tagged
	// tag and returns the tag of the new one; ErrNotModified when d
	// passed without a change. It may be called while Fetch runs.
	Wait(ctx context.Context, tag string, d time.Duration) (newTag string, err error)
}

// HTTPSource fetches metadata from hostsync's guest API with If-None-Match,
// and waits for a change (api.QueryWait) when hostsync offers it
// (api.HeaderWait).
type HTTPSource struct {
	URL    string
	Client *http.Client

	// maxWait is the api.HeaderWait of the last answer, in nanoseconds.
	maxWait atomic.Int64
}

var _ Waiter = (*HTTPSource)(nil)

func (s *HTTPSource) String() string { return s.URL }

// Fetch GETs the document; 304 is ErrNotModified.
func (s *HTTPSource) Fetch(ctx context.Context, prevTag string) ([]byte, string, error) {
	return s.get(ctx, prevTag, 0)
}

// MaxWait is the longest wait hostsync said it grants (api.HeaderWait in
// its last answer to Fetch or Wait); 0 before the first answer and from
// a hostsync that does not wait.
func (s *HTTPSource) MaxWait() time.Duration { return time.Duration(s.maxWait.Load()) }

// Wait GETs the document with api.QueryWait d and If-None-Match tag: hostsync
// answers when the document changes or d passes (304: ErrNotModified).
// The client's timeout is stretched by d. The document itself is left to
// the next Fetch.
func (s *HTTPSource) Wait(ctx context.Context, tag string, d time.Duration) (string, error) {
	if tag == "" || d <= 0 {
		return "", fmt.Errorf("metadata: wait for a change needs a tag and a positive wait")
	}
	_, newTag, err := s.get(ctx, tag, d)
	return newTag, err
}

// get GETs the document, waiting up to wait for a change when wait > 0.
func (s *HTTPSource) get(ctx context.Context, prevTag string, wait time.Duration) ([]byte, string, error) {
	u := s.URL
	if wait > 0 {
		pu, err := url.Parse(s.URL)
		if err != nil {
			return nil, "", fmt.Errorf("metadata: metadata request: %w", err)
		}
		q := pu.Query()
		q.Set(api.QueryWait, wait.String())
		pu.RawQuery = q.Encode()
		u = pu.String()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", fmt.Errorf("metadata: metadata request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if prevTag != "" {
		req.Header.Set("If-None-Match", prevTag)
	}
	client := http.DefaultClient
	if s.Client != nil {
		client = s.Client
	}
	c := *client
	if wait > 0 && c.Timeout > 0 {
		c.Timeout += wait
	}
	c.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		return fmt.Errorf("%w: %s answered with a redirect to %s; set metadata.url to hostsync's guest API itself", ErrMetadataRedirect, s.URL, r.URL.Redacted())
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("metadata: fetch metadata: %w", err)
	}
	defer resp.Body.Close()
	s.noteMaxWait(resp.Header.Get(api.HeaderWait))
	if resp.StatusCode == http.StatusNotModified {
		return nil, prevTag, ErrNotModified
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, vrrp.MaxDocumentSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("metadata: read metadata: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		if len(data) > vrrp.MaxDocumentSize {
			data = data[:vrrp.MaxDocumentSize]
		}
		msg := strings.TrimSpace(string(data))
		var e api.Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return nil, "", fmt.Errorf("metadata: fetch metadata: %s answered %d: %s", s.URL, resp.StatusCode, msg)
	}
	if len(data) > vrrp.MaxDocumentSize {
		return nil, "", fmt.Errorf("%w: %s sent more than the limit of %d bytes", ErrMetadataTooLarge, s.URL, vrrp.MaxDocumentSize)
	}
	tag := resp.Header.Get("ETag")
	if tag == "" {
		tag = contentTag(data)
	}
	return data, tag, nil
}

// noteMaxWait records an answer's api.HeaderWait (whole seconds); absent
// or malformed is 0: no waiting.
func (s *HTTPSource) noteMaxWait(v string) {
	var d time.Duration
	if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	}
	s.maxWait.Store(int64(d))
}

// FileSource reads metadata from a file (written by cloud-init).
type FileSource struct {
	Path string
}

func (s *FileSource) String() string { return "file:" + s.Path }

// Fetch reads the file; its tag is a hash of the content.
func (s *FileSource) Fetch(_ context.Context, prevTag string) ([]byte, string, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return nil, "", fmt.Errorf("metadata: read metadata: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, vrrp.MaxDocumentSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("metadata: read metadata %s: %w", s.Path, err)
	}
	if len(data) > vrrp.MaxDocumentSize {
		return nil, "", fmt.Errorf("%w: %s is larger than the limit of %d bytes", ErrMetadataTooLarge, s.Path, vrrp.MaxDocumentSize)
	}
	tag := contentTag(data)
	if tag == prevTag {
		return nil, tag, ErrNotModified
	}
	return data, tag, nil
}

func contentTag(data []byte) string {
	sum := sha256.Sum256(data)
	return `"sha256:` + hex.EncodeToString(sum[:16]) + `"`
}
