package hostsync

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vipkeeper/vipkeeper/hostsync/eip"
	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/neigh"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/internal/daemon"
)

// The real implementations satisfy the engine's interfaces.
var (
	_ ownership.Announcer = (*garp.Sender)(nil)
	_ ownership.Announcer = garp.Families{}
	_ ownership.Prober    = garp.Families{}
	_ eip.Backend         = (*eip.NFT)(nil)
	_ eip.Backend         = (*eip.Maps)(nil)
	_ eip.Backend         = (*eip.Command)(nil)
	_ httpapi.Neighbors   = (*neigh.Table)(nil)
)

// Notifier passes state to the service manager (systemd's sd_notify:
// "READY=1", "STATUS=...", "WATCHDOG=1", "STOPPING=1"); Run uses
// daemon.Systemd.
type Notifier = daemon.Notifier

// Platform is what Run drives on the host. OpenPlatform builds it from the
// configuration; tests fill it with fakes. Nil fields are skipped.
type Platform struct {
	Announcer ownership.Announcer
	// Prober asks who holds a VIP; nil disables probing.
	Prober    ownership.Prober
	Listen    ownership.ListenFunc
	Backend   eip.Backend
	Neighbors httpapi.Neighbors
	Notifier  Notifier
	// Watchdog is systemd's watchdog interval (WATCHDOG_USEC); Run pings
	// at half of it. Zero disables pings.
	Watchdog time.Duration
	// closers are closed by Close.
	closers []io.Closer
}

// Close releases what OpenPlatform opened.
func (p *Platform) Close() error {
	var errs []error
	for _, c := range p.closers {
		errs = append(errs, c.Close())
	}
	p.closers = nil
	return errors.Join(errs...)
}

// OpenPlatform opens the host side: the GARP and neighbour advertisement
// senders and the listener on cfg.GARPInterface (needs CAP_NET_RAW), the data-plane backend and the
// neighbour table. Close it after Run returns.
func OpenPlatform(cfg Config, log *slog.Logger) (*Platform, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Platform{Neighbors: neigh.New(nil)}
	switch cfg.DataPlane.Backend {
	case BackendNFTables:
		if cfg.DataPlane.Netns != "" {
			if err := p.openMapsInNetns(cfg.DataPlane, log); err != nil {
				p.Close()
				return nil, fmt.Errorf("hostsync: data plane: %w", err)
			}
			break
		}
		b, err := eip.NewNFT(eip.NFTOptions{
			Table: cfg.DataPlane.Table, NFT: cfg.DataPlane.NFT, RouteTable: cfg.DataPlane.RouteTable,
			Timeout: cfg.DataPlane.Timeout, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("hostsync: data plane: %w", err)
		}
		p.Backend = b
		p.closers = append(p.closers, b)
	case BackendCommand:
		b, err := eip.NewCommand(eip.CommandOptions{
			Path: cfg.DataPlane.Command, Args: cfg.DataPlane.Args, Timeout: cfg.DataPlane.Timeout, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("hostsync: data plane: %w", err)
		}
		p.Backend = b
	}
	if cfg.GARPInterface != "" {
		s, c, err := garp.OpenSender(cfg.GARPInterface, garp.Options{Logger: log})
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("hostsync: %w", err)
		}
		p.closers = append(p.closers, c)
		// IPv6 VIPs (dual-stack groups) are announced and probed with
		// neighbour discovery on the same interface, in the same bursts.
		s6, c6, err := garp.OpenNDPSender(cfg.GARPInterface, garp.Options{Logger: log})
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("hostsync: %w", err)
		}
		p.closers = append(p.closers, c6)
		f := garp.Families{V4: s, V6: s6}
		p.Announcer = f
		p.Prober = f
		// On a bridge, each observation is checked against the port its
		// MAC is pinned to (see ownership.OpenListen).
		listen, err := ownership.OpenListen(cfg.GARPInterface, log)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.Listen = listen
	}
	return p, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// openMapsInNetns sets p.Backend to the Maps backend programming the
// network namespace dp.Netns through netlink (nftables and routes): the
// namespace is opened once, by name, and entered by no process. The
// backend, its route handle and the namespace are closed, in that order,
// by p.Close.
func (p *Platform) openMapsInNetns(dp DataPlaneConfig, log *slog.Logger) error {
	ns, err := netns.GetFromName(dp.Netns)
	if err != nil {
		return fmt.Errorf("dataplane.netns %q: %w", dp.Netns, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return fmt.Errorf("dataplane.netns %q: netlink: %w", dp.Netns, err)
	}
	m, err := eip.NewMaps(eip.MapsOptions{
		Table: dp.Table, NetNS: int(ns), Netlink: h, RouteTable: dp.RouteTable,
		// As NewNFT's default Maps: every periodic reapply reads back.
		ReadBack: eip.DefaultReadBack, Logger: log,
	})
	if err != nil {
		h.Close()
		ns.Close()
		return fmt.Errorf("dataplane.netns %q: %w", dp.Netns, err)
	}
	p.Backend = m
	p.closers = append(p.closers, m,
		closerFunc(func() error { h.Close(); return nil }),
		closerFunc(ns.Close))
	return nil
}
