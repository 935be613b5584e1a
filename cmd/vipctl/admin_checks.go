package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// checkFlags are the health-check flags instancegroup-create and
// instancegroup-update share: a --check-KIND flag per check (repeatable)
// and the settings every check given (or, on update without a
// --check-KIND flag, every check the group has) takes.
type checkFlags struct {
	procs, urls, tcps, execs listFlag
	interval, timeout        vrrp.Seconds
	weight, fall, rise       int
	restartUnit, onFailure   string
	// set is the flags given on the command line (by name), filled by
	// parsed.
	set map[string]bool
}

// checkUsage is the check flags' part of a usage line.
const checkUsage = "[--check-process NAME[:UNIT]] [--check-http URL] [--check-tcp HOST:PORT] [--check-exec 'PATH ARGS'] " +
	"[--on-failure resign|lower_priority] [--check-interval SECONDS] [--check-timeout SECONDS] [--check-weight N] " +
	"[--check-fall N] [--check-rise N] [--check-restart-unit UNIT]"

func (c *checkFlags) register(fs *flag.FlagSet) {
	fs.Var(&c.procs, "check-process", "health check: process NAME runs; NAME:UNIT restarts the systemd UNIT once first (repeatable)")
	fs.Var(&c.urls, "check-http", "health check: GET URL answers 200 (repeatable)")
	fs.Var(&c.tcps, "check-tcp", "health check: TCP connect to HOST:PORT (repeatable)")
	fs.Var(&c.execs, "check-exec", "health check: the command, an absolute path and arguments split at spaces, exits 0 (repeatable)")
	fs.StringVar(&c.onFailure, "on-failure", "", "what a failing check does: resign (the member enters FAULT and hands the VIP over at once; the default without --check-weight) "+
		"or lower_priority (its priority drops by --check-weight; a backup takes over only after its master-down timer)")
	secondsVar(fs, &c.interval, "check-interval", "interval of the checks in seconds (default 1 with resign, in 0.01 steps from 0.05; 2 with lower_priority, whole seconds)")
	secondsVar(fs, &c.timeout, "check-timeout", "timeout of one check run in seconds (default: the interval)")
	fs.IntVar(&c.weight, "check-weight", 0, "priority change of a failing check with --on-failure lower_priority (alone it implies lower_priority)")
	fs.IntVar(&c.fall, "check-fall", 0, "failures in a row before a check fails (default 1)")
	fs.IntVar(&c.rise, "check-rise", 0, "successes in a row before a failed check is healthy again (default 1)")
	fs.StringVar(&c.restartUnit, "check-restart-unit", "", "systemd unit restarted once before a check is judged failed")
}

// parsed records which flags fs was given; call it once fs is parsed.
func (c *checkFlags) parsed(fs *flag.FlagSet) {
	c.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
}

// kinds reports whether a --check-KIND flag was given.
func (c *checkFlags) kinds() bool {
	return len(c.procs)+len(c.urls)+len(c.tcps)+len(c.execs) > 0
}

// settings reports whether a flag setting the checks' parameters was
// given.
func (c *checkFlags) settings() bool {
	for _, n := range []string{"on-failure", "check-interval", "check-timeout", "check-weight", "check-fall", "check-rise", "check-restart-unit"} {
		if c.set[n] {
			return true
		}
	}
	return false
}

// build returns the checks the --check-KIND flags name, with the
// settings given, checked by vrrp's rules.
func (c *checkFlags) build() ([]vrrp.Check, error) {
	var checks []vrrp.Check
	used := map[string]bool{}
	// name is chk_BASE (chk_nginx, chk_http, ...), numbered when taken.
	name := func(base string) string {
		base = "chk_" + strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
				return r
			}
			return '_'
		}, base)
		if len(base) > 28 {
			base = base[:28]
		}
		n := base
		for i := 2; used[n]; i++ {
			n = fmt.Sprintf("%s_%d", base, i)
		}
		used[n] = true
		return n
	}
	for _, p := range c.procs {
		proc, unit, _ := strings.Cut(p, ":")
		checks = append(checks, vrrp.Check{Name: name(proc), Kind: vrrp.CheckProcess, Process: proc, RestartUnit: serviceName(unit)})
	}
	for _, u := range c.urls {
		checks = append(checks, vrrp.Check{Name: name("http"), Kind: vrrp.CheckHTTP, URL: u})
	}
	for _, a := range c.tcps {
		checks = append(checks, vrrp.Check{Name: name("tcp"), Kind: vrrp.CheckTCP, Address: a})
	}
	for _, e := range c.execs {
		cmd := strings.Fields(e)
		base := "exec"
		if len(cmd) > 0 {
			base = cmd[0][strings.LastIndex(cmd[0], "/")+1:]
		}
		checks = append(checks, vrrp.Check{Name: name(base), Kind: vrrp.CheckExec, Command: cmd})
	}
	for i := range checks {
		c.apply(&checks[i])
	}
	return checks, validateChecks(checks)
}

// change applies the settings given to the group's checks (update without
// a --check-KIND flag), checked by vrrp's rules.
func (c *checkFlags) change(checks []vrrp.Check) ([]vrrp.Check, error) {
	out := append([]vrrp.Check(nil), checks...)
	for i := range out {
		c.apply(&out[i])
	}
	return out, validateChecks(out)
}

// apply sets the settings given on one check. A policy given alone sets
// what goes with it: --on-failure resign clears the weight, which applies
// only to lower_priority; --check-weight without --on-failure leaves the
// policy to the weight (vrrp.Check.EffectiveOnFailure: a weight means
// lower_priority).
func (c *checkFlags) apply(ck *vrrp.Check) {
	if c.set["check-interval"] {
		ck.Interval = c.interval
	}
	if c.set["check-timeout"] {
		ck.Timeout = c.timeout
	}
	if c.set["check-fall"] {
		ck.Fall = c.fall
	}
	if c.set["check-rise"] {
		ck.Rise = c.rise
	}
	if c.set["check-restart-unit"] {
		ck.RestartUnit = serviceName(c.restartUnit)
	}
	switch {
	case c.set["on-failure"]:
		ck.OnFailure = c.onFailure
		if c.set["check-weight"] {
			ck.Weight = c.weight
		} else if c.onFailure == vrrp.OnFailureResign {
			ck.Weight = 0
		}
	case c.set["check-weight"]:
		ck.Weight = c.weight
		ck.OnFailure = ""
	}
}

// serviceName is unit with ".service" added when it has no suffix.
func serviceName(unit string) string {
	if unit != "" && !strings.Contains(unit, ".") {
		return unit + ".service"
	}
	return unit
}

func validateChecks(checks []vrrp.Check) error {
	for i, c := range checks {
		if err := vrrp.ValidateCheck(fmt.Sprintf("checks[%d]", i), c); err != nil {
			return usageError{err.Error()}
		}
	}
	return nil
}
