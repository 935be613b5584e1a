// Command vipkeeper-agent is the daemon inside each VM of an instance
// group: it renders keepalived's configuration from the group's VIP
// metadata, reloads keepalived, tracks who holds the VIP and reports it to
// hostsync. See package agent.
//
// Its flags are vipkeeper-hostsync's: -config, -check-config, -log-level
// (debug, info, warn, error; JSON logs on stderr) and -version.
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

	"github.com/vipkeeper/vipkeeper/agent"
)

const name = "vipkeeper-agent"

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
	configPath := fs.String("config", agent.DefaultConfigPath, "configuration file")
	checkOnly := fs.Bool("check-config", false, "validate the configuration and exit")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
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

	cfg, err := agent.LoadConfig(*configPath)
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
	err = agent.Run(ctx, cfg, log)
	if err == nil || errors.Is(err, context.Canceled) {
		return 0
	}
	log.Error(name+" stopped", "err", err)
	return 1
}
