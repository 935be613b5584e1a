// Command vipkeeper-lab runs vipkeeper's network-namespace lab: `demo`
// plays the seed's nginx scenario end to end and prints the failover
// timeline (what `make demo` runs). It needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/vipkeeper/vipkeeper/harness/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "demo" {
		fmt.Fprintln(stderr, "usage: vipkeeper-lab demo [--bin DIR] [--profile seed|seed-handwritten|default|fast]")
		return 2
	}
	fs := flag.NewFlagSet("vipkeeper-lab demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("bin", "bin", "directory with vipkeeper-agent, vipkeeper-hostsync and vipctl")
	profile := fs.String("profile", "seed", "timing profile: seed, seed-handwritten (the seed's own keepalived.conf, no agent), default or fast")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	p, ok := lab.Profiles[*profile]
	if !ok {
		fmt.Fprintf(stderr, "vipkeeper-lab: unknown profile %q (seed, seed-handwritten, default, fast)\n", *profile)
		return 2
	}
	if _, err := lab.RunDemo(ctx, lab.DemoOptions{Bin: *bin, Out: stdout, Profile: p}); err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "vipkeeper-lab: interrupted; the lab was removed")
			return 130
		}
		fmt.Fprintf(stderr, "vipkeeper-lab: %v\n", err)
		return 1
	}
	return 0
}
