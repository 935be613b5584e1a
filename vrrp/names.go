package vrrp

import "regexp"

// InterfaceNameRule says which interface names ValidInterfaceName accepts,
// for error messages.
const InterfaceNameRule = "1–15 of A-Z a-z 0-9 _ . : -, not . or .."

// MemberNameRule says which member names ValidMemberName accepts.
const MemberNameRule = "1–63 of A-Z a-z 0-9 . _ -, starting with a letter or digit"

var reInterface = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,15}$`)

// ValidInterfaceName reports whether s is an interface name that can be
// written into keepalived.conf ("interface NAME"): the rule render applies
// and the agent's configuration checks, so a name the agent accepts is
// never one render refuses.
func ValidInterfaceName(s string) bool {
	return s != "." && s != ".." && reInterface.MatchString(s)
}

// ValidMemberName reports whether s is a valid member name (the rule
// Validate applies to members[].name).
func ValidMemberName(s string) bool { return reMember.MatchString(s) }
