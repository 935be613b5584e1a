// Package control is the client side of vipkeeper-agent's local control
// socket (HTTP over a unix socket: notify, status, history, refresh) and
// the notify spool, the directory where keepalived's notify hook leaves
// events while the agent is down. It is small on purpose: vipctl links it,
// and keepalived runs `vipctl notify` on every state change.
package control

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
	"strconv"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// DefaultSocket is the agent's control socket when the configuration does
// not name another.
const DefaultSocket = "/run/vipkeeper/agent.sock"

// DefaultSpoolDir is where the notify hook spools events by default.
const DefaultSpoolDir = "/var/lib/vipkeeper/spool"

var (
	// ErrUnreachable is returned (wrapped) when nothing answers on the
	// control socket: the agent is not running or the path is wrong.
	ErrUnreachable = errors.New("control: agent unreachable")
	// ErrRejected is returned (wrapped in a *StatusError) when the agent
	// answered 4xx: the request itself is wrong and retrying cannot help.
	ErrRejected = errors.New("control: request rejected")
)

// StatusError is a non-2xx answer of the agent.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("control: agent answered %d: %s", e.Code, e.Message)
}

// Is makes errors.Is(err, ErrRejected) true for 4xx answers.
func (e *StatusError) Is(target error) bool {
	return target == ErrRejected && e.Code >= 400 && e.Code < 500
}

// Client talks to one agent over its unix socket. It is safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the agent listening on socket; timeout
// bounds each request (connect included).
func NewClient(socket string, timeout time.Duration) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:      2,
		IdleConnTimeout:   30 * time.Second,
		DisableKeepAlives: false,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr, Timeout: timeout}}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Notify hands one keepalived notify event to the agent. It returns once
// the agent has recorded the event durably (or decided it changes nothing).
func (c *Client) Notify(ctx context.Context, req api.NotifyRequest) (api.NotifyResult, error) {
	var res api.NotifyResult
	err := c.do(ctx, http.MethodPost, api.PathAgentNotify, req, &res)
	return res, err
}

// Status returns the agent's status.
func (c *Client) Status(ctx context.Context) (api.AgentStatus, error) {
	var st api.AgentStatus
	err := c.do(ctx, http.MethodGet, api.PathAgentStatus, nil, &st)
	return st, err
}

// History returns the last limit transitions, oldest first (limit ≤ 0: the
// agent's default).
func (c *Client) History(ctx context.Context, limit int) ([]vrrp.Transition, error) {
	p := api.PathAgentHistory
	if limit > 0 {
		p += "?" + url.Values{"limit": {strconv.Itoa(limit)}}.Encode()
	}
	var hist []vrrp.Transition
	err := c.do(ctx, http.MethodGet, p, nil, &hist)
	return hist, err
}

// Refresh asks the agent to fetch and apply metadata now and returns its
// status afterwards. An apply failure is reported in the status
// (LastError), not as an error.
func (c *Client) Refresh(ctx context.Context) (api.AgentStatus, error) {
	var st api.AgentStatus
	err := c.do(ctx, http.MethodPost, api.PathAgentRefresh, struct{}{}, &st)
	return st, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("control: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w at %s: %v", ErrUnreachable, c.socket, op.Err)
		}
		return fmt.Errorf("control: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("control: read answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		msg := string(bytes.TrimSpace(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &StatusError{Code: resp.StatusCode, Message: msg}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("control: decode answer to %s %s: %w", method, path, err)
	}
	return nil
}
