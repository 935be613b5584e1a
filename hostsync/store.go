package hostsync

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// OpenStore opens the registry the configuration selects: the bbolt file
// at DBPath (store "bbolt") or the registry shared in etcd (store "etcd").
func OpenStore(cfg Config) (registry.Store, error) {
	switch cfg.Store {
	case StoreEtcd:
		e := cfg.Etcd
		s, err := registry.OpenEtcd(registry.EtcdConfig{
			Endpoints: e.Endpoints, DialTimeout: e.DialTimeout, CAFile: e.CAFile,
			CertFile: e.CertFile, KeyFile: e.KeyFile, Prefix: e.Prefix,
		})
		if err != nil {
			return nil, fmt.Errorf("hostsync: %w", err)
		}
		return s, nil
	case StoreBolt, "":
		s, err := registry.OpenBolt(cfg.DBPath, cfg.DBTimeout)
		if err != nil {
			return nil, fmt.Errorf("hostsync: %w", err)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("%w: store: %q is not one of bbolt, etcd", ErrConfig, cfg.Store)
	}
}

// storeName describes the registry for the start-up log.
func storeName(cfg Config) string {
	if cfg.Store == StoreEtcd {
		return fmt.Sprintf("etcd %v %s", cfg.Etcd.Endpoints, cfg.Etcd.Prefix)
	}
	return cfg.DBPath
}

// followBuckets are the records the data plane and the VIP list are made
// of: a change to any of them by another host re-applies the data plane.
var followBuckets = map[registry.Bucket]bool{
	registry.BucketGroups: true, registry.BucketOwners: true,
	registry.BucketGuests: true, registry.BucketEIPs: true,
}

// follow keeps this process in step with the other hosts and gateways of
// a shared registry: whenever another process changes a group, guest,
// EIP or owner, it re-reads the VIP list and re-applies the complete data
// plane. Watch callbacks only signal; one apply runs at a time and, since
// each reads the latest state, a burst of changes costs at most one apply
// more. A failed apply is retried after retryApply. It returns when ctx
// ends.
func follow(ctx context.Context, svc *Service, w registry.Watcher, log *slog.Logger) {
	kick := make(chan struct{}, 1)
	signal := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		retry := time.NewTimer(0)
		retry.Stop()
		defer retry.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			case <-retry.C:
			}
			err := svc.refreshVIPs(ctx)
			if err == nil {
				err = svc.Reapply(ctx)
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("data plane will be retried", "op", "follow", "in", retryApply, "err", err)
				retry.Reset(retryApply)
			}
		}
	}()
	err := w.Watch(ctx, func(changes []registry.Change) {
		if changes == nil {
			signal() // (re-)established: changes may have been missed
			return
		}
		for _, c := range changes {
			if followBuckets[c.Bucket] {
				signal()
				return
			}
		}
	})
	if err != nil && ctx.Err() == nil {
		log.Error("registry watch stopped", "op", "follow", "err", err)
	}
	<-done
}
