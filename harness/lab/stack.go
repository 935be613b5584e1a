package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Profile is a set of VRRP and health-check timings for the group.
type Profile struct {
	Name        string
	VRRPVersion int
	AdvertInt   string // seconds, as vipctl takes it
	// CheckInterval is the health check's interval in seconds as vipctl
	// takes it; "" leaves vipkeeper's default (1 s for a resign check).
	CheckInterval string
	// OnFailure is the check's policy; "" leaves vipkeeper's default
	// (resign: the failing master enters FAULT at once). "lower_priority"
	// needs CheckWeight, the seed's weighted vrrp_script.
	OnFailure   string
	CheckWeight int
	// NoPreempt and PreemptDelay (seconds, as vipctl takes it) are the
	// group's; the zero values keep vipkeeper's defaults (preempt at once).
	NoPreempt    bool
	PreemptDelay string
	// Handwritten runs the seed's own keepalived.conf and check_httpd.sh
	// in the guests (handwritten.go): no agent and no rendering; the
	// registry still holds the group and hostsync follows the VIP through
	// keepalived's gratuitous ARP alone.
	Handwritten bool
}

// Describe is the profile in one line.
func (p Profile) Describe() string {
	if p.Handwritten {
		return fmt.Sprintf("the seed's own keepalived.conf: VRRPv%d, advert_int %s s, vrrp_script every %s s with weight %d, priorities %d/%d",
			p.VRRPVersion, p.AdvertInt, p.CheckInterval, p.CheckWeight, handwrittenPriority[0], handwrittenPriority[1])
	}
	policy, interval := p.OnFailure, p.CheckInterval
	if policy == "" {
		policy = "resign"
	}
	every := "every " + interval + " s"
	if interval == "" {
		every = "at vipkeeper's default interval"
	}
	s := fmt.Sprintf("vipkeeper: VRRPv%d, advert_int %s s, check %s, on_failure %s", p.VRRPVersion, p.AdvertInt, every, policy)
	if p.CheckWeight != 0 {
		s += fmt.Sprintf(" weight %d", p.CheckWeight)
	}
	return s
}

// The profiles. SeedHandwritten is the seed's own setup, hand-written
// keepalived.conf and check script (VRRPv2, advert 1 s, vrrp_script every
// 2 s with weight 2, priorities 100/99). Seed is vipkeeper with the seed's
// VRRP timing (VRRPv2, advert 1 s) and its default policy: the agent runs
// the check every 0.1 s and a failing master resigns. Default leaves the
// check interval at vipkeeper's default. Fast is VRRPv3 with a 0.1 s
// advertisement interval and a check every 0.05 s.
var (
	ProfileSeedHandwritten = Profile{Name: "seed-handwritten", VRRPVersion: 2, AdvertInt: "1", CheckInterval: "2", CheckWeight: 2, Handwritten: true}
	ProfileSeed            = Profile{Name: "seed", VRRPVersion: 2, AdvertInt: "1", CheckInterval: "0.1"}
	ProfileDefault         = Profile{Name: "default", VRRPVersion: 2, AdvertInt: "1"}
	ProfileFast            = Profile{Name: "fast", VRRPVersion: 3, AdvertInt: "0.1", CheckInterval: "0.05"}
)

// Profiles are the profiles by name (the demo's --profile).
var Profiles = map[string]Profile{
	ProfileSeedHandwritten.Name: ProfileSeedHandwritten,
	ProfileSeed.Name:            ProfileSeed,
	ProfileDefault.Name:         ProfileDefault,
	ProfileFast.Name:            ProfileFast,
}

// Group is the lab's instance group.
const Group = "nginx"

// Stack is the running system: hostsync on each host, and in each guest
// the web service, vipkeeper-agent and keepalived.
type Stack struct {
	*Lab
	Topo    *Topology
	Profile Profile

	// GatewayHost is the host whose hostsync programs the gateway's
	// nftables and routes (the others learn and announce moves but leave
	// the gateway alone: one writer for the single-registry lab).
	GatewayHost *Host

	opts       StackOptions
	hostsync   map[string]*Proc // by host id
	agents     map[string]*Proc // by guest name
	keepalived map[string]*Proc // by guest name
	web        map[string]Web   // by guest name
}

// Binary returns the path of a built binary.
func (l *Lab) Binary(name string) string { return filepath.Join(l.Bin, name) }

func (s *Stack) hostDir(h *Host) string { return filepath.Join(s.Dir, h.ID) }

// HostDir is the work directory of h's hostsync (its config and state).
func (s *Stack) HostDir(h *Host) string   { return s.hostDir(h) }
func (s *Stack) guestDir(g *Guest) string { return filepath.Join(s.Dir, g.NS) }

// AdminSocket is the admin socket of h's hostsync.
func (s *Stack) AdminSocket(h *Host) string { return filepath.Join(s.hostDir(h), "hostsync.sock") }

// AgentSocket is the control socket of g's agent.
func (s *Stack) AgentSocket(g *Guest) string { return filepath.Join(s.guestDir(g), "agent.sock") }

// KeepalivedConf is the keepalived.conf the agent of g renders.
func (s *Stack) KeepalivedConf(g *Guest) string {
	return filepath.Join(s.guestDir(g), "keepalived", "keepalived.conf")
}

// TrackDir is where g's agent writes its checks' track files.
func (s *Stack) TrackDir(g *Guest) string { return filepath.Join(s.guestDir(g), "run", "track") }

func (s *Stack) keepalivedPID(g *Guest) string {
	return filepath.Join(s.guestDir(g), "run", "keepalived.pid")
}

// StackOptions customise NewStackWith.
type StackOptions struct {
	// HostsyncConfig returns the hostsync.toml of h; nil uses the
	// single-registry lab's (each host its own bbolt registry, the first
	// host programming the gateway).
	HostsyncConfig func(s *Stack, h *Host) string
}

// NewStack builds the topology and starts hostsync on every host.
func (l *Lab) NewStack(ctx context.Context, p Profile) (*Stack, error) {
	return l.NewStackWith(ctx, p, StackOptions{})
}

// NewStackWith is NewStack with options.
func (l *Lab) NewStackWith(ctx context.Context, p Profile, opts StackOptions) (*Stack, error) {
	topo, err := l.BuildTopology()
	if err != nil {
		return nil, err
	}
	s := &Stack{
		Lab: l, Topo: topo, Profile: p, GatewayHost: topo.Hosts[0], opts: opts,
		hostsync: map[string]*Proc{}, agents: map[string]*Proc{}, keepalived: map[string]*Proc{}, web: map[string]Web{},
	}
	for _, h := range topo.Hosts {
		if err := s.StartHostsync(ctx, h); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// hostsyncConfig is h's hostsync.toml.
func (s *Stack) hostsyncConfig(h *Host) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir = %q\n", filepath.Join(s.hostDir(h), "state"))
	fmt.Fprintf(&b, "admin_socket = %q\n", s.AdminSocket(h))
	fmt.Fprintf(&b, "guest_listen = %q\n", net.JoinHostPort(h.Bridge.String(), fmt.Sprint(GuestAPIPort)))
	b.WriteString("garp_interface = \"br0\"\n")
	b.WriteString("reapply_interval = \"5s\"\n")
	b.WriteString("\n[dataplane]\n")
	if h == s.GatewayHost {
		b.WriteString("backend = \"nftables\"\n")
		fmt.Fprintf(&b, "netns = %q\n", s.NS("gw"))
	} else {
		b.WriteString("backend = \"none\"\n")
	}
	b.WriteString("\n[hosts]\n")
	for _, o := range s.Topo.Hosts {
		fmt.Fprintf(&b, "%s = %q\n", o.ID, o.Transit.String())
	}
	return b.String()
}

// StartHostsync starts (or restarts) hostsync in h's namespace and waits
// until its admin API answers.
func (s *Stack) StartHostsync(ctx context.Context, h *Host) error {
	dir := s.hostDir(h)
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	cfg := filepath.Join(dir, "hostsync.toml")
	text := s.hostsyncConfig(h)
	if s.opts.HostsyncConfig != nil {
		text = s.opts.HostsyncConfig(s, h)
	}
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	p, err := s.Start(h.ID, "hostsync-"+h.ID, nil, s.Binary("vipkeeper-hostsync"), "--config", cfg)
	if err != nil {
		return err
	}
	s.hostsync[h.ID] = p
	return s.poll(ctx, 15*time.Second, "hostsync on "+h.ID+" answering", func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("lab: hostsync on %s exited: %v (log %s)", h.ID, p.Wait(), p.Log)
		}
		_, err := s.HostsyncStatus(ctx, h)
		return err == nil, nil
	})
}

// Hostsync is h's hostsync process.
func (s *Stack) Hostsync(h *Host) *Proc { return s.hostsync[h.ID] }

// Vipctl runs vipctl against h's admin socket: vipctl CMD --socket S ARGS.
func (s *Stack) Vipctl(ctx context.Context, h *Host, cmd string, args ...string) (string, error) {
	full := append([]string{cmd, "--socket", s.AdminSocket(h)}, args...)
	out, err := exec.CommandContext(ctx, s.Binary("vipctl"), full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: vipctl %s: %v: %s", strings.Join(full, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// SeedCommands are the admin commands that set up the seed's scenario on
// one host: the networks and guests are registered, then group nginx is
// created, both guests join, the VIP is attached and an EIP created.
func (s *Stack) SeedCommands() [][]string {
	p := s.Profile
	cmds := [][]string{
		{"network-create", "--cidr", GuestNet.String(), "--gateway", "192.0.2.1", "--range-start", "192.0.2.10", "--range-end", "192.0.2.99", "--vpc-id", "vpc-lab", "net-guests"},
		{"network-create", "--kind", "eip", "--cidr", "203.0.113.0/24", "--range-start", "203.0.113.2", "--range-end", "203.0.113.62", "net-eip"},
	}
	for _, g := range s.Topo.Guests {
		cmds = append(cmds, []string{"guest-register", "--network-id", "net-guests", "--address", g.Addr.String(), "--mac", g.MAC, "--host", g.Host.ID, g.Name})
	}
	create := []string{"instancegroup-create", "--vrrp-version", fmt.Sprint(p.VRRPVersion), "--advert-int", p.AdvertInt}
	if !p.Handwritten {
		// The hand-written profile's check lives in its own script; the
		// registry's group has none (no agent renders it).
		create = append(create, "--check-http", "http://127.0.0.1/")
		if p.CheckInterval != "" {
			create = append(create, "--check-interval", p.CheckInterval)
		}
		if p.OnFailure != "" {
			create = append(create, "--on-failure", p.OnFailure)
		}
		if p.CheckWeight != 0 {
			create = append(create, "--check-weight", fmt.Sprint(p.CheckWeight))
		}
	}
	if p.NoPreempt {
		create = append(create, "--nopreempt")
	}
	if p.PreemptDelay != "" {
		create = append(create, "--preempt-delay", p.PreemptDelay)
	}
	if p.VRRPVersion == 2 {
		// Every host's registry must serve the same password; it goes to
		// vipctl in a root-only file, never on the command line.
		create = append(create, "--auth-pass-file", s.authPassFile())
	}
	cmds = append(cmds,
		append(create, Group),
		[]string{"instancegroup-join", Group, s.Topo.Guests[0].Name, s.Topo.Guests[1].Name},
		[]string{"instancegroup-attachnetwork", "--ip-addr", VIP.Addr().String(), "--require-designated-ip", Group},
		[]string{"instancegroup-create-eip", "--ip-addr", EIP.String(), "--bandwidth", "100", Group},
	)
	return cmds
}

// authPassFile writes the lab group's VRRP password (random per lab) to a
// 0600 file once and returns its path.
func (s *Stack) authPassFile() string {
	path := filepath.Join(s.Dir, "auth-pass")
	if _, err := os.Stat(path); err != nil {
		var b [4]byte
		_, _ = rand.Read(b[:])
		_ = os.WriteFile(path, []byte(hex.EncodeToString(b[:])+"\n"), 0o600)
	}
	return path
}

// Seed runs SeedCommands on every host (each host keeps its own registry
// in the single-registry lab); show, when set, sees each command and its
// output for the first host.
func (s *Stack) Seed(ctx context.Context, show func(cmd []string, out string)) error {
	for i, h := range s.Topo.Hosts {
		for _, c := range s.SeedCommands() {
			out, err := s.Vipctl(ctx, h, c[0], c[1:]...)
			if err != nil {
				return err
			}
			if i == 0 && show != nil {
				show(c, out)
			}
		}
	}
	return nil
}

// agentConfig is g's agent.toml.
func (s *Stack) agentConfig(g *Guest) string {
	d := s.guestDir(g)
	return fmt.Sprintf(`interface = "eth0"
state_dir = %q
socket = %q
spool_dir = %q
vipctl = %q
track_dir = %q
reconcile_interval = "500ms"
reconcile_grace = "3s"

[metadata]
url = %q
poll_interval = "1s"

[report]
min_backoff = "100ms"
max_backoff = "1s"

[keepalived]
config = %q
scripts_dir = %q
pid_file = %q
reload = "signal"
`, filepath.Join(d, "state"), s.AgentSocket(g), filepath.Join(d, "spool"), s.Binary("vipctl"), s.TrackDir(g),
		g.Host.Metadata+api.PathMetadata, s.KeepalivedConf(g), filepath.Join(d, "keepalived", "vipkeeper"), s.keepalivedPID(g))
}

// StartGuest starts the web service, the agent and, once the agent has
// rendered its configuration, keepalived in guest g; in the hand-written
// profile the web service and keepalived with the seed's own files.
func (s *Stack) StartGuest(ctx context.Context, g *Guest) error {
	if err := s.PrepareGuest(g); err != nil {
		return err
	}
	w, err := s.StartWeb(g)
	if err != nil {
		return err
	}
	s.web[g.Name] = w
	if s.Profile.Handwritten {
		return s.startHandwritten(ctx, g)
	}
	if err := s.StartAgent(ctx, g); err != nil {
		return err
	}
	return s.StartKeepalived(ctx, g)
}

// PrepareGuest makes g's work directories (StartGuest does it; a test
// starting g's parts one by one calls it first).
func (s *Stack) PrepareGuest(g *Guest) error {
	d := s.guestDir(g)
	for _, sub := range []string{"state", "spool", "run", "keepalived"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	return nil
}

// StartAgent starts g's agent and waits for its first apply.
func (s *Stack) StartAgent(ctx context.Context, g *Guest) error {
	cfg := filepath.Join(s.guestDir(g), "agent.toml")
	if err := os.WriteFile(cfg, []byte(s.agentConfig(g)), 0o600); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	p, err := s.Start(g.NS, "agent-"+g.NS, nil, s.Binary("vipkeeper-agent"), "--config", cfg)
	if err != nil {
		return err
	}
	s.agents[g.Name] = p
	return s.poll(ctx, 20*time.Second, "agent of "+g.Name+" ready", func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("lab: agent of %s exited: %v (log %s)", g.Name, p.Wait(), p.Log)
		}
		st, err := s.AgentStatus(ctx, g)
		return err == nil && st.Ready, nil
	})
}

// KillAgent ends g's agent with SIGKILL and waits for it: an agent that
// died, whose track files keep their last verdict (a clean stop writes
// them failing, and keepalived then keeps the member out of the election).
func (s *Stack) KillAgent(g *Guest) error {
	p := s.agents[g.Name]
	if p == nil || p.Exited() {
		return errors.New("lab: agent of " + g.Name + " is not running")
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = p.Wait()
	return nil
}

// Agent is g's agent process; nil when the profile runs none.
func (s *Stack) Agent(g *Guest) *Proc { return s.agents[g.Name] }

// StartKeepalived starts keepalived (VRRP only) in guest g.
func (s *Stack) StartKeepalived(ctx context.Context, g *Guest) error {
	if _, err := os.Stat(s.KeepalivedConf(g)); err != nil {
		return fmt.Errorf("lab: keepalived config of %s not rendered: %w", g.Name, err)
	}
	run := filepath.Join(s.guestDir(g), "run")
	p, err := s.Start(g.NS, "keepalived-"+g.NS, nil, "keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp",
		"--use-file", s.KeepalivedConf(g), "--pid", s.keepalivedPID(g),
		"--vrrp_pid", filepath.Join(run, "vrrp.pid"), "--checkers_pid", filepath.Join(run, "checkers.pid"))
	if err != nil {
		return err
	}
	s.keepalived[g.Name] = p
	return nil
}

// Keepalived is g's keepalived process.
func (s *Stack) Keepalived(g *Guest) *Proc { return s.keepalived[g.Name] }

// Web is g's web service.
func (s *Stack) Web(g *Guest) Web { return s.web[g.Name] }

// AgentStatus asks g's agent over its control socket.
func (s *Stack) AgentStatus(ctx context.Context, g *Guest) (api.AgentStatus, error) {
	c := control.NewClient(s.AgentSocket(g), 2*time.Second)
	defer c.Close()
	return c.Status(ctx)
}

// AgentHistory returns g's transition history, oldest first.
func (s *Stack) AgentHistory(ctx context.Context, g *Guest) ([]vrrp.Transition, error) {
	c := control.NewClient(s.AgentSocket(g), 2*time.Second)
	defer c.Close()
	return c.History(ctx, 1000)
}

// admin GETs path from h's admin API into out.
func (s *Stack) admin(ctx context.Context, h *Host, path string, out any) error {
	sock := s.AdminSocket(h)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://hostsync"+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("lab: admin %s on %s: %w", path, h.ID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("lab: admin %s on %s: %s", path, h.ID, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// HostsyncStatus is h's hostsync-status.
func (s *Stack) HostsyncStatus(ctx context.Context, h *Host) (api.HostsyncStatus, error) {
	var st api.HostsyncStatus
	return st, s.admin(ctx, h, api.PathAdminStatus, &st)
}

// GroupView is h's view of the lab group (instancegroup-show).
func (s *Stack) GroupView(ctx context.Context, h *Host) (api.GroupView, error) {
	var v api.GroupView
	return v, s.admin(ctx, h, api.PathAdminGroup+Group, &v)
}

// poll calls cond until it reports true, fails, or timeout passes.
func (s *Stack) poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// Poll is poll for callers outside the package.
func (s *Stack) Poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	return s.poll(ctx, timeout, what, cond)
}

// KillKeepalived ends g's keepalived with sig (SIGTERM: it gives up the
// VIP; SIGKILL: it leaves the VIP behind on the NIC).
func (s *Stack) KillKeepalived(g *Guest, sig syscall.Signal) error {
	p := s.keepalived[g.Name]
	if p == nil || p.Exited() {
		return errors.New("lab: keepalived of " + g.Name + " is not running")
	}
	if sig == syscall.SIGKILL {
		// keepalived runs a VRRP child; kill the whole process group so
		// nothing of it survives to clean up.
		_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	} else if err := p.Signal(sig); err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		return errors.New("lab: keepalived of " + g.Name + " did not end")
	}
	return nil
}
