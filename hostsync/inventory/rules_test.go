package inventory

import (
	"testing"

	"github.com/vipkeeper/vipkeeper/hostsync/registry"
)

func TestNextPriorityWrapsToHighestFree(t *testing.T) {
	cases := []struct {
		name string
		have []int
		want int
	}{
		{"first", nil, 100},
		{"below the lowest", []int{100, 99}, 98},
		{"lowest is 1", []int{1, 100}, 254},
		{"lowest is 1 and 254 used", []int{1, 254}, 253},
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
