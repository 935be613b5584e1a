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
