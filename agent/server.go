package agent

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/daemon"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// defaultHistoryLimit is what GET history returns without ?limit.
const defaultHistoryLimit = 100

// handler serves the control socket.
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathAgentNotify, a.serveNotify)
	mux.HandleFunc("GET "+api.PathAgentStatus, a.serveStatus)
	mux.HandleFunc("GET "+api.PathAgentHistory, a.serveHistory)
	mux.HandleFunc("POST "+api.PathAgentRefresh, a.serveRefresh)
	return mux
}

func writeError(w http.ResponseWriter, code int, err error) {
	daemon.WriteJSON(w, code, api.Error{Error: err.Error()})
}

func (a *Agent) serveNotify(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodySize))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("agent: notify body: %w", err))
		return
	}
	req, n, err := control.DecodeNotify(data)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	rec, outcome, err := a.notify(req, n, "")
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	res := api.NotifyResult{Outcome: outcome.String()}
	if outcome == notifyRecorded {
		res.Transition = &rec
	}
	daemon.WriteJSON(w, http.StatusOK, res)
}

func (a *Agent) serveStatus(w http.ResponseWriter, _ *http.Request) {
	st, err := a.Status()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	daemon.WriteJSON(w, http.StatusOK, st)
}

func (a *Agent) serveHistory(w http.ResponseWriter, r *http.Request) {
	limit := defaultHistoryLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("agent: limit %q is not a positive integer", s))
			return
		}
		limit = min(n, a.cfg.HistoryLimit)
	}
	hist, err := a.store.History(limit)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if hist == nil {
		hist = []vrrp.Transition{}
	}
	daemon.WriteJSON(w, http.StatusOK, hist)
}

func (a *Agent) serveRefresh(w http.ResponseWriter, r *http.Request) {
	// The apply's own error is in the status; only a refresh that could
	// not run is an error here.
	if err := a.Refresh(r.Context()); err != nil && errors.Is(err, r.Context().Err()) {
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	a.serveStatus(w, r)
}

// Status is what the control socket answers to GET status.
func (a *Agent) Status() (api.AgentStatus, error) {
	unreported, err := a.store.PendingCount()
	if err != nil {
		return api.AgentStatus{}, err
	}
	reports, err := a.store.Reports()
	if err != nil {
		return api.AgentStatus{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st := api.AgentStatus{
		Group:       a.group,
		Member:      a.self,
		Role:        a.role,
		Since:       a.since,
		Interface:   a.cfg.Interface,
		VIPPresent:  a.vipPresent,
		Revision:    a.revision,
		ConfigHash:  a.applied,
		LastApply:   a.lastApply,
		LastError:   a.lastErr,
		LastErrorAt: a.lastErrAt,
		Unreported:  unreported,
		ReportError: a.reportErr,
		ReportErrAt: a.reportErrAt,
		ReportURL:   a.reportURL,
		Source:      a.d.source.String(),
		Keepalived:  a.kaRunning,
		Ready:       a.ready,
		Epoch:       a.store.Epoch(),
		Reports:     reports,
	}
	if a.vip.IsValid() {
		st.VIP = a.vip.String()
	}
	if a.vip6.IsValid() {
		st.VIP6, st.VIP6Present = a.vip6.String(), a.vip6Present
	}
	if hr := a.health.Load(); hr != nil {
		st.Checks = hr.Status()
	}
	st.Sentence = sentence(st, a.d.now())
	return st, nil
}

// sentence is the one-line summary for systemd's STATUS= and vipctl, e.g.
// "MASTER of nginx since 12:04:05, VIP 192.0.2.10/24 on eth0, 0 unreported events".
func sentence(st api.AgentStatus, now time.Time) string {
	if st.Group == "" && st.LastError != "" {
		return "no metadata yet: " + st.LastError
	}
	if st.Group == "" {
		return "waiting for metadata"
	}
	s := string(st.Role) + " of " + st.Group
	if !st.Since.IsZero() {
		since := st.Since.Local()
		layout := "15:04:05"
		if y, m, d := since.Date(); y != now.Local().Year() || m != now.Local().Month() || d != now.Local().Day() {
			layout = "2006-01-02 15:04:05"
		}
		s += " since " + since.Format(layout)
	}
	// Where the VIP is, said plainly for the role: a MASTER holds it, the
	// others do not; the two mismatches are called out.
	switch {
	case st.Role == vrrp.RoleMaster && st.VIPPresent:
		s += ", VIP " + st.VIP + " on " + st.Interface
	case st.Role == vrrp.RoleMaster:
		s += ", VIP " + st.VIP + " missing from " + st.Interface
	case st.VIPPresent:
		s += ", VIP " + st.VIP + " still on " + st.Interface
	default:
		s += ", VIP " + st.VIP + " not on " + st.Interface
	}
	s += vip6Sentence(st)
	s += fmt.Sprintf(", %d unreported event%s", st.Unreported, plural(st.Unreported))
	if st.LastError != "" {
		s += "; last apply failed: " + st.LastError
	}
	if st.ReportError != "" {
		s += "; report failing: " + st.ReportError
	}
	for _, c := range st.Checks {
		if c.State == api.CheckFailing {
			s += "; check " + c.Name + " failing: " + c.Reason
		}
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
