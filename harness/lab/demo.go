package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// DemoOptions configure RunDemo.
type DemoOptions struct {
	Bin     string // directory with the built binaries
	Out     io.Writer
	Profile Profile // ProfileSeed by default
}

// RunDemo runs the seed's nginx scenario in a fresh lab and tears it down:
// the admin sets up group nginx with vipctl, the VIP lands on nginx-master,
// the client reaches nginx through the EIP, nginx stops on the master, the
// VIP moves to nginx-slave, GARP is seen, the EIP follows, the client
// reaches the slave; then the measured timeline. It returns the timeline.
func RunDemo(ctx context.Context, opts DemoOptions) (tl Timeline, err error) {
	out := opts.Out
	if opts.Profile.Name == "" {
		opts.Profile = ProfileSeed
	}
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	l, err := New(Options{Bin: opts.Bin})
	if err != nil {
		return tl, err
	}
	defer func() {
		say("tearing down the lab")
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if left := l.Leftovers(); len(left) > 0 && err == nil {
			err = fmt.Errorf("lab: left behind %v", left)
		} else if err == nil {
			say("lab removed: no namespace or process left behind")
		}
	}()

	say("building the lab %s: hosts h1 and h2 (one L2 segment 192.0.2.0/24), gateway, client 198.51.100.2, guests nginx-master and nginx-slave", l.Prefix)
	s, err := l.NewStack(ctx, opts.Profile)
	if err != nil {
		return tl, err
	}
	say("vipkeeper-hostsync runs on h1 (%s, programs the gateway) and h2 (%s)", s.Topo.Hosts[0].Bridge, s.Topo.Hosts[1].Bridge)
	say("the admin sets up the seed's scenario (same commands on both hosts' registries):")
	if err := s.Seed(ctx, func(cmd []string, res string) {
		fmt.Fprintf(out, "    $ vipctl %s\n", strings.Join(cmd, " "))
		for _, line := range strings.Split(strings.TrimSpace(res), "\n") {
			if line != "" {
				fmt.Fprintf(out, "      %s\n", line)
			}
		}
	}); err != nil {
		return tl, err
	}
	master, slave := s.Topo.Guest("nginx-master"), s.Topo.Guest("nginx-slave")
	for _, g := range s.Topo.Guests {
		if err := s.StartGuest(ctx, g); err != nil {
			return tl, err
		}
		if s.Profile.Handwritten {
			say("%s: %s web server, keepalived started with the seed's own keepalived.conf and check_httpd.sh (no agent)", g.Name, s.Web(g).Kind())
			continue
		}
		say("%s: %s web server, vipkeeper-agent rendered keepalived.conf from hostsync's metadata, keepalived started", g.Name, s.Web(g).Kind())
	}
	if err := s.WaitOwner(ctx, master, 30*time.Second); err != nil {
		return tl, err
	}
	say("keepalived elected nginx-master; the VIP is on its eth0:")
	if b, err := l.Exec(ctx, master.NS, "ip", "-4", "addr", "show", "dev", "eth0"); err == nil {
		indent(out, string(b))
	}
	for _, g := range s.Topo.Guests {
		if s.Agent(g) == nil {
			continue
		}
		if b, err := exec.CommandContext(ctx, s.Binary("vipctl"), "status", "--socket", s.AgentSocket(g)).CombinedOutput(); err == nil {
			say("vipctl status on %s:", g.Name)
			indent(out, string(b))
		}
	}
	if res, err := s.Vipctl(ctx, s.GatewayHost, "instancegroup-show", Group); err == nil {
		say("vipctl instancegroup-show nginx (h1):")
		indent(out, res)
	}
	name, err := s.ClientGet(ctx, 2*time.Second)
	if err != nil {
		return tl, fmt.Errorf("client through the EIP: %w", err)
	}
	say("client 198.51.100.2 -> http://%s/ (EIP) answers: nginx on %s", EIP, name)

	w, err := s.StartWatch(slave.Host, 20*time.Millisecond)
	if err != nil {
		return tl, err
	}
	defer w.Stop()
	time.Sleep(200 * time.Millisecond) // let the watch take a few samples before the fault
	t0 := time.Now()
	if err := s.Web(master).Stop(); err != nil {
		return tl, err
	}
	if s.Profile.Handwritten {
		say("FAULT: nginx stopped on nginx-master (its restart fails); check_httpd.sh fails at its next run and lowers the priority by its weight")
	} else {
		say("FAULT: nginx stopped on nginx-master; its health check (GET http://127.0.0.1/) now fails")
	}
	if err := s.WaitOwner(ctx, slave, 60*time.Second); err != nil {
		return tl, err
	}
	say("the VIP moved to nginx-slave:")
	if b, err := l.Exec(ctx, slave.NS, "ip", "-4", "addr", "show", "dev", "eth0"); err == nil {
		indent(out, string(b))
	}
	// Let the watch see a few answers from the new master.
	if err := s.Poll(ctx, 5*time.Second, "client answered by the slave", func() (bool, error) {
		_, ok := w.FirstAnswer(slave.Name, t0)
		return ok, nil
	}); err != nil {
		return tl, err
	}
	if at, ok := w.FirstGARP(slave.MAC, t0); ok {
		say("GARP for %s from %s seen on h2's bridge at +%s", VIP.Addr(), slave.MAC, fmtMS(at.Sub(t0)))
	}
	if nh, err := s.GatewayNextHop(); err == nil {
		say("gateway: EIP %s -> VIP %s, route to the VIP via %s (%s, the host of nginx-slave)", EIP, VIP.Addr(), nh, s.HostOf(nh).ID)
	}
	name, err = s.ClientGet(ctx, 2*time.Second)
	if err != nil {
		return tl, fmt.Errorf("client through the EIP after the move: %w", err)
	}
	say("client -> http://%s/ answers: nginx on %s", EIP, name)
	for _, g := range []*Guest{master, slave} {
		if s.Agent(g) == nil {
			continue
		}
		if g == master {
			if b, err := exec.CommandContext(ctx, s.Binary("vipctl"), "status", "--socket", s.AgentSocket(g)).CombinedOutput(); err == nil {
				say("vipctl status on %s (its check failing):", g.Name)
				indent(out, string(b))
			}
		}
		if b, err := exec.CommandContext(ctx, s.Binary("vipctl"), "history", "--socket", s.AgentSocket(g)).CombinedOutput(); err == nil {
			say("vipctl history on %s:", g.Name)
			indent(out, string(b))
		}
	}
	if res, err := s.Vipctl(ctx, s.GatewayHost, "hostsync-status"); err == nil {
		say("vipctl hostsync-status (h1):")
		indent(out, res)
	}
	tl, err = s.MeasureFailover(ctx, w, master, slave, t0)
	if err != nil {
		return tl, err
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "measured failover timeline (profile %s: %s; client polls every 20 ms, %d requests failed):\n",
		s.Profile.Name, s.Profile.Describe(), w.Failed(t0))
	tl.Print(out)
	fmt.Fprintln(out)
	for _, st := range tl.Steps {
		if st.At.IsZero() {
			return tl, errors.New("lab: the timeline is incomplete: " + st.What + " was not observed")
		}
	}
	return tl, nil
}

func indent(w io.Writer, text string) {
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(w, "      %s\n", line)
	}
}
