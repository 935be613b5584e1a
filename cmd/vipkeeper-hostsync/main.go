// Command vipkeeper-hostsync is vipkeeper's daemon on each hypervisor host:
// the registry of instance groups, VIPs and EIPs, the guest API, gratuitous
// ARP and the EIP data plane. See package hostsync.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/vipkeeper/vipkeeper/hostsync"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipkeeper-hostsync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", hostsync.DefaultConfigPath, "configuration file")
	checkOnly := fs.Bool("check-config", false, "validate the configuration (and that the GARP interface exists), then exit")
	debug := fs.Bool("debug", false, "log at debug level")
	showVersion := fs.Bool("version", false, "print the version and exit")
	allowEmpty := fs.Bool("allow-empty-dataplane", false, "let a registry that holds no group remove the EIP mappings the data plane holds (by default that apply is held and logged: a mistyped db_path must not wipe the data plane); use once, when the registry is meant to be new")
	role := fs.String("role", "", "override the configuration's role: host (registry, guest API, GARP, data plane) or gateway (only the data plane, following the shared etcd registry)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vipkeeper-hostsync: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *showVersion {
		fmt.Fprintf(os.Stdout, "vipkeeper-hostsync %s\n", version)
		return 0
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := hostsync.LoadConfig(*configPath)
	if err == nil && *role != "" {
		cfg.Role = *role
		if err = cfg.Validate(); err != nil {
			err = fmt.Errorf("--role %s: %w", *role, err)
		}
	}
	if err == nil && *allowEmpty {
		cfg.DataPlane.AllowEmpty = true
	}
	if err == nil {
		err = cfg.CheckHost()
	}
	if err != nil {
		fmt.Fprintf(stderr, "vipkeeper-hostsync: %v\n", err)
		return 2
	}
	if *checkOnly {
		fmt.Fprintf(os.Stdout, "%s: ok\n", *configPath)
		return 0
	}

	p, err := hostsync.OpenPlatform(cfg, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	defer p.Close()
	p.Notifier = sdNotifier{}
	if wd, err := daemon.SdWatchdogEnabled(false); err == nil {
		p.Watchdog = wd
	}
	log.Info("vipkeeper-hostsync", "version", version, "config", *configPath)
	if err := hostsync.Run(ctx, cfg, log, p); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

// sdNotifier is systemd's sd_notify (a no-op outside systemd).
type sdNotifier struct{}

func (sdNotifier) Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}
