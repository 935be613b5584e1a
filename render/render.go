// Package render turns an instance group's VIP metadata (package vrrp) into,
// for one member, keepalived.conf, one health-check script per check and the
// notify hook script. Rendering is deterministic (same input, same bytes) and
// injection-proof: every name or string from metadata is validated by vrrp
// and quoted where it lands, so it cannot add keepalived syntax or shell code.
package render

import (
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Options are the member-local inputs to rendering.
type Options struct {
	// Self is the member name (must be in Metadata.Members).
	Self string
	// Interface is the NIC keepalived runs VRRP on (default "eth0").
	Interface string
	// ScriptsDir is the absolute directory the scripts are installed into
	// (default "/etc/keepalived/vipkeeper"); keepalived.conf refers to
	// scripts by ScriptsDir/NAME.
	ScriptsDir string
	// Vipctl is the absolute path of the vipctl binary that check and notify
	// scripts run (default "/usr/bin/vipctl").
	Vipctl string
	// NotifySocket is the agent's control socket the notify hook writes to
	// (default "/run/vipkeeper/agent.sock").
	NotifySocket string
	// SpoolDir is where the notify hook spools events while the agent is down
	// (default "/var/lib/vipkeeper/spool").
	SpoolDir string
	// ExtraChecks are local checks added to the group's; a local check with
	// the same name as a group check replaces it.
	ExtraChecks []vrrp.Check
}

// File is one rendered file, named relative to its directory.
type File struct {
	Name string // "keepalived.conf" or a script's base name
	Mode uint32 // 0640 for the config, 0700 for scripts
	Data []byte
}

// Output is everything rendered for one member.
type Output struct {
	// Config is keepalived.conf.
	Config []byte
	// Scripts go into Options.ScriptsDir; keepalived.conf refers to them there.
	Scripts []File
	// Hash is a hex SHA-256 over Config and every script (name, mode, data),
	// used by the agent to reload only on change.
	Hash string
}
