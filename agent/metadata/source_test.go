package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// TestMetadataTooLarge: a document over the size limit is refused as too
// large, naming the limit, instead of being cut and reported as
// "unexpected end of JSON input".
func TestMetadataTooLarge(t *testing.T) {
	big := `{"version": 1, "pad": "` + strings.Repeat("x", vrrp.MaxDocumentSize) + `"}`
	limit := strconv.Itoa(vrrp.MaxDocumentSize)
	t.Run("http", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(big))
		}))
		defer srv.Close()
		_, _, err := (&HTTPSource{URL: srv.URL, Client: srv.Client()}).Fetch(context.Background(), "")
		if !errors.Is(err, ErrMetadataTooLarge) || !strings.Contains(err.Error(), "too large") || !strings.Contains(err.Error(), limit) {
			t.Errorf("Fetch of %d bytes: %v; want too large, naming the limit %s", len(big), err, limit)
		}
	})
	t.Run("file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "metadata.json")
		if err := os.WriteFile(p, []byte(big), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := (&FileSource{Path: p}).Fetch(context.Background(), "")
		if !errors.Is(err, ErrMetadataTooLarge) || !strings.Contains(err.Error(), limit) || !strings.Contains(err.Error(), p) {
			t.Errorf("Fetch: %v; want too large, naming the file and the limit", err)
		}
	})
}

// TestMetadataRedirectNotFollowed: the metadata client does not follow a
// redirect, to another host or to the same one.
func TestMetadataRedirectNotFollowed(t *testing.T) {
	var reached atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		reached.Add(1)
		w.Write([]byte(`{"version": 1}`))
	}))
	defer other.Close()
	for _, tc := range []struct{ name, to string }{
		{"another host", other.URL + "/v1/metadata"},
		{"the same host", "/elsewhere"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					reached.Add(1)
					w.Write([]byte(`{"version": 1}`))
					return
				}
				http.Redirect(w, r, tc.to, http.StatusFound)
			}))
			defer srv.Close()
			reached.Store(0)
			_, _, err := (&HTTPSource{URL: srv.URL + "/v1/metadata", Client: &http.Client{}}).Fetch(context.Background(), "")
			if !errors.Is(err, ErrMetadataRedirect) {
				t.Errorf("Fetch: %v; want ErrMetadataRedirect", err)
			}
			if n := reached.Load(); n != 0 {
				t.Errorf("the redirect target was fetched %d times", n)
			}
		})
	}
}

func TestHTTPSourceErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(api.Error{Error: "hostsync: 192.0.2.99 is no member of a group with a VIP"})
	}))
	defer srv.Close()
	s := &HTTPSource{URL: srv.URL + api.PathMetadata, Client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}}
	_, _, err := s.Fetch(context.Background(), "")
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "no member") {
		t.Errorf("err = %v", err)
	}
}

// TestHTTPSourceWait: MaxWait is what the last answer said
// (api.HeaderWait; 0 without it); Wait asks hostsync to wait (the wait
// parameter, If-None-Match), outlives the client's timeout by the wait,
// and tells a change (the new tag) from a wait that passed
// (ErrNotModified).
func TestHTTPSourceWait(t *testing.T) {
	var (
		header atomic.Value // the api.HeaderWait to answer ("" none)
		rev    atomic.Int32
		asked  atomic.Value // the last request's wait parameter
	)
	header.Store("60")
	rev.Store(1)
	hold := 300 * time.Millisecond // how long a wait is held before its answer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := header.Load().(string); h != "" {
			w.Header().Set(api.HeaderWait, h)
		}
		asked.Store(r.URL.Query().Get(api.QueryWait))
		tag := `"` + strconv.Itoa(int(rev.Load())) + `"`
		if r.URL.Query().Has(api.QueryWait) {
			time.Sleep(hold)
			if r.URL.Query().Get("change") != "" {
				rev.Add(1)
			}
			tag = `"` + strconv.Itoa(int(rev.Load())) + `"`
		}
		w.Header().Set("ETag", tag)
		if r.Header.Get("If-None-Match") == tag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte(`{"version": 1}`))
	}))
	defer srv.Close()
	client := &http.Client{Timeout: 100 * time.Millisecond}
	s := &HTTPSource{URL: srv.URL + api.PathMetadata, Client: client}
	if d := s.MaxWait(); d != 0 {
		t.Fatalf("MaxWait before any answer: %v", d)
	}
	_, tag, err := s.Fetch(t.Context(), "")
	if err != nil || tag != `"1"` || s.MaxWait() != time.Minute {
		t.Fatalf("Fetch: tag %q, %v, MaxWait %v; want \"1\" and a minute", tag, err, s.MaxWait())
	}

	got, err := s.Wait(t.Context(), tag, 30*time.Second)
	if !errors.Is(err, ErrNotModified) || got != tag {
		t.Fatalf("Wait without a change: %q, %v; want ErrNotModified", got, err)
	}
	if a := asked.Load(); a != "30s" {
		t.Errorf("wait parameter %q, want 30s", a)
	}

	s.URL += "?change=1"
	got, err = s.Wait(t.Context(), tag, 30*time.Second)
	if err != nil || got != `"2"` {
		t.Fatalf("Wait with a change: %q, %v; want the new tag \"2\"", got, err)
	}

	header.Store("")
	if _, _, err := s.Fetch(t.Context(), got); !errors.Is(err, ErrNotModified) || s.MaxWait() != 0 {
		t.Fatalf("an answer without %s: %v, MaxWait %v; want 0", api.HeaderWait, err, s.MaxWait())
	}
	if _, err := s.Wait(t.Context(), "", time.Second); err == nil {
		t.Error("Wait without a tag: no error")
	}
}
