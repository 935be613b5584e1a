package sdlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/harness/netns"
)

// The seed's nginx failover with every daemon under a real systemd: a
// hypervisor host container runs vipkeeper-hostsync from its package and
// serves the apt repository; two VM containers, nginx-master and
// nginx-slave, are set up by the cloud-init example that takes the
// metadata from hostsync (packaging/cloud-init/vipkeeper-agent-hostsync.yaml):
// apt source, apt-get install, agent.toml, systemctl enable --now. The
// admin builds the seed's group with vipctl on the host; a client outside
// reaches nginx through the EIP. nginx dies on the master and cannot be
// restarted (the seed's check_httpd.sh case): the VIP moves to the slave
// and the EIP follows it; nginx comes back: the VIP and the EIP return.
//
//	client 198.51.100.2 ── up0 198.51.100.1 [host h1: hostsync, EIP NAT]
//	                                          br0 192.0.2.1
//	                      nginx-master eth0 192.0.2.11 ┘└ nginx-slave eth0 192.0.2.12
//	VIP 192.0.2.10, EIP 203.0.113.5
//
// One host: hostsync's registry is per host; routing the VIP between two
// hosts is the namespace lab's end-to-end test (harness/lab).
func TestFailover(t *testing.T) {
	requireLab(t)
	t.Parallel()
	f := getFixture(t)
	l := newLab(t, f)
	ctx := t.Context()

	type guest struct {
		name, ns, hostEnd, mac, addr string
		c                            *Container
	}
	master := &guest{name: "nginx-master", ns: "m", hostEnd: "vm-m", mac: "52:54:00:00:02:0b", addr: "192.0.2.11"}
	slave := &guest{name: "nginx-slave", ns: "s", hostEnd: "vm-s", mac: "52:54:00:00:02:0c", addr: "192.0.2.12"}
	guests := []*guest{master, slave}

	for _, ns := range []string{"h", "m", "s", "cl"} {
		if err := l.AddNS(ns); err != nil {
			t.Fatal(err)
		}
	}
	steps := []func() error{
		func() error { return l.Bridge("h", "br0", "192.0.2.1/24") },
		func() error { return l.Sysctl("h", "net.ipv4.ip_forward", "1") },
		func() error { return l.Veth("h", "up0", "cl", "eth0") },
		func() error { return l.IP("h", "addr", "add", "198.51.100.1/24", "dev", "up0") },
		func() error { return l.IP("cl", "addr", "add", "198.51.100.2/24", "dev", "eth0") },
		func() error { return l.IP("cl", "route", "add", "203.0.113.0/24", "via", "198.51.100.1") },
	}
	for _, g := range guests {
		steps = append(steps, func() error { return guestNet(l, "h", g.ns, g.hostEnd, g.mac, g.addr, "192.0.2.1") })
	}
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}

	// The host first: the guests' cloud-init installs from its
	// repository and their agents fetch the group from its hostsync.
	host, err := l.Boot(ctx, "h1", "h", BootOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: host booted to running in %s", host.BootTime.Round(10*time.Millisecond))

	step := func(name string, fn func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, fn) {
			t.FailNow()
		}
	}

	step("hostsync installed and active on the host", func(t *testing.T) {
		const conf = `# hostsync of host h1: the guests reach it on br0.
guest_listen = "192.0.2.1:8750"
garp_interface = "br0"
metrics_listen = "127.0.0.1:9750"

[dataplane]
backend = "nftables"
`
		if err := host.WriteFile(ctx, "/etc/vipkeeper/hostsync.toml", []byte(conf), "root:root", 0o640); err != nil {
			t.Fatal(err)
		}
		if err := host.CopyIn(ctx, f.v1["vipkeeper-hostsync"], "/root/vipkeeper-hostsync.deb", 0o644); err != nil {
			t.Fatal(err)
		}
		// The admin's own config is there first, as with the agent's
		// cloud-init: keep it.
		run(t, ctx, host, "dpkg", "--install", "--force-confold", "/root/vipkeeper-hostsync.deb")
		if got := dpkgStatus(ctx, host, "vipkeeper-hostsync"); got != "install ok installed "+pkgVersion {
			t.Errorf("dpkg status %q", got)
		}
		poll(t, ctx, shortWait, "vipkeeper-hostsync active with a status sentence", func() (bool, string, error) {
			s, err := statusLine(ctx, host, "vipkeeper-hostsync.service")
			active, aerr := host.IsActive(ctx, "vipkeeper-hostsync.service")
			return active == "active" && s != "", active + ": " + s, errors.Join(err, aerr)
		})
		// The repository the guests' cloud-init installs from.
		if err := host.CopyIn(ctx, f.v1["vipkeeper-agent"], "/var/www/html/vipkeeper/"+filepath.Base(f.v1["vipkeeper-agent"]), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := host.IndexAptRepo(ctx, "/var/www/html/vipkeeper"); err != nil {
			t.Fatal(err)
		}
	})

	step("the admin builds the seed's group", func(t *testing.T) {
		admin := [][]string{
			{"network-create", "--cidr", "192.0.2.0/24", "--vpc-id", "vpc1", "net1"},
			{"network-create", "--cidr", "203.0.113.0/24", "--kind", "eip", "pub"},
			{"guest-register", "--network-id", "net1", "--address", master.addr, "--mac", master.mac, "--host", "h1", master.name},
			{"guest-register", "--network-id", "net1", "--address", slave.addr, "--mac", slave.mac, "--host", "h1", slave.name},
			{"instancegroup-create", "--check-process", "nginx:nginx.service", "nginx"},
			{"instancegroup-join", "nginx", master.name, slave.name},
			{"instancegroup-attachnetwork", "--ip-addr", "192.0.2.10", "--require-designated-ip", "nginx"},
			{"instancegroup-create-eip", "--ip-addr", "203.0.113.5", "--bandwidth", "100", "nginx"},
		}
		for _, a := range admin {
			run(t, ctx, host, append([]string{"vipctl"}, a...)...)
		}
		g := showGroup(t, ctx, host)
		if g.VIP == nil || g.VIP.Address.String() != "192.0.2.10/24" || g.EIP == nil || g.EIP.Address.String() != "203.0.113.5" {
			t.Fatalf("group: VIP %+v, EIP %+v", g.VIP, g.EIP)
		}
		for _, m := range g.Members {
			t.Logf("member %s priority %d", m.Name, m.Priority)
		}
		// The EIP mapping is in hostsync's data plane, in the host: an
		// element of the NAT maps the one rule per chain looks up.
		out := run(t, ctx, host, "nft", "list", "table", "ip", "vipkeeper")
		if !strings.Contains(out, "203.0.113.5 : 192.0.2.10") || !strings.Contains(out, "dnat to ip daddr map @eip_to_vip") {
			t.Errorf("nft table vipkeeper:\n%s", out)
		}
	})

	step("the guests boot with the cloud-init example and install the agent", func(t *testing.T) {
		// Both at once, as a platform starts the VMs of a group; cloud-init
		// adds the host's repository, installs the packages, writes
		// agent.toml and enables the agent and keepalived during the boot.
		userData := example(t, f, "vipkeeper-agent-hostsync.yaml")
		var wg sync.WaitGroup
		errs := make([]error, len(guests))
		start := time.Now()
		for i, g := range guests {
			wg.Go(func() { g.c, errs[i] = l.Boot(ctx, g.name, g.ns, BootOptions{UserData: userData}) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("timing: both guests booted with cloud-init and installed from the host's repository in %s (master %s, slave %s)",
			time.Since(start).Round(10*time.Millisecond), master.c.BootTime.Round(10*time.Millisecond), slave.c.BootTime.Round(10*time.Millisecond))
		for _, g := range guests {
			checkCloudInit(t, ctx, g.c, userData)
			if got := dpkgStatus(ctx, g.c, "vipkeeper-agent"); got != "install ok installed "+pkgVersion {
				t.Errorf("%s: dpkg status %q", g.name, got)
			}
			// The source cloud-init's apt module wrote, as the example names it.
			if got := strings.TrimSpace(run(t, ctx, g.c, "cat", "/etc/apt/sources.list.d/vipkeeper.list")); got != "deb [trusted=yes] http://192.0.2.1/vipkeeper ./" {
				t.Errorf("%s: vipkeeper.list = %q", g.name, got)
			}
			if got := strings.TrimSpace(run(t, ctx, g.c, "systemctl", "is-enabled", "vipkeeper-agent.service", "keepalived.service")); got != "enabled\nenabled" {
				t.Errorf("%s: is-enabled = %q", g.name, got)
			}
			if err := g.c.WriteFile(ctx, "/var/www/html/index.html", []byte(g.name+"\n"), "root:root", 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})

	client := netns.HTTPClient(l.NS("cl"), 5*time.Second)
	// owner waits until the VIP is on want's eth0 only, the agent there
	// says MASTER, hostsync records want as the owner, and the client
	// reaches want's nginx through the EIP.
	owner := func(t *testing.T, want, other *guest, timeout time.Duration) {
		t.Helper()
		poll(t, ctx, timeout, "the VIP on "+want.name+" and the EIP reaching it", func() (bool, string, error) {
			on, err := hasAddr(ctx, want.c, "eth0", "192.0.2.10/24")
			if err != nil {
				return false, "", err
			}
			off, err := hasAddr(ctx, other.c, "eth0", "192.0.2.10/24")
			if err != nil {
				return false, "", err
			}
			s, err := statusLine(ctx, want.c, "vipkeeper-agent.service")
			if err != nil {
				return false, "", err
			}
			g := showGroup(t, ctx, host)
			var rec string
			if g.Owner != nil {
				rec = g.Owner.Name
			}
			body, herr := get(ctx, client, "http://203.0.113.5/")
			state := fmt.Sprintf("VIP on %s %v, on %s %v; agent %q; hostsync owner %q; EIP answers %q (%v)", want.name, on, other.name, off, s, rec, body, herr)
			return on && !off && strings.HasPrefix(s, "MASTER of nginx") && rec == want.name && body == want.name, state, nil
		})
	}

	step("the master holds the VIP and the EIP reaches it", func(t *testing.T) {
		owner(t, master, slave, 2*time.Minute)
		for _, g := range guests {
			if got, err := g.c.IsActive(ctx, "keepalived.service"); err != nil || got != "active" {
				t.Errorf("%s keepalived %q %v", g.name, got, err)
			}
		}
		s, err := statusLine(ctx, slave.c, "vipkeeper-agent.service")
		if err != nil || !strings.HasPrefix(s, "BACKUP of nginx") {
			t.Errorf("slave agent: %q %v", s, err)
		}
	})

	step("nginx killed on the master: restart_unit brings it back and the VIP never leaves", func(t *testing.T) {
		// The check (process nginx, restart_unit nginx.service) sees
		// nginx's exit, restarts the unit once and judges it again before
		// failing: a service that comes back causes no failover. The VIP's
		// place is sampled every 10 ms through netlink in both guests'
		// namespaces, from the kill until a backstop run (every 3 s) and
		// more after nginx is back.
		// systemd itself does not restart nginx: the restart is the check's.
		if got := strings.TrimSpace(run(t, ctx, master.c, "systemctl", "show", "--property=Restart", "--value", "nginx.service")); got != "no" {
			t.Fatalf("nginx.service has Restart=%s; the test needs systemd to leave it down", got)
		}
		before := strings.TrimSpace(run(t, ctx, master.c, "systemctl", "show", "--property=MainPID", "--value", "nginx.service"))
		hm, err := netns.Handle(l.NS(master.ns))
		if err != nil {
			t.Fatal(err)
		}
		defer hm.Close()
		hs, err := netns.Handle(l.NS(slave.ns))
		if err != nil {
			t.Fatal(err)
		}
		defer hs.Close()
		stop := make(chan struct{})
		var (
			samples int
			wrong   []string
			sampled sync.WaitGroup
		)
		start := time.Now()
		sampled.Go(func() {
			tk := time.NewTicker(10 * time.Millisecond)
			defer tk.Stop()
			for {
				on, err1 := vipOn(hm)
				off, err2 := vipOn(hs)
				samples++
				if err := errors.Join(err1, err2); err != nil || !on || off {
					wrong = append(wrong, fmt.Sprintf("+%s master %v slave %v %v", time.Since(start).Round(time.Millisecond), on, off, err))
				}
				select {
				case <-stop:
					return
				case <-tk.C:
				}
			}
		})
		run(t, ctx, master.c, "systemctl", "kill", "--signal=SIGKILL", "nginx.service")
		var after string
		poll(t, ctx, shortWait, "nginx restarted on the master", func() (bool, string, error) {
			p, err := master.c.Show(ctx, "nginx.service", "ActiveState", "MainPID")
			if err != nil {
				return false, "", err
			}
			after = p["MainPID"]
			return p["ActiveState"] == "active" && after != "0" && after != before, fmt.Sprint(p), nil
		})
		back := time.Since(start)
		// A backstop run and more with nginx back.
		time.Sleep(4 * time.Second)
		close(stop)
		sampled.Wait()
		t.Logf("nginx SIGKILLed, restarted by the agent after %s (MainPID %s -> %s); %d samples every 10 ms",
			back.Round(time.Millisecond), before, after, samples)
		if len(wrong) > 0 {
			t.Errorf("the VIP was not on the master alone in %d of %d samples: %v", len(wrong), samples, wrong)
		}
		for _, tr := range history(t, ctx, master.c) {
			if tr.At.After(start) {
				t.Errorf("the master's agent recorded %s -> %s after the kill: %+v", tr.From, tr.To, tr)
			}
		}
	})

	step("nginx fails on the master: the VIP and the EIP move to the slave", func(t *testing.T) {
		start := time.Now()
		// nginx stops and cannot be restarted: the check's restart fails,
		// its weight is lost, the slave's priority is higher.
		run(t, ctx, master.c, "systemctl", "mask", "--now", "nginx.service")
		owner(t, slave, master, 90*time.Second)
		t.Logf("timing: nginx stopped on the master to the EIP serving the slave in %s", time.Since(start).Round(100*time.Millisecond))
		out := run(t, ctx, host, "journalctl", "--no-pager", "--output=cat", "--unit=vipkeeper-hostsync.service")
		if !strings.Contains(out, slave.name) {
			t.Errorf("hostsync's journal does not mention the move to %s:\n%s", slave.name, out)
		}
	})

	step("nginx comes back: the VIP and the EIP return to the master", func(t *testing.T) {
		start := time.Now()
		run(t, ctx, master.c, "systemctl", "unmask", "nginx.service")
		run(t, ctx, master.c, "systemctl", "start", "nginx.service")
		owner(t, master, slave, 90*time.Second)
		t.Logf("timing: nginx started on the master to the EIP serving it in %s", time.Since(start).Round(100*time.Millisecond))
	})

	step("hostsync's /metrics passes promtool check metrics", func(t *testing.T) {
		body := run(t, ctx, host, "curl", "-fsS", "--max-time", "10", "http://127.0.0.1:9750/metrics")
		s := checkMetrics(t, "vipkeeper-hostsync", body)
		// The moves: the first owner, the failover and the return at
		// least; the data plane applied, never failing.
		if v := s["vipkeeper_hostsync_vip_moves_total"]; v < 3 {
			t.Errorf("vipkeeper_hostsync_vip_moves_total = %v, want at least 3", v)
		}
		if v := s[`vipkeeper_hostsync_dataplane_applies_total{result="ok"}`]; v < 3 {
			t.Errorf("data-plane applies ok: %v, want at least 3", v)
		}
		if v, ok := s[`vipkeeper_hostsync_dataplane_applies_total{result="error"}`]; ok {
			t.Errorf("data-plane applies failed %v times", v)
		}
		t.Logf("hostsync: %v moves, %v split brains, %v accepted claims",
			s["vipkeeper_hostsync_vip_moves_total"], s["vipkeeper_hostsync_split_brains_total"], s[`vipkeeper_hostsync_claims_total{result="accepted"}`])
	})

	step("no daemon restarted or failed on the way", func(t *testing.T) {
		check := func(c *Container, unit string) {
			p, err := c.Show(ctx, unit, "ActiveState", "NRestarts")
			if err != nil {
				t.Error(err)
				return
			}
			if p["ActiveState"] != "active" || p["NRestarts"] != "0" {
				t.Errorf("%s %s: %v", c.Name, unit, p)
			}
		}
		check(host, "vipkeeper-hostsync.service")
		for _, g := range guests {
			check(g.c, "vipkeeper-agent.service")
			check(g.c, "keepalived.service")
		}
		for _, c := range []*Container{host, master.c, slave.c} {
			if got := strings.TrimSpace(run(t, ctx, c, "systemctl", "is-system-running")); got != "running" {
				t.Errorf("%s is %q", c.Name, got)
			}
		}
	})
}

// showGroup is `vipctl instancegroup-show --json nginx` on the host.
func showGroup(t *testing.T, ctx context.Context, host *Container) api.GroupView {
	t.Helper()
	out := run(t, ctx, host, "vipctl", "instancegroup-show", "--json", "nginx")
	var g api.GroupView
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatalf("instancegroup-show --json: %v\n%s", err, out)
	}
	return g
}

// get is the trimmed body of a 200 answer to a GET of url.
func get(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

// vipOn reports whether eth0 in the namespace of h carries the VIP
// 192.0.2.10.
func vipOn(h *netlink.Handle) (bool, error) {
	link, err := h.LinkByName("eth0")
	if err != nil {
		return false, err
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a.IP.Equal(net.IPv4(192, 0, 2, 10)) {
			return true, nil
		}
	}
	return false, nil
}
