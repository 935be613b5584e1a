package vrrp

import (
	"fmt"
	"slices"
)

// WeightWarnings says, for a group's checks and its members' priorities,
// when the lower_priority checks cannot move the VIP: keepalived changes
// the priority of a member whose weighted checks fail by at most the sum
// of their weights, and the VIP moves only when that takes the highest
// member below the next one. With the spaced default priorities (250,
// 230, …) the seed's weight 2 is such a case. Resign checks always move
// the VIP (the member enters FAULT). Nil when there is nothing to say.
func WeightWarnings(checks []Check, priorities []int) []string {
	swing := 0
	var names []string
	for _, c := range checks {
		if c.EffectiveOnFailure() != OnFailureLowerPriority {
			continue
		}
		swing += abs(c.Weight)
		names = append(names, c.Name)
	}
	if len(names) == 0 || len(priorities) < 2 {
		return nil
	}
	p := slices.Clone(priorities)
	slices.Sort(p)
	slices.Reverse(p)
	gap := p[0] - p[1]
	if swing > gap {
		return nil
	}
	return []string{fmt.Sprintf("lower_priority checks %v change a priority by at most %d, but the highest member is %d above the next (%d over %d): their failure cannot move the VIP; use a weight above %d, closer priorities (instancegroup-set-priority) or on_failure resign",
		names, swing, gap, p[0], p[1], gap)}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
