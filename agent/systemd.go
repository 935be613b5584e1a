package agent

import (
	"context"
	"errors"
	"time"

	"github.com/vipkeeper/vipkeeper/internal/daemon"
)

// sdNotifier sends sd_notify(3) messages (daemon.Systemd: a no-op without
// systemd).
type sdNotifier interface {
	daemon.Notifier
	// WatchdogInterval is systemd's WatchdogSec for this process (0: off).
	WatchdogInterval() time.Duration
}

// sdNotify sends state to the service manager; a failure only matters to
// the service manager, so it is logged at debug level.
func (a *Agent) sdNotify(state string) {
	if err := a.d.notifier.Notify(state); err != nil {
		a.log.Debug("sd_notify", "op", "systemd", "state", state, "err", err)
	}
}

// systemdLoop keeps STATUS= current and, through daemon.Watchdog, pings
// the watchdog at half its interval as long as the reconcile loop is alive
// (a stuck agent must be restarted, not kept alive by a timer).
func (a *Agent) systemdLoop(ctx context.Context) error {
	wd := a.d.notifier.WatchdogInterval()
	done := make(chan struct{})
	go func() {
		defer close(done)
		daemon.Watchdog(ctx, a.d.notifier, wd, func(context.Context) error {
			if !a.healthy(wd) {
				return errors.New("agent: reconcile loop stalled")
			}
			return nil
		}, a.log)
	}()
	defer func() { <-done }()
	refresh := time.NewTicker(15 * time.Second) // the "since" and counters age
	defer refresh.Stop()
	last := ""
	send := func() {
		st, err := a.Status()
		if err != nil {
			return
		}
		if st.Sentence != last {
			last = st.Sentence
			a.sdNotify("STATUS=" + st.Sentence)
		}
	}
	send()
	for {
		select {
		case <-ctx.Done():
			a.sdNotify("STOPPING=1")
			return nil
		case <-a.statusChanged:
			send()
		case <-refresh.C:
			send()
		}
	}
}
