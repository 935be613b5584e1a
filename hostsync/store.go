package hostsync

import (
	"fmt"

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
