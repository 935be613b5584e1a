package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/internal/wait"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// reportBatch is how many outbox entries one pass reads.
const reportBatch = 64

// reportLoop delivers the outbox to hostsync in sequence order. A failed
// delivery keeps the entry and retries after a backoff that doubles from
// report.min_backoff to report.max_backoff; a delivered entry (any 2xx,
// duplicates included) is removed. Hostsync deduplicates by member and
// sequence number, so a retry after a lost answer is harmless.
func (a *Agent) reportLoop(ctx context.Context) error {
	backoff := time.Duration(0)
	idle := time.NewTimer(a.cfg.Report.Interval)
	defer idle.Stop()
	for {
		if backoff > 0 {
			if wait.Sleep(ctx, backoff) != nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		pending, err := a.store.Pending(reportBatch)
		if err != nil {
			a.log.Error("read outbox", "op", "report", "err", err)
			backoff = nextBackoff(backoff, a.cfg.Report)
			continue
		}
		failed := false
		for _, t := range pending {
			res, err := a.deliver(ctx, t)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				a.d.metrics.report(err)
				a.noteReport(err)
				backoff = nextBackoff(backoff, a.cfg.Report)
				a.log.Warn("report failed; kept in the outbox", "op", "report", "seq", t.Seq, "retry_in", backoff, "err", err)
				failed = true
				break
			}
			a.d.metrics.report(nil)
			if err := a.store.AckReport(res); err != nil {
				a.log.Error("ack delivered transition", "op", "report", "seq", t.Seq, "err", err)
				failed = true
				backoff = nextBackoff(backoff, a.cfg.Report)
				break
			}
			a.noteOutbox()
			a.noteReport(nil)
			if res.Result == api.ReportAccepted || res.Result == api.ReportQueued {
				a.log.Debug("reported", "op", "report", "seq", t.Seq, "state", t.To, "result", res.Result)
			} else {
				a.log.Warn("reported; hostsync did not take it", "op", "report", "seq", t.Seq, "epoch", res.Epoch, "state", t.To,
					"result", res.Result, "owner", res.Owner, "message", res.Message)
			}
		}
		if failed {
			continue
		}
		backoff = 0
		if len(pending) == reportBatch {
			continue
		}
		idle.Reset(a.cfg.Report.Interval)
		select {
		case <-ctx.Done():
			return nil
		case <-a.reportKick:
		case <-idle.C:
		}
	}
}

func nextBackoff(cur time.Duration, rc ReportConfig) time.Duration {
	if cur <= 0 {
		return rc.MinBackoff
	}
	return min(cur*2, rc.MaxBackoff)
}

// noteReport records the outcome of a delivery for status.
func (a *Agent) noteReport(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		if a.reportErr != "" {
			a.reportErr, a.reportErrAt = "", time.Time{}
		}
	} else {
		a.reportErr, a.reportErrAt = err.Error(), a.d.now()
	}
	kick(a.statusChanged)
}

// deliver POSTs one transition as an api.Claim, with the database's
// epoch, and returns hostsync's answer to it (a 2xx); an error otherwise.
func (a *Agent) deliver(ctx context.Context, t vrrp.Transition) (api.ReportOutcome, error) {
	epoch := a.store.Epoch()
	body, err := json.Marshal(api.Claim{Transition: t, Epoch: epoch})
	if err != nil {
		return api.ReportOutcome{}, fmt.Errorf("agent: encode claim: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.reportURL, bytes.NewReader(body))
	if err != nil {
		return api.ReportOutcome{}, fmt.Errorf("agent: claim request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.d.reportHTTP.Do(req)
	if err != nil {
		return api.ReportOutcome{}, fmt.Errorf("agent: report seq %d: %w", t.Seq, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, api.MaxBodySize))
	if resp.StatusCode/100 == 2 {
		out := api.ReportOutcome{Seq: t.Seq, Epoch: epoch, To: t.To, At: t.At, Answered: a.d.now(), Result: api.ReportAccepted}
		var res api.ClaimResult
		if err := json.Unmarshal(data, &res); err == nil {
			out.Result, out.Owner, out.Message = api.OutcomeOf(res), res.Owner, res.Message
		} else {
			out.Message = fmt.Sprintf("%s answered %d with a body that is no claim result: %v", a.reportURL, resp.StatusCode, err)
		}
		return out, nil
	}
	msg := strings.TrimSpace(string(data))
	var e api.Error
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return api.ReportOutcome{}, fmt.Errorf("agent: report seq %d: %s answered %d: %s", t.Seq, a.reportURL, resp.StatusCode, msg)
}
