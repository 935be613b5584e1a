package agent

import (
	"context"
	"errors"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/keepalived"
)

// kaDeathLoop watches keepalived's main process (keepalived.Watcher: a
// pidfd, woken as the process exits) and reconciles at once when it
// exits. keepalived killed with SIGKILL cannot remove its VIP: until the
// agent does, this member and the backup taking over both answer ARP for
// it. The reconcile loop would notice only at its next tick and then wait
// half an interval for a second look; after an exit seen through the
// pidfd the VIP is removed at once (reconcileExited).
//
// Removing a dead keepalived's VIP adds no gap without a holder: a dead
// keepalived advertises no more, and the backup takes over on its own
// master-down timer whatever this member's interface carries. A reload
// (SIGHUP) keeps the process and is no exit; a clean stop (SIGTERM)
// removes the VIP itself, so the exit only records STOP (once: a STOP
// from the notify hook before or after is the same role). A keepalived
// that already runs again when the exit is handled is judged by the
// ordinary reconcile.
//
// Where the process cannot be watched (pidfd_open unavailable, or a
// keepalived the agent cannot name a pid for), the loop ends and the
// reconcile loop alone notices keepalived's death.
func (a *Agent) kaDeathLoop(ctx context.Context) error {
	w, err := keepalived.NewWatcher(a.d.keepalived)
	if err != nil {
		a.log.Info("keepalived's process cannot be watched: its exit is noticed by the reconcile loop", "op", "kadeath", "err", err)
		return nil
	}
	w.Armed = func(pid int) {
		a.log.Debug("watching keepalived's process", "op", "kadeath", "pid", pid)
	}
	lastErr := ""
	for {
		pid, err := w.Wait(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, keepalived.ErrNoPidfd):
			a.log.Warn("keepalived's process cannot be watched: its exit is noticed by the reconcile loop", "op", "kadeath", "pid", pid, "err", err)
			return nil
		case err != nil:
			if err.Error() != lastErr {
				a.log.Warn("cannot watch keepalived's process; retrying", "op", "kadeath", "err", err)
			}
			lastErr = err.Error()
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		lastErr = ""
		a.keepalivedExited(ctx, w, pid)
	}
}

// keepalivedExited handles the exit of keepalived's main process pid.
func (a *Agent) keepalivedExited(ctx context.Context, w *keepalived.Watcher, pid int) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	now, err := w.MainPID(cctx)
	cancel()
	// MainPID may still name pid for a moment (the pidfd is readable
	// once the process has exited, and says so with certainty); another
	// pid is a keepalived started since.
	if err != nil || now != 0 && now != pid {
		// Restarted already, or cannot tell: not certain.
		a.log.Info("keepalived's process exited; keepalived runs again or cannot be told", "op", "kadeath", "pid", pid, "now", now, "err", err)
		a.reconcile(ctx)
		return
	}
	a.log.Info("keepalived's process exited", "op", "kadeath", "pid", pid)
	a.reconcileExited(pid)
}
