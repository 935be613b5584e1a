package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
)

// envSocket overrides the default admin socket path.
const envSocket = "VIPKEEPER_HOSTSYNC_SOCKET"

// adminTimeout bounds one admin request.
const adminTimeout = 30 * time.Second

// adminClient talks to hostsync's admin API over its unix socket.
type adminClient struct {
	socket string
	http   *http.Client
}

func newAdminClient(socket string) *adminClient {
	return &adminClient{
		socket: socket,
		http: &http.Client{
			Timeout: adminTimeout,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", socket)
				},
				DisableKeepAlives: true,
			},
		},
	}
}

func defaultSocket() string {
	if s := os.Getenv(envSocket); s != "" {
		return s
	}
	return api.DefaultAdminSocket
}

// apiError is a non-2xx answer.
type apiError struct {
	Status int
	Body   api.Error
}

func (e *apiError) Error() string {
	if e.Body.Error == "" {
		return fmt.Sprintf("hostsync answered %d", e.Status)
	}
	return e.Body.Error
}

// do sends in (nil: no body) and decodes the answer into out (nil: none).
func (c *adminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hostsync"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach hostsync at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &apiError{Status: resp.StatusCode}
		_ = json.Unmarshal(data, &ae.Body)
		return ae
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}
