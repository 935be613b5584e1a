package inventory

import (
	"testing"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

// TestNextPrioritySpacedByJoinOrder: members joining one by one get 250,
// 230, ... 10 (20 apart), the 14th the highest free priority.
func TestNextPrioritySpacedByJoinOrder(t *testing.T) {
	want := []int{250, 230, 210, 190, 170, 150, 130, 110, 90, 70, 50, 30, 10, 254}
	var ms []registry.Member
	for n := 1; n <= len(want); n++ {
		p := nextPriority(ms)
		if p != want[n-1] {
			t.Fatalf("member %d: nextPriority = %d, want %d (before: %v)", n, p, want[n-1], ms)
		}
		ms = append(ms, registry.Member{GuestID: "g", Priority: p})
	}
}

func TestNextPriorityFallback(t *testing.T) {
	cases := []struct {
		name string
		have []int
		want int
	}{
		{"first", nil, 250},
		{"below the lowest", []int{250, 230}, 210},
		{"after a leave, below the lowest still", []int{230}, 210},
		{"a group made before spacing keeps going down", []int{100, 99}, 79},
		{"raised by set-priority", []int{254, 250}, 230},
		{"equal priorities", []int{200, 200}, 180},
		{"lowest is 29: 9 is below 10", []int{29, 250}, 254},
		{"lowest is 30: 10 is still spaced", []int{30, 250}, 10},
		{"lowest is 1", []int{1, 100}, 254},
		{"lowest is 1 and 254 used", []int{1, 254}, 253},
		{"lowest is 10 and the top used", []int{254, 253, 10}, 252},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ms []registry.Member
			for _, p := range tc.have {
				ms = append(ms, registry.Member{Priority: p})
			}
			if got := nextPriority(ms); got != tc.want {
				t.Fatalf("nextPriority(%v) = %d, want %d", tc.have, got, tc.want)
			}
		})
	}
}
