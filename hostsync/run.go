package hostsync

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/vipkeeper/vipkeeper/hostsync/garp"
	"github.com/vipkeeper/vipkeeper/hostsync/httpapi"
	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/ownership"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/internal/daemon"
)

// Timing of Run's loops.
const (
	// statusInterval is how often STATUS= is refreshed.
	statusInterval = 5 * time.Second
	// retryApply is how soon a failed data-plane apply is retried.
	retryApply = 5 * time.Second
	// replayInterval is how often queued claims are tried again while
	// the shared registry is unreachable.
	replayInterval = time.Second
)

// Run is vipkeeper-hostsync: it opens the platform (OpenPlatform: GARP on
// garp_interface, the data-plane backend, the neighbour table) and the
// registry, serves the guest API and the admin socket, re-applies the data
// plane from the registry at start and then periodically, learns moves
// passively from GARP, and keeps systemd informed (READY, STATUS, and
// watchdog pings while the engine answers). On a shared registry (store
// "etcd") it also follows the other hosts' changes; role "gateway" does
// only that, with the data plane and metrics (no guest or admin API, no
// GARP). It returns when ctx ends (ctx's error) or a server fails.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := OpenPlatform(cfg, log)
	if err != nil {
		return err
	}
	defer p.Close()
	sd := daemon.Systemd{}
	p.Notifier, p.Watchdog = sd, sd.WatchdogInterval()
	return runWith(ctx, cfg, log, p)
}

// runWith is Run on the platform p, the seam for tests (nil: an empty
// platform, nothing driven on the host).
func runWith(ctx context.Context, cfg Config, log *slog.Logger, p *Platform) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if p == nil {
		p = &Platform{}
	}
	store, err := OpenStore(cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	gateway := cfg.Role == RoleGateway
	if gateway {
		// A gateway follows the registry and programs its data plane;
		// the host whose guest took the VIP sends the GARP.
		gw := *p
		gw.Announcer, gw.Listen = nil, nil
		p = &gw
	}

	var metrics *ownership.Metrics
	var metricsReg *prometheus.Registry
	if cfg.MetricsListen != "" {
		if metricsReg, err = daemon.NewRegistry(); err != nil {
			return err
		}
		if metrics, err = ownership.NewMetrics(metricsReg); err != nil {
			return err
		}
	}
	var queue *ownership.ClaimQueue
	if cfg.Store == StoreEtcd && !gateway {
		// Claims that find etcd unreachable wait here, in order.
		if queue, err = ownership.OpenClaimQueue(filepath.Join(cfg.StateDir, ownership.ClaimQueueFile), cfg.DBTimeout); err != nil {
			return err
		}
		defer queue.Close()
	}
	var lease *registry.HostLease
	if es, ok := store.(*registry.Etcd); ok && !gateway {
		// Every write of this host is fenced with its etcd lease; the
		// first is taken now so that writes at start need not wait.
		var leaseMetrics *registry.LeaseMetrics
		if metricsReg != nil {
			if leaseMetrics, err = registry.NewLeaseMetrics(metricsReg); err != nil {
				return err
			}
		}
		lease = registry.NewHostLease(es, cfg.Etcd.HostID, cfg.Etcd.LeaseTTL, log, leaseMetrics)
		// Bounded: without a quorum the host starts from its last view
		// at once and hold keeps trying in the background.
		actx, cancel := context.WithTimeout(ctx, registry.InitialLeaseWait)
		err := lease.Acquire(actx)
		cancel()
		if err != nil {
			log.Warn("no host lease yet: registry writes wait for etcd", "op", "lease", "err", err)
		}
		defer lease.Release() // when Run ends before hold runs
	}
	svc, err := New(ctx, store, Options{
		Logger: log, Announcer: p.Announcer, Backend: p.Backend, Hosts: cfg.Hosts, Metrics: metrics,
		SplitBrainWindow: cfg.SplitBrainWindow, StaleClaimAge: cfg.StaleClaimAge, ApplyTimeout: cfg.DataPlane.Timeout,
		Queue: queue, AllowEmptyDataPlane: cfg.DataPlane.AllowEmpty,
	})
	if err != nil {
		return err
	}
	defer svc.Close()

	var servers []*http.Server
	var listeners []net.Listener
	closeListeners := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	guestAddr := "off"
	if !gateway {
		guestLn, err := net.Listen("tcp", cfg.GuestListen)
		if err != nil {
			return fmt.Errorf("hostsync: guest API: %w", err)
		}
		adminLn, err := httpapi.ListenAdmin(cfg.AdminSocket)
		if err != nil {
			guestLn.Close()
			return err
		}
		defer os.Remove(cfg.AdminSocket)
		servers = append(servers,
			guestServer(httpapi.NewGuestAPI(svc.Engine, p.Neighbors, log), cfg, log),
			&http.Server{
				Handler: httpapi.RequireRoot(httpapi.NewAdminAPI(svc.Inventory, svc.Engine, log)), ConnContext: httpapi.PeerContext,
				ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			})
		listeners = append(listeners, httpapi.LimitPerSource(guestLn, cfg.GuestConnsPerSource, log), adminLn)
		guestAddr = guestLn.Addr().String()
	}
	metricsAddr := "off"
	if metricsReg != nil {
		ml, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			closeListeners()
			return fmt.Errorf("hostsync: metrics: %w", err)
		}
		servers = append(servers, daemon.MetricsServer(metricsReg, log))
		listeners = append(listeners, ml)
		metricsAddr = ml.Addr().String()
	}
	log.Info("hostsync started", "role", cfg.Role, "store", cfg.Store, "guest_api", guestAddr, "admin_socket", cfg.AdminSocket,
		"db", storeName(cfg), "garp_iface", cfg.GARPInterface, "backend", cfg.DataPlane.Backend, "metrics", metricsAddr)

	g, gctx := errgroup.WithContext(ctx)
	for i, srv := range servers {
		ln := listeners[i]
		g.Go(func() error {
			if err := daemon.Serve(gctx, srv, ln); err != nil {
				return fmt.Errorf("hostsync: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		notify(p, log, "STOPPING=1")
		return nil
	})
	g.Go(func() error { reconcile(gctx, svc, cfg.ReapplyInterval, log); return nil })
	if queue != nil {
		g.Go(func() error { ownership.ReplayLoop(gctx, svc.Engine, replayInterval, log); return nil })
	}
	if lease != nil {
		g.Go(func() error { lease.Hold(gctx); return nil })
	}
	if w, ok := store.(registry.Watcher); ok {
		g.Go(func() error { ownership.FollowWatch(gctx, svc.Engine, w, log); return nil })
	}
	if p.Listen != nil {
		g.Go(func() error {
			err := p.Listen(gctx, svc.WatchVIP, func(o garp.Observation) {
				if _, err := svc.Observe(gctx, o); err != nil && !errors.Is(err, inventory.ErrForbidden) {
					log.Warn("garp observation", "vip", o.VIP, "mac", o.MAC.String(), "err", err)
				}
			})
			if err != nil && gctx.Err() == nil {
				// Passive detection is a second source next to the
				// agents' claims: keep serving without it.
				log.Error("passive GARP detection stopped", "iface", cfg.GARPInterface, "err", err)
			}
			return nil
		})
	}
	if p.Prober != nil && p.Listen != nil && cfg.ProbeInterval > 0 {
		g.Go(func() error { ownership.ProbeLoop(gctx, svc.Engine, p.Prober, cfg.ProbeInterval); return nil })
	}
	g.Go(func() error { statusLoop(gctx, svc, p, log); return nil })
	if p.Notifier != nil {
		g.Go(func() error {
			// Alive while the engine answers: its lock is free within
			// half the watchdog interval (a deadlocked engine gets
			// hostsync restarted; an unreachable etcd does not).
			daemon.Watchdog(gctx, p.Notifier, p.Watchdog, func(context.Context) error {
				svc.WatchVIP(netip.Addr{})
				return nil
			}, log)
			return nil
		})
	}

	err = g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	log.Info("hostsync stopped", "reason", err)
	return err
}

// guestServer is the guest API's server: every phase of a connection is
// bounded (header, body, answer, keep-alive idle), so with the per-source
// cap of the listener (httpapi.LimitPerSource) a slow or idle client holds few
// descriptors, and not for long.
func guestServer(h http.Handler, cfg Config, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: cmp.Or(cfg.GuestIdleTimeout, DefaultGuestIdleTimeout),
		MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// reconcile applies the data plane at start, then every interval, and
// sooner after a failure.
func reconcile(ctx context.Context, svc *Service, interval time.Duration, log *slog.Logger) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next := interval
		if err := svc.Reapply(ctx); err != nil && ctx.Err() == nil {
			log.Warn("data plane will be retried", "op", "reconcile", "in", retryApply, "err", err)
			next = retryApply
		}
		t.Reset(next)
	}
}

// statusLoop sends READY=1 once, then STATUS= (the watchdog is pinged by
// daemon.Watchdog, while the engine answers).
func statusLoop(ctx context.Context, svc *Service, p *Platform, log *slog.Logger) {
	sendStatus := func() {
		st, err := svc.Status(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("status", "err", err)
			}
			return
		}
		notify(p, log, "STATUS="+st.Sentence)
	}
	notify(p, log, "READY=1")
	sendStatus()
	status := time.NewTicker(statusInterval)
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-status.C:
			sendStatus()
		}
	}
}

func notify(p *Platform, log *slog.Logger, state string) {
	if p.Notifier == nil {
		return
	}
	if err := p.Notifier.Notify(state); err != nil {
		log.Debug("sd_notify", "state", state, "err", err)
	}
}
