package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// The seed's hand-written setup (ProfileSeedHandwritten): its own
// keepalived.conf and check_httpd.sh, with the lab's addresses, started
// without vipkeeper-agent. Only what the lab cannot run as written changes,
// each said where it is done:
//   - the VIP and the interface are the lab's;
//   - smtp_server is the lab's host address instead of a mail host the lab
//     cannot resolve (keepalived sends no mail in this setup either way);
//   - check_httpd.sh probes nginx over HTTP on the guest's own address:
//     the lab's guests share one PID namespace, where `ps -C nginx` would
//     count every guest's nginx;
//   - its `systemctl restart nginx` fails, as the lab's fault wants (nginx
//     stopped and its restart failing; the lab has no systemd).

// handwrittenPriority are the seed's priorities: nginx-master, nginx-slave.
var handwrittenPriority = [2]int{100, 99}

// handwrittenConf is the seed's keepalived.conf for g.
func (s *Stack) handwrittenConf(g *Guest) string {
	state, routerID, prio := "BACKUP", "nginx_slave", handwrittenPriority[1]
	if g == s.Topo.Guests[0] {
		state, routerID, prio = "MASTER", "nginx_master", handwrittenPriority[0]
	}
	return fmt.Sprintf(`global_defs {
    notification_email {
        notify@example.com
    }
    notification_email_from sns-lvs@example.com
    smtp_server %s
    smtp_connection_timeout 30
    router_id %s
}
vrrp_script chk_http_port {
    script "%s"
    interval %s
    weight %d
}
vrrp_instance VI_1 {
    state %s
    interface eth0
    virtual_router_id 66
    priority %d
    advert_int %s
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    track_script {
        chk_http_port
    }
    virtual_ipaddress {
        %s
    }
}
`, g.Host.Bridge, routerID, s.handwrittenCheck(g), s.Profile.CheckInterval, s.Profile.CheckWeight,
		state, prio, s.Profile.AdvertInt, VIP)
}

func (s *Stack) handwrittenCheck(g *Guest) string {
	return filepath.Join(s.guestDir(g), "keepalived", "check_httpd.sh")
}

// handwrittenScript is the seed's check_httpd.sh for g.
func handwrittenScript(g *Guest) string {
	return fmt.Sprintf(`#!/bin/bash
# The seed's check_httpd.sh as the lab runs it: nginx is probed over HTTP on
# this guest's own address (the lab's guests share one PID namespace, where
# ps -C nginx counts every guest's nginx), and the restart fails (the fault
# is nginx stopped and not restartable; the lab has no systemd).
nginx_up() {
    local status
    { exec 3<>/dev/tcp/%[1]s/80; } 2>/dev/null || return 1
    printf 'GET / HTTP/1.0\r\nHost: %[1]s\r\n\r\n' >&3
    read -r -t 1 status <&3
    exec 3<&-
    [[ $status == "HTTP/1."?" 200"* ]]
}
if ! nginx_up; then
    false # systemctl restart nginx (fails)
    if ! nginx_up; then
        exit 1
    else
        exit 0
    fi
else
    exit 0
fi
`, g.Addr)
}

// startHandwritten writes the seed's files for g and starts keepalived
// with them (no agent).
func (s *Stack) startHandwritten(ctx context.Context, g *Guest) error {
	if err := os.WriteFile(s.handwrittenCheck(g), []byte(handwrittenScript(g)), 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := os.WriteFile(s.KeepalivedConf(g), []byte(s.handwrittenConf(g)), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return s.StartKeepalived(ctx, g)
}
