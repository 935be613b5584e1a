package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/internal/check"
	"github.com/vipkeeper/vipkeeper/internal/fsutil"
	"github.com/vipkeeper/vipkeeper/render"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// oneLine keeps an error message on one stderr line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
}

// parseFlags parses args into fs; flag errors are one line on stderr, -h
// prints the flags on stdout. It returns an exit code and whether to stop.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (int, bool) {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK, true
	case err != nil:
		fmt.Fprintf(stderr, "%s: %s (see '%s -h')\n", fs.Name(), oneLine(err), fs.Name())
		return exitUsage, true
	}
	return exitOK, false
}

func usageFunc(fs *flag.FlagSet, synopsis string) func() {
	return func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
}

// runRender is `vipctl render`: metadata file + member → keepalived.conf and
// scripts in a directory. Invalid input exits 2 with one line naming the
// field, before anything is written.
func runRender(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipctl render", flag.ContinueOnError)
	metadata := fs.String("metadata", "", "group metadata JSON `file` (required)")
	self := fs.String("self", "", "`member` name to render for (required)")
	out := fs.String("out", "", "`directory` to write keepalived.conf and the scripts into (required)")
	iface := fs.String("interface", render.DefaultInterface, "`NIC` keepalived runs VRRP on")
	scriptsDir := fs.String("scripts-dir", render.DefaultScriptsDir, "`directory` the scripts are installed into, as keepalived.conf refers to them")
	vipctl := fs.String("vipctl", render.DefaultVipctl, "`path` of vipctl that the scripts run")
	agentSocket := fs.String("agent-socket", render.DefaultNotifySocket, "the agent's control `socket` the notify hook and the backstops of resign checks talk to")
	trackDir := fs.String("track-dir", render.DefaultTrackDir, "`directory` of the track files of resign checks, as keepalived.conf refers to them")
	fs.Usage = usageFunc(fs, "vipctl render --metadata FILE --self MEMBER --out DIR [--interface eth0] [--scripts-dir DIR] [--vipctl PATH] [--agent-socket PATH] [--track-dir DIR]")
	if code, stop := parseFlags(fs, args, stdout, stderr); stop {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "vipctl render: "+format+"\n", a...)
		return code
	}
	if fs.NArg() > 0 {
		return fail(exitUsage, "unexpected argument %q", fs.Arg(0))
	}
	for _, req := range []struct{ flag, v string }{{"--metadata", *metadata}, {"--self", *self}, {"--out", *out}} {
		if req.v == "" {
			return fail(exitUsage, "%s is required (see 'vipctl render -h')", req.flag)
		}
	}

	// Everything is read, validated and rendered before DIR is touched.
	f, err := os.Open(*metadata)
	if err != nil {
		return fail(exitUsage, "%s", oneLine(err))
	}
	m, err := vrrp.Decode(f)
	f.Close()
	if err != nil {
		return fail(exitUsage, "%s", oneLine(err))
	}
	res, err := render.Render(m, render.Options{
		Self: *self, Interface: *iface, ScriptsDir: *scriptsDir, Vipctl: *vipctl,
		NotifySocket: *agentSocket, TrackDir: *trackDir,
	})
	if err != nil {
		return fail(exitUsage, "%s", oneLine(err))
	}
	if err := ctx.Err(); err != nil {
		return fail(exitFailure, "%s", oneLine(err))
	}

	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fail(exitFailure, "%s", oneLine(err))
	}
	// Scripts first, so the config never names a script not yet in place.
	for _, s := range res.Scripts {
		if err := fsutil.WriteAtomic(filepath.Join(*out, s.Name), s.Data, os.FileMode(s.Mode)); err != nil {
			return fail(exitFailure, "%s", oneLine(err))
		}
	}
	if err := fsutil.WriteAtomic(filepath.Join(*out, render.ConfigName), res.Config, render.ConfigMode); err != nil {
		return fail(exitFailure, "%s", oneLine(err))
	}
	fmt.Fprintf(stdout, "rendered %s and %d scripts for %s of group %s into %s (hash %s)\n",
		render.ConfigName, len(res.Scripts), *self, m.Group.Name, *out, res.Hash)
	return exitOK
}

// agentAskTimeout bounds the backstop's question to the agent: an agent
// that does not answer within it (dead, hung, stopped) is not trusted.
const agentAskTimeout = time.Second

// runCheck is `vipctl check KIND [flags] [-- COMMAND ARGS]`, run by the
// rendered check scripts: exit 0 healthy, 1 unhealthy (one line on
// stderr), 2 bad usage. With --agent-socket it is the backstop of a check
// the agent runs itself: when the agent answers on its control socket the
// agent's track file carries the verdict and the command exits 0 without
// probing; when it does not, the command judges the check as usual.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const synopsis = "vipctl check process|http|tcp|exec [flags] [--agent-socket PATH] [-- COMMAND ARGS...]"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" {
		fmt.Fprintf(stderr, "vipctl check: a kind is required: %s\n", synopsis)
		return exitUsage
	}
	if args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(stdout, "usage: %s\n\nRun 'vipctl check KIND -h' for the flags.\n", synopsis)
		return exitOK
	}
	kind := vrrp.CheckKind(args[0])
	switch kind {
	case vrrp.CheckProcess, vrrp.CheckHTTP, vrrp.CheckTCP, vrrp.CheckExec:
	default:
		fmt.Fprintf(stderr, "vipctl check: kind %q is not one of process, http, tcp, exec\n", args[0])
		return exitUsage
	}
	fs := flag.NewFlagSet("vipctl check "+string(kind), flag.ContinueOnError)
	spec := check.Spec{Kind: kind}
	switch kind {
	case vrrp.CheckProcess:
		fs.StringVar(&spec.Process, "name", "", "process `name` as in /proc/PID/comm (ps -C)")
	case vrrp.CheckHTTP:
		fs.StringVar(&spec.URL, "url", "", "`URL` to GET")
		fs.IntVar(&spec.ExpectStatus, "expect-status", 200, "HTTP `status` the URL must answer")
	case vrrp.CheckTCP:
		fs.StringVar(&spec.Address, "address", "", "`host:port` to connect to")
	}
	fs.StringVar(&spec.RestartUnit, "restart-unit", "", "systemd `unit` to restart once when the check fails")
	timeout := fs.String("timeout", "", "`seconds` for the whole check, restart included (default 2)")
	agentSocket := fs.String("agent-socket", "", "the agent's control `socket`: exit 0 without probing while the agent answers on it (the agent runs the check), probe when it does not")
	fs.Usage = usageFunc(fs, synopsis)
	if code, stop := parseFlags(fs, args[1:], stdout, stderr); stop {
		return code
	}
	if kind == vrrp.CheckExec {
		spec.Command = fs.Args()
	} else if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vipctl check: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *timeout != "" {
		s, err := vrrp.ParseSeconds(*timeout)
		if err != nil || s == 0 {
			fmt.Fprintf(stderr, "vipctl check: --timeout %q is not a number of seconds above 0\n", *timeout)
			return exitUsage
		}
		spec.Timeout = s.Duration()
	}
	if err := spec.Validate(); err != nil {
		fmt.Fprintf(stderr, "vipctl check: %s\n", oneLine(err))
		return exitUsage
	}
	if *agentSocket != "" && agentAnswers(ctx, *agentSocket) {
		return exitOK
	}
	err := check.Run(ctx, spec)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, check.ErrInvalid):
		fmt.Fprintf(stderr, "vipctl check: %s\n", oneLine(err))
		return exitUsage
	default:
		fmt.Fprintf(stderr, "vipctl check: %s\n", oneLine(err))
		return exitFailure
	}
}

// agentAnswers reports whether the agent on socket answers GET status
// within agentAskTimeout.
func agentAnswers(ctx context.Context, socket string) bool {
	ctx, cancel := context.WithTimeout(ctx, agentAskTimeout)
	defer cancel()
	c := control.NewClient(socket, agentAskTimeout)
	defer c.Close()
	_, err := c.Status(ctx)
	return err == nil
}
