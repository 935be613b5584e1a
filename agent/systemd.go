package agent

import (
	"context"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// sdNotifier sends sd_notify(3) messages; a no-op without systemd.
type sdNotifier interface {
	Notify(state string)
	// WatchdogInterval is systemd's WatchdogSec for this process (0: off).
	WatchdogInterval() time.Duration
}

// systemdNotifier talks to $NOTIFY_SOCKET; without it every call does nothing.
type systemdNotifier struct{}

func (systemdNotifier) Notify(state string) { _, _ = daemon.SdNotify(false, state) }

func (systemdNotifier) WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// systemdLoop keeps STATUS= current and pings the watchdog at half its
// interval, as long as the reconcile loop is alive (a stuck agent must be
// restarted, not kept alive by a timer).
func (a *Agent) systemdLoop(ctx context.Context) error {
	wd := a.d.notifier.WatchdogInterval()
	var ping <-chan time.Time
	if wd > 0 {
		t := time.NewTicker(wd / 2)
		defer t.Stop()
		ping = t.C
	}
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
			a.d.notifier.Notify("STATUS=" + st.Sentence)
		}
	}
	send()
	for {
		select {
		case <-ctx.Done():
			a.d.notifier.Notify("STOPPING=1")
			return nil
		case <-a.statusChanged:
			send()
		case <-refresh.C:
			send()
		case <-ping:
			if a.healthy(wd) {
				a.d.notifier.Notify("WATCHDOG=1")
			} else {
				a.log.Error("reconcile loop stalled; not pinging the watchdog", "op", "watchdog")
			}
		}
	}
}
