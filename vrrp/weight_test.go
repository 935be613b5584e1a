package vrrp

import (
	"strings"
	"testing"
)

func TestWeightWarnings(t *testing.T) {
	weighted := func(name string, w int) Check {
		return Check{Name: name, Kind: CheckProcess, Process: "nginx", Weight: w}
	}
	for _, tc := range []struct {
		name   string
		checks []Check
		prios  []int
		want   string // "" means no warning
	}{
		{"seed: weight 2 over 100/99", []Check{weighted("chk", 2)}, []int{100, 99}, ""},
		{"weight 2 over the spaced defaults", []Check{weighted("chk", 2)}, []int{250, 230}, "highest member is 20 above the next (250 over 230)"},
		{"a weight equal to the gap only ties", []Check{weighted("chk", -20)}, []int{230, 250}, "change a priority by at most 20"},
		{"weights add up", []Check{weighted("a", 15), weighted("b", -10)}, []int{250, 230}, ""},
		{"resign checks always move the VIP", []Check{{Name: "r", Kind: CheckProcess, Process: "nginx"}}, []int{250, 230}, ""},
		{"a sole member", []Check{weighted("chk", 2)}, []int{250}, ""},
		{"equal priorities", []Check{weighted("chk", 2)}, []int{200, 200, 100}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := WeightWarnings(tc.checks, tc.prios)
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("warnings = %q, want none", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Fatalf("warnings = %q, want one containing %q", got, tc.want)
			}
		})
	}
}
