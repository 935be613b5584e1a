package main

import (
	"regexp"
	"testing"
)

// TestUsageListsEveryAdminCommand: the usage text names every admin
// command vipctl runs (instancegroup-list was missing).
func TestUsageListsEveryAdminCommand(t *testing.T) {
	for name := range adminCmds {
		if !regexp.MustCompile(`(^|[\s,])` + regexp.QuoteMeta(name) + `($|[\s,])`).MatchString(usage) {
			t.Errorf("usage does not list %s", name)
		}
	}
}
