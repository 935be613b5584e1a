package ownership

import (
	"context"
	"errors"

	"github.com/vipkeeper/vipkeeper/hostsync/inventory"
	"github.com/vipkeeper/vipkeeper/hostsync/registry"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// Metadata returns the metadata of the caller's group, validated by vrrp.
//
// With a claim queue (a shared registry), the document is remembered per
// guest address, and while the registry is unreachable
// (registry.ErrUnavailable) the caller is served the last one (when its
// MAC, if known, is the one registered).
func (s *Engine) Metadata(ctx context.Context, c inventory.Caller) (*vrrp.Metadata, error) {
	var md *vrrp.Metadata
	var mac string
	err := s.bounded(ctx, func(ctx context.Context) error {
		return s.store.View(ctx, func(tx registry.Tx) error {
			gu, g, err := inventory.Identify(tx, c)
			if err != nil {
				return err
			}
			mac = gu.MAC
			md, err = inventory.MetadataOf(tx, g)
			return err
		})
	})
	if s.queue == nil {
		return md, err
	}
	switch {
	case err == nil:
		s.rememberMetadata(c.Addr, md, mac)
		return md, nil
	case errors.Is(err, registry.ErrUnavailable):
		s.mu.Lock()
		last, ok := s.lastMetadata[c.Addr]
		s.mu.Unlock()
		if ok && (c.MAC == nil || c.MAC.String() == last.mac) {
			return last.md, nil
		}
	case errors.Is(err, inventory.ErrForbidden):
		s.rememberMetadata(c.Addr, nil, "")
	}
	return nil, err
}

// cachedMetadata is the last document served to a guest, with the MAC
// registered for it then.
type cachedMetadata struct {
	md  *vrrp.Metadata
	mac string
}
