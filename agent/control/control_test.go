package control

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

func TestDecodeNotify(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 4, 5, 0, time.UTC)
	good, _ := json.Marshal(api.NotifyRequest{Args: []string{"INSTANCE", "VI_nginx", "MASTER", "100"}, At: at})
	tests := []struct {
		name string
		data string
		ok   bool
	}{
		{"valid", string(good), true},
		{"no time", `{"args":["INSTANCE","VI_nginx","BACKUP","99"]}`, true},
		{"not json", `INSTANCE VI_nginx MASTER 100`, false},
		{"unknown field", `{"args":["INSTANCE","VI_nginx","MASTER","100"],"member":"x"}`, false},
		{"trailing", string(good) + `{}`, false},
		{"three args", `{"args":["INSTANCE","VI_nginx","MASTER"]}`, false},
		{"bad state", `{"args":["INSTANCE","VI_nginx","LEADER","100"]}`, false},
		{"bad name", `{"args":["INSTANCE","VI nginx","MASTER","100"]}`, false},
		{"bad priority", `{"args":["INSTANCE","VI_nginx","MASTER","300"]}`, false},
		{"too large", `{"args":["` + strings.Repeat("A", api.MaxBodySize) + `"]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, n, err := DecodeNotify([]byte(tt.data))
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				if n.Name != "VI_nginx" || len(req.Args) != 4 {
					t.Errorf("decoded %+v %+v", req, n)
				}
				return
			}
			if !errors.Is(err, ErrBadNotify) {
				t.Fatalf("err = %v, want ErrBadNotify", err)
			}
		})
	}
}

func FuzzDecodeNotify(f *testing.F) {
	f.Add([]byte(`{"args":["INSTANCE","VI_nginx","MASTER","100"],"at":"2025-03-01T12:04:05Z"}`))
	f.Add([]byte(`{"args":["GROUP","G","STOP","0"]}`))
	f.Add([]byte(`{"args":null}`))
	f.Add([]byte(`{"args":["INSTANCE","VI_nginx","MASTER","-1"]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, n, err := DecodeNotify(data)
		if err != nil {
			if !errors.Is(err, ErrBadNotify) {
				t.Fatalf("error does not wrap ErrBadNotify: %v", err)
			}
			return
		}
		// Accepted events are exactly what ParseNotify accepts, and survive
		// a round trip through the spool encoding.
		n2, err := vrrp.ParseNotify(req.Args)
		if err != nil || n2 != n {
			t.Fatalf("accepted %q, ParseNotify says %v", req.Args, err)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, n3, err := DecodeNotify(b); err != nil || n3 != n {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func TestSpoolWriteList(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	at := time.Date(2025, 3, 1, 12, 4, 5, 0, time.UTC)
	var written []string
	// Written out of time order; listed in time order.
	for _, off := range []int{3, 1, 2} {
		p, err := SpoolWrite(dir, api.NotifyRequest{Args: []string{"INSTANCE", "VI_g", "MASTER", "100"}, At: at.Add(time.Duration(off) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
		written = append(written, filepath.Base(p))
	}
	// Leftovers of an interrupted atomic write and other files are not events.
	os.WriteFile(filepath.Join(dir, ".x.notify.json.tmp-1"), []byte("{}"), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600)
	names, err := SpoolList(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{written[1], written[2], written[0]}
	if !slices.Equal(names, want) {
		t.Fatalf("SpoolList = %v, want %v", names, want)
	}
	for i, name := range names {
		data, _ := os.ReadFile(filepath.Join(dir, name))
		req, _, err := DecodeNotify(data)
		if err != nil {
			t.Fatal(err)
		}
		if !req.At.Equal(at.Add(time.Duration(i+1) * time.Second)) {
			t.Errorf("%s at %v", name, req.At)
		}
	}
	if names, err := SpoolList(filepath.Join(dir, "missing")); err != nil || len(names) != 0 {
		t.Errorf("missing dir: %v %v", names, err)
	}
}

func TestClient(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "a.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var gotNotify api.NotifyRequest
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathAgentNotify, func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(&gotNotify)
		w.Write([]byte(`{"outcome":"recorded"}`))
	})
	mux.HandleFunc("GET "+api.PathAgentStatus, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.AgentStatus{Group: "nginx", Role: vrrp.RoleMaster})
	})
	mux.HandleFunc("GET "+api.PathAgentHistory, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("limit") != "2" {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(api.Error{Error: "limit " + r.URL.Query().Get("limit")})
			return
		}
		json.NewEncoder(w).Encode([]vrrp.Transition{{Seq: 1}, {Seq: 2}})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	ctx := context.Background()
	c := NewClient(sock, 5*time.Second)
	defer c.Close()
	res, err := c.Notify(ctx, api.NotifyRequest{Args: []string{"INSTANCE", "VI_g", "MASTER", "100"}})
	if err != nil || res.Outcome != "recorded" {
		t.Fatalf("Notify = %+v, %v", res, err)
	}
	if gotNotify.Args[2] != "MASTER" {
		t.Errorf("server got %+v", gotNotify)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Group != "nginx" || st.Role != vrrp.RoleMaster {
		t.Errorf("Status = %+v, %v", st, err)
	}
	h, err := c.History(ctx, 2)
	if err != nil || len(h) != 2 {
		t.Errorf("History = %v, %v", h, err)
	}
	_, err = c.History(ctx, 3)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 400 || se.Message != "limit 3" || !errors.Is(err, ErrRejected) {
		t.Errorf("History(3) err = %v, want a 400 StatusError carrying the message", err)
	}

	gone := NewClient(filepath.Join(t.TempDir(), "none.sock"), time.Second)
	if _, err := gone.Notify(ctx, api.NotifyRequest{}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("no agent: err = %v, want ErrUnreachable", err)
	}
}
