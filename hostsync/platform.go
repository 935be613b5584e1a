package hostsync

import (
	"bytes"
	"os/exec"

	"context"
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
	_ eip.Backend         = (*eip.NFT)(nil)
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

// OpenPlatform opens the host side: the GARP sender and listener on
// cfg.GARPInterface (needs CAP_NET_RAW), the data-plane backend and the
// neighbour table. Close it after Run returns.
func OpenPlatform(cfg Config, log *slog.Logger) (*Platform, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Platform{Neighbors: neigh.New(nil)}
	switch cfg.DataPlane.Backend {
	case BackendNFTables:
		opts := eip.NFTOptions{
			Table: cfg.DataPlane.Table, NFT: cfg.DataPlane.NFT, RouteTable: cfg.DataPlane.RouteTable,
			Timeout: cfg.DataPlane.Timeout, Logger: log,
		}
		if ns := cfg.DataPlane.Netns; ns != "" {
			h, run, query, err := nftInNetns(ns, cfg.DataPlane.NFT)
			if err != nil {
				return nil, fmt.Errorf("hostsync: data plane: %w", err)
			}
			opts.Netlink, opts.Run, opts.Query = h, run, query
			p.closers = append(p.closers, closerFunc(func() error { h.Close(); return nil }))
		}
		b, err := eip.NewNFT(opts)
		if err != nil {
			return nil, fmt.Errorf("hostsync: data plane: %w", err)
		}
		p.Backend = b
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
			return nil, fmt.Errorf("hostsync: %w", err)
		}
		p.Announcer = s
		p.Prober = s
		p.closers = append(p.closers, c)
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

// nftInNetns returns a netlink handle inside the named network namespace,
// a runner that applies an nft script there as one transaction and one
// that runs a read-only nft command there (eip.NFTOptions.Query).
func nftInNetns(name, nft string) (*netlink.Handle, func(ctx context.Context, script []byte) error, func(ctx context.Context, args []string) ([]byte, error), error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("netns %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("netlink in netns %s: %w", name, err)
	}
	if nft == "" {
		nft = eip.DefaultNFT
	}
	run := func(ctx context.Context, script []byte) error {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", name, nft, "-f", "-")
		cmd.Stdin = bytes.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft in netns %s: %w: %s", name, err, bytes.TrimSpace(out))
		}
		return nil
	}
	query := func(ctx context.Context, args []string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", name, nft}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("nft in netns %s: %w: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
		}
		return out, nil
	}
	return h, run, query, nil
}
