// Package hostport validates the listen addresses of vipkeeper's
// configuration files (a guest API, a metrics endpoint): IP:PORT, where an
// empty IP means every address and port 0 lets the kernel pick one.
package hostport

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// Check returns an error saying what is wrong with v, or nil.
func Check(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is not host:port, e.g. \"127.0.0.1:9851\"", v)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("%q: the host must be an IP address (or empty for every address)", v)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: the port must be 0–65535", v)
	}
	return nil
}
