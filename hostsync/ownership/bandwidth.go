package ownership

import (
	"errors"
	"fmt"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// eipBandwidth is the bandwidth (Mbit/s, 0 unlimited) of the EIP record
// id, which the group's binding names: the data plane limits the EIP to
// it. A binding whose record is gone (DissociateEIP tolerates that too)
// is unlimited.
func eipBandwidth(tx registry.Tx, id string) (int, error) {
	e, err := registry.Get[registry.EIP](tx, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("hostsync: EIP %s: %w", id, err)
	}
	return e.Bandwidth, nil
}
