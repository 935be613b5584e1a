package testutil

import (
	"context"
	"log/slog"
	"sync"
)

// LogRecorder passes records on to a handler and keeps the attributes of
// each message (the last record of that message wins). It is safe for
// concurrent use, and the handlers WithAttrs and WithGroup return share
// what it keeps.
type LogRecorder struct {
	slog.Handler
	st *logState
}

type logState struct {
	mu    sync.Mutex
	attrs map[string]map[string]string
}

// NewLogRecorder returns a LogRecorder passing records on to h.
func NewLogRecorder(h slog.Handler) *LogRecorder {
	return &LogRecorder{Handler: h, st: &logState{attrs: map[string]map[string]string{}}}
}

// Handle keeps r's attributes under its message and passes it on.
func (h *LogRecorder) Handle(ctx context.Context, r slog.Record) error {
	m := map[string]string{}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	h.st.mu.Lock()
	h.st.attrs[r.Message] = m
	h.st.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

// WithAttrs returns a LogRecorder over the handler's WithAttrs.
func (h *LogRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &LogRecorder{Handler: h.Handler.WithAttrs(as), st: h.st}
}

// WithGroup returns a LogRecorder over the handler's WithGroup.
func (h *LogRecorder) WithGroup(name string) slog.Handler {
	return &LogRecorder{Handler: h.Handler.WithGroup(name), st: h.st}
}

// Attr is the attribute key of the last record with message msg, and
// whether there was one.
func (h *LogRecorder) Attr(msg, key string) (string, bool) {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	v, ok := h.st.attrs[msg][key]
	return v, ok
}
