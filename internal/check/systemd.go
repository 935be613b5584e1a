package check

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// busConn is the part of go-systemd's *dbus.Conn that Systemd uses.
type busConn interface {
	RestartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	Close()
}

// Systemd restarts units through systemd's D-Bus API on the system bus
// and, when the bus is unreachable (no dbus-daemon, a minimal image), by
// running `systemctl restart UNIT`.
type Systemd struct {
	// Systemctl is the fallback command, run with "restart" and the unit
	// appended; empty means {"systemctl"}.
	Systemctl []string
	// Log receives the choice of path; nil discards it.
	Log *slog.Logger

	// dial opens the system bus; nil means go-systemd's
	// NewSystemConnectionContext. Tests replace it.
	dial func(ctx context.Context) (busConn, error)
}

// RestartUnit restarts unit and waits for systemd's job to finish.
func (s *Systemd) RestartUnit(ctx context.Context, unit string) error {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dial := s.dial
	if dial == nil {
		dial = func(ctx context.Context) (busConn, error) { return sddbus.NewSystemConnectionContext(ctx) }
	}
	conn, err := dial(ctx)
	if err != nil {
		log.Debug("system bus unreachable, using systemctl", "op", "restart", "unit", unit, "err", err)
		return s.systemctl(ctx, unit)
	}
	defer conn.Close()
	done := make(chan string, 1) // buffered: go-systemd's listener must never block
	if _, err := conn.RestartUnitContext(ctx, unit, "replace", done); err != nil {
		return fmt.Errorf("check: restart %s over D-Bus: %w", unit, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("check: restart %s: systemd job %s", unit, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("check: restart %s: %w", unit, ctx.Err())
	}
}

func (s *Systemd) systemctl(ctx context.Context, unit string) error {
	argv := s.Systemctl
	if len(argv) == 0 {
		argv = []string{"systemctl"}
	}
	args := append(append([]string{}, argv[1:]...), "restart", unit)
	cmd := exec.CommandContext(ctx, argv[0], args...)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if last := lastLine(out.Bytes()); last != "" {
			return fmt.Errorf("check: %s restart %s: %w: %s", argv[0], unit, err, last)
		}
		return fmt.Errorf("check: %s restart %s: %w", argv[0], unit, err)
	}
	return nil
}
