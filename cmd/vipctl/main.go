// Command vipctl is vipkeeper's admin and operator CLI: it renders
// keepalived configuration, runs health checks and the notify hook for
// keepalived, reads the agent's status and history, and drives hostsync's
// admin API with the climc-style instancegroup-* commands.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed (daemon unreachable, rule refused, ...)
	exitUsage   = 2 // bad flags or invalid input
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: vipctl COMMAND [flags] [args]

Guest commands:
  render        render keepalived.conf and scripts from a metadata file
  check         run one health check (used by the rendered check scripts)
  notify        hand a keepalived notify event to the agent (used by the notify hook)
  status        show the agent's role, VIP and last apply
  history       show the agent's transition history

Admin commands (hostsync admin socket):
  network-create, guest-register, eip-create,
  instancegroup-create, instancegroup-update, instancegroup-set-priority,
  instancegroup-delete, instancegroup-join, instancegroup-leave,
  instancegroup-attachnetwork, instancegroup-detachnetwork,
  instancegroup-create-eip, instancegroup-associate-eip, instancegroup-dissociate-eip,
  instancegroup-change-eip-bandwidth, instancegroup-show, instancegroup-list, hostsync-status

Run 'vipctl COMMAND -h' for the flags of a command; 'vipctl --version' prints the version.
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "--version", "version":
		fmt.Fprintf(stdout, "vipctl %s\n", version)
		return exitOK
	case "render":
		return runRender(ctx, rest, stdout, stderr)
	case "check":
		return runCheck(ctx, rest, stdout, stderr)
	case "notify":
		return runNotify(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "history":
		return runHistory(ctx, rest, stdout, stderr)
	}
	if isAdminCommand(cmd) {
		return runAdmin(ctx, cmd, rest, stdin, stdout, stderr)
	}
	fmt.Fprintf(stderr, "vipctl: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}

func isAdminCommand(cmd string) bool {
	switch cmd {
	case "network-create", "guest-register", "eip-create", "hostsync-status":
		return true
	}
	return strings.HasPrefix(cmd, "instancegroup-")
}
