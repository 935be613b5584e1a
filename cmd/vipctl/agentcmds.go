package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// notifyTimeout bounds the whole hand-over to the agent: keepalived waits
// for its notify hook, so it must never block for long.
const notifyTimeout = 2 * time.Second

// runNotify is keepalived's notify hook: vipctl notify [--socket PATH]
// [--spool DIR] TYPE NAME STATE PRIORITY. It hands the event to the agent,
// or spools it when the agent cannot take it; it fails only on bad
// arguments (exit 2) or when the event can be neither handed over nor
// spooled (exit 1).
func runNotify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	at := time.Now()
	fs := flag.NewFlagSet("vipctl notify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", control.DefaultSocket, "the agent's control socket")
	spool := fs.String("spool", control.DefaultSpoolDir, "directory for events while the agent is down")
	timeout := fs.Duration("timeout", notifyTimeout, "how long to wait for the agent before spooling")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vipctl notify [--socket PATH] [--spool DIR] TYPE NAME STATE PRIORITY")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if _, err := vrrp.ParseNotify(fs.Args()); err != nil {
		fmt.Fprintf(stderr, "vipctl notify: %v\n", err)
		return exitUsage
	}
	req := api.NotifyRequest{Args: fs.Args(), At: at}
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := control.NewClient(*socket, *timeout)
	_, err := c.Notify(cctx, req)
	c.Close()
	if err == nil {
		return exitOK
	}
	if errors.Is(err, control.ErrRejected) {
		fmt.Fprintf(stderr, "vipctl notify: %v\n", err)
		return exitUsage
	}
	// The agent is down, slow or failing: keep the event for it. A
	// duplicate (the agent recorded it but the answer was lost) is
	// harmless, the agent skips a notify that does not change the role.
	path, serr := control.SpoolWrite(*spool, req)
	if serr != nil {
		fmt.Fprintf(stderr, "vipctl notify: agent: %v; spool: %v\n", err, serr)
		return exitFailure
	}
	fmt.Fprintf(stderr, "vipctl notify: agent not reachable (%v); spooled to %s\n", err, path)
	return exitOK
}

// runStatus prints the agent's status: vipctl status [--socket PATH] [--json].
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipctl status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", control.DefaultSocket, "the agent's control socket")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "vipctl status: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	c := control.NewClient(*socket, 10*time.Second)
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "vipctl status: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			fmt.Fprintf(stderr, "vipctl status: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	writeStatus(stdout, st)
	return exitOK
}

func writeStatus(w io.Writer, st api.AgentStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	row("GROUP", orDash(st.Group))
	row("MEMBER", orDash(st.Member))
	row("ROLE", string(st.Role))
	row("SINCE", fmtTime(st.Since))
	vip := orDash(st.VIP)
	if st.VIP != "" {
		if st.VIPPresent {
			vip += " on " + st.Interface
		} else {
			vip += " not on " + st.Interface
		}
	}
	row("VIP", vip)
	ka := "not running"
	if st.Keepalived {
		ka = "running"
	}
	row("KEEPALIVED", ka)
	row("REVISION", fmt.Sprint(st.Revision))
	hash := st.ConfigHash
	if len(hash) > 12 {
		hash = hash[:12]
	}
	row("CONFIG", orDash(hash))
	row("LAST APPLY", fmtTime(st.LastApply))
	if st.LastError != "" {
		row("ERROR", st.LastError+" (at "+fmtTime(st.LastErrorAt)+")")
	} else {
		row("ERROR", "-")
	}
	row("UNREPORTED", fmt.Sprint(st.Unreported))
	if st.ReportError != "" {
		row("REPORT ERROR", st.ReportError+" (at "+fmtTime(st.ReportErrAt)+")")
	}
	row("SOURCE", orDash(st.Source))
	row("EPOCH", orDash(st.Epoch))
	// The checks the agent runs itself: state, since when, and why the
	// last judgement failed.
	for _, c := range st.Checks {
		v := fmt.Sprintf("%s since %s (%s, on_failure %s)", c.State, fmtTime(c.Since), c.Kind, c.OnFailure)
		if c.Reason != "" {
			v += ": " + strings.ReplaceAll(c.Reason, "\t", " ")
		}
		row("CHECK "+c.Name, v)
	}
	// hostsync's answers to the last reports, so that one it did not take
	// (a duplicate, a claim that did not move the VIP) is seen.
	reports := st.Reports
	if len(reports) > maxStatusReports {
		reports = reports[len(reports)-maxStatusReports:]
	}
	notTaken := 0
	for _, o := range reports {
		v := fmt.Sprintf("%s at %s: %s", o.To, fmtTime(o.At), o.Result)
		if o.Owner != "" {
			v += ", owner " + o.Owner
		}
		switch o.Result {
		case api.ReportDuplicate:
			notTaken++
			v += " (hostsync had this sequence number of this database already; the event was dropped)"
		case api.ReportNotAccepted:
			notTaken++
		}
		if o.Message != "" {
			v += ": " + o.Message
		}
		row(fmt.Sprintf("REPORT %d", o.Seq), v)
	}
	tw.Flush()
	fmt.Fprintln(w, st.Sentence)
	if notTaken > 0 {
		fmt.Fprintf(w, "hostsync did not take %d of the last %d reports: see the REPORT rows\n", notTaken, len(reports))
	}
}

// maxStatusReports is how many report answers vipctl status shows.
const maxStatusReports = 5

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05.000 MST")
}

// runHistory prints the agent's transitions, oldest first:
// vipctl history [--socket PATH] [--limit N] [--json].
func runHistory(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vipctl history", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", control.DefaultSocket, "the agent's control socket")
	limit := fs.Int("limit", 20, "how many of the latest transitions to show")
	asJSON := fs.Bool("json", false, "print the transitions as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 0 || *limit < 1 {
		fmt.Fprintln(stderr, "vipctl history: usage: vipctl history [--socket PATH] [--limit N ≥ 1] [--json]")
		return exitUsage
	}
	c := control.NewClient(*socket, 10*time.Second)
	defer c.Close()
	hist, err := c.History(ctx, *limit)
	if err != nil {
		fmt.Fprintf(stderr, "vipctl history: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(hist); err != nil {
			fmt.Fprintf(stderr, "vipctl history: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tAT\tFROM\tTO\tPRIO\tVIP\tSOURCE\tNOTE")
	for _, t := range hist {
		vip := "absent"
		if t.VIPPresent {
			vip = "present"
		}
		prio := "-"
		if t.Priority != 0 {
			prio = fmt.Sprint(t.Priority)
		}
		note := strings.ReplaceAll(t.Note, "\t", " ")
		if note == "" {
			note = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Seq, fmtTime(t.At), t.From, t.To, prio, vip, t.Source, note)
	}
	tw.Flush()
	return exitOK
}
