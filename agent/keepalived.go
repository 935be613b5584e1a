package agent

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/keepalived"
)

// newKeepalived picks how to drive keepalived for cfg.Reload. In auto mode
// systemd is used when the machine booted with systemd and the unit is
// loaded, else the pid file.
func newKeepalived(ctx context.Context, cfg KeepalivedConfig, log *slog.Logger) (keepalived.Keepalived, func()) {
	pidk := &keepalived.PIDFileKeepalived{PIDFile: cfg.PIDFile}
	switch cfg.Reload {
	case ReloadNone, ReloadSignal:
		// With "none" the pid file still tells whether keepalived runs;
		// apply does not reload.
		return pidk, func() {}
	case ReloadSystemd:
		sk := keepalived.NewSystemdKeepalived(cfg.Unit)
		return sk, sk.Close
	}
	if cfg.Unit != "" && systemdBooted() {
		sk := keepalived.NewSystemdKeepalived(cfg.Unit)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		loaded, err := sk.Loaded(cctx)
		cancel()
		if err == nil && loaded {
			log.Info("keepalived runs under systemd", "op", "keepalived", "unit", cfg.Unit)
			return sk, sk.Close
		}
		sk.Close()
		log.Info("keepalived unit not usable, using the pid file", "op", "keepalived", "unit", cfg.Unit, "err", err)
	}
	return pidk, func() {}
}

// systemdBooted is sd_booted(3).
func systemdBooted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}
