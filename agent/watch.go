package agent

import (
	"context"
	"errors"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/metadata"
)

// waitRetry is the first pause after a failed wait for a metadata change
// (doubling up to metadata.poll_interval while it keeps failing); the
// apply loop's poll timer goes on meanwhile.
const waitRetry = time.Second

// watchMetadata waits for the metadata document to change where the
// source can (metadata.Waiter: a hostsync that says api.HeaderWait) and
// kicks changed when it did; the apply loop then fetches and applies as
// on its poll timer. The first wait names the first document applied
// (received on applied), each later one the document the previous wait
// returned: the newest seen, so that a change held back by
// keepalived.min_reload_interval, or one that failed to apply, does not
// wake it again (the apply loop's timer comes back to those). The
// applied tags that follow are not taken: they are never newer than what
// the watcher saw, or else its next wait is answered at once. Without
// waiting (a file, an older hostsync, metadata.wait = 0, nothing applied
// yet) the apply loop's polling alone goes on. It returns when ctx ends.
func (a *Agent) watchMetadata(ctx context.Context, applied <-chan string, changed chan struct{}) {
	w, ok := a.d.source.(metadata.Waiter)
	if !ok || a.cfg.Metadata.Wait <= 0 {
		return
	}
	timer := time.NewTimer(0)
	timer.Stop()
	defer timer.Stop()
	var tag string // the newest document seen
	// pause waits d, or less when the apply loop applied a new document
	// (MaxWait may have changed with its fetch); false when ctx ended.
	pause := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case t := <-applied:
			timer.Stop()
			if tag == "" {
				tag = t
			}
		case <-timer.C:
		}
		return true
	}
	var retry time.Duration
	// state is what the logs last said: "", "waiting", "polling" or
	// "failing"; each change of it is logged once.
	state := ""
	for {
		if tag == "" {
			select {
			case tag = <-applied:
			default:
			}
		}
		limit := w.MaxWait()
		if tag == "" || limit <= 0 {
			if tag != "" && state != "polling" {
				a.log.Info("hostsync does not wait for metadata changes: polling", "op", "watch", "poll_interval", a.cfg.Metadata.PollInterval)
				state = "polling"
			}
			// Look again after the apply loop's next fetch.
			if !pause(a.cfg.Metadata.PollInterval) {
				return
			}
			continue
		}
		d := min(a.cfg.Metadata.Wait, limit)
		if state == "" || state == "polling" {
			a.log.Info("waiting for metadata changes", "op", "watch", "wait", d)
			state = "waiting"
		}
		start := a.d.now()
		newTag, err := w.Wait(ctx, tag, d)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			a.log.Debug("metadata changed", "op", "watch", "tag", newTag)
			tag = newTag
			kick(changed)
		case errors.Is(err, metadata.ErrNotModified) && a.d.now().Sub(start) >= d/2:
			err = nil // the wait passed without a change
		case errors.Is(err, metadata.ErrNotModified):
			// Answered early: hostsync did not wait (too many waits
			// from this address).
			err = errors.New("agent: hostsync answered a wait for a metadata change at once")
		}
		if err == nil {
			if state == "failing" {
				a.log.Info("waiting for metadata changes again", "op", "watch", "wait", d)
				state = "waiting"
			}
			retry = 0
			continue
		}
		retry = min(max(2*retry, waitRetry), max(a.cfg.Metadata.PollInterval, waitRetry))
		if state != "failing" {
			a.log.Warn("waiting for metadata changes failed: polling meanwhile", "op", "watch", "retry_in", retry, "err", err)
			state = "failing"
		} else {
			a.log.Debug("waiting for metadata changes failed", "op", "watch", "retry_in", retry, "err", err)
		}
		if !pause(retry) {
			return
		}
	}
}

// offerTag hands tag to the watcher, replacing one it has not taken yet
// (only the apply loop sends, so the send never blocks).
func offerTag(ch chan string, tag string) {
	select {
	case <-ch:
	default:
	}
	ch <- tag
}
