// Command vipkeeper-hostsync is vipkeeper's daemon on each hypervisor host:
// the registry of instance groups, VIPs and EIPs, the guest API, gratuitous
// ARP and the EIP data plane. See package hostsync.
//
// Its flags are vipkeeper-agent's: -config, -check-config, -log-level
// (debug, info, warn, error; JSON logs on stderr) and -version, plus
// -role and -allow-empty-dataplane. -debug is a deprecated alias of
// -log-level debug.
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

	"github.com/vipkeeper/vipkeeper/hostsync"
)

const name = "vipkeeper-hostsync"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", hostsync.DefaultConfigPath, "configuration file")
	checkOnly := fs.Bool("check-config", false, "validate the configuration (and that the GARP interface exists), then exit")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	debug := fs.Bool("debug", false, "deprecated: use -log-level debug")
	allowEmpty := fs.Bool("allow-empty-dataplane", false, "let a registry that holds no group remove the EIP mappings the data plane holds (by default that apply is held and logged: a mistyped db_path must not wipe the data plane); use once, when the registry is meant to be new")
	role := fs.String("role", "", "override the configuration's role: host (registry, guest API, GARP, data plane) or gateway (only the data plane, following the shared etcd registry)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "%s %s\n", name, version)
		return 0
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "%s: -log-level: %v\n", name, err)
		return 2
	}
	if *debug {
		level = slog.LevelDebug
	}

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
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	if *checkOnly {
		fmt.Fprintf(stdout, "%s: ok\n", *configPath)
		return 0
	}

	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	log.Info(name+" starting", "version", version, "config", *configPath)
	err = hostsync.Run(ctx, cfg, log)
	if err == nil || errors.Is(err, context.Canceled) {
		return 0
	}
	log.Error(name+" stopped", "err", err)
	return 1
}
