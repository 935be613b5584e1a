package vrrp

import (
	"errors"
	"hash/fnv"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// base is a valid document every table case starts from.
func base() *Metadata {
	return &Metadata{
		Version: 1,
		Group:   Group{ID: "ig-web", Name: "web"},
		VIP:     netip.MustParsePrefix("192.0.2.10/24"),
		Members: []Member{
			{Name: "web-a", Address: netip.MustParseAddr("192.0.2.11"), MAC: "52:54:00:00:00:0b", Priority: 100},
			{Name: "web-b", Address: netip.MustParseAddr("192.0.2.12"), Priority: 99},
		},
		Checks: []Check{{Name: "chk_web", Kind: CheckHTTP, URL: "http://127.0.0.1/healthz"}},
	}
}

func TestValidateAcceptsBase(t *testing.T) {
	if err := base().Validate(); err != nil {
		t.Fatalf("base document rejected: %v", err)
	}
}

func TestValidateRules(t *testing.T) {
	f := false
	tests := []struct {
		name   string
		mutate func(m *Metadata)
		path   string // "" means valid
	}{
		{"version", func(m *Metadata) { m.Version = 2 }, "version"},
		{"group id missing", func(m *Metadata) { m.Group.ID = "" }, "group.id"},
		{"group id with space", func(m *Metadata) { m.Group.ID = "a b" }, "group.id"},
		{"group name newline", func(m *Metadata) { m.Group.Name = "web\n}" }, "group.name"},
		{"group name brace", func(m *Metadata) { m.Group.Name = "web}" }, "group.name"},
		{"group name too long", func(m *Metadata) { m.Group.Name = strings.Repeat("a", 33) }, "group.name"},
		{"network id bad", func(m *Metadata) { m.NetworkID = "net/1" }, "network_id"},
		{"vip missing", func(m *Metadata) { m.VIP = netip.Prefix{} }, "vip"},
		{"vip network address", func(m *Metadata) { m.VIP = netip.MustParsePrefix("192.0.2.0/24") }, "vip"},
		{"vip broadcast", func(m *Metadata) { m.VIP = netip.MustParsePrefix("192.0.2.255/24") }, "vip"},
		{"vip loopback", func(m *Metadata) { m.VIP = netip.MustParsePrefix("127.0.0.1/8") }, "vip"},
		{"vip ipv6 needs v3", func(m *Metadata) {
			m.VIP = netip.MustParsePrefix("2001:db8::10/64")
			m.Members[0].Address = netip.MustParseAddr("2001:db8::11")
			m.Members[1].Address = netip.MustParseAddr("2001:db8::12")
		}, "vip"},
		{"vip ipv6 with v3", func(m *Metadata) {
			m.VRRPVersion = 3
			m.VIP = netip.MustParsePrefix("2001:db8::10/64")
			m.Members[0].Address = netip.MustParseAddr("2001:db8::11")
			m.Members[1].Address = netip.MustParseAddr("2001:db8::12")
		}, ""},
		{"vip6 dual-stack", func(m *Metadata) { m.VIP6 = netip.MustParsePrefix("2001:db8::10/64") }, ""},
		{"vip6 with VRRPv3", func(m *Metadata) { m.VRRPVersion = 3; m.VIP6 = netip.MustParsePrefix("2001:db8::10/64") }, ""},
		{"vip6 is IPv4", func(m *Metadata) { m.VIP6 = netip.MustParsePrefix("192.0.2.20/24") }, "vip6"},
		{"vip6 IPv4-mapped", func(m *Metadata) { m.VIP6 = netip.MustParsePrefix("::ffff:192.0.2.20/120") }, "vip6"},
		{"vip6 link-local", func(m *Metadata) { m.VIP6 = netip.MustParsePrefix("fe80::10/64") }, "vip6"},
		{"vip6 multicast", func(m *Metadata) { m.VIP6 = netip.MustParsePrefix("ff02::10/64") }, "vip6"},
		{"vip6 prefix /32", func(m *Metadata) { m.VIP6 = netip.MustParsePrefix("2001:db8::10/32") }, "vip6"},
		{"vip6 subnet-router anycast", func(m *Metadata) { m.VIP6 = netip.MustParsePrefix("2001:db8::/64") }, "vip6"},
		{"vip6 beside an IPv6 vip", func(m *Metadata) {
			m.VRRPVersion = 3
			m.VIP = netip.MustParsePrefix("2001:db8::10/64")
			m.Members[0].Address = netip.MustParseAddr("2001:db8::11")
			m.Members[1].Address = netip.MustParseAddr("2001:db8::12")
			m.VIP6 = netip.MustParsePrefix("2001:db8:1::10/64")
		}, "vip6"},
		{"vrid 0 derives", func(m *Metadata) { m.VirtualRouterID = 0 }, ""},
		{"vrid 255", func(m *Metadata) { m.VirtualRouterID = 255 }, ""},
		{"vrid 256", func(m *Metadata) { m.VirtualRouterID = 256 }, "virtual_router_id"},
		{"vrid negative", func(m *Metadata) { m.VirtualRouterID = -1 }, "virtual_router_id"},
		{"vrrp version 4", func(m *Metadata) { m.VRRPVersion = 4 }, "vrrp_version"},
		{"v2 advert fraction", func(m *Metadata) { m.AdvertInt = 1500 }, "advert_int"},
		{"v2 advert 256", func(m *Metadata) { m.AdvertInt = 256000 }, "advert_int"},
		{"v2 advert 255", func(m *Metadata) { m.AdvertInt = 255000 }, ""},
		{"v3 advert 0.1", func(m *Metadata) { m.VRRPVersion = 3; m.AdvertInt = 100 }, ""},
		{"v3 advert 0.01", func(m *Metadata) { m.VRRPVersion = 3; m.AdvertInt = 10 }, ""},
		{"v3 advert 0.015", func(m *Metadata) { m.VRRPVersion = 3; m.AdvertInt = 15 }, "advert_int"},
		{"v3 advert 40.95", func(m *Metadata) { m.VRRPVersion = 3; m.AdvertInt = 40950 }, ""},
		{"v3 advert 41", func(m *Metadata) { m.VRRPVersion = 3; m.AdvertInt = 41000 }, "advert_int"},
		{"preempt delay without preempt", func(m *Metadata) { m.Preempt = &f; m.PreemptDelay = 5000 }, "preempt_delay"},
		{"preempt delay too long", func(m *Metadata) { m.PreemptDelay = 1001 * 1000 }, "preempt_delay"},
		{"nopreempt", func(m *Metadata) { m.Preempt = &f }, ""},
		{"auth ok", func(m *Metadata) { m.Auth = &Auth{Type: "PASS", Pass: "1111"} }, ""},
		{"auth with v3", func(m *Metadata) { m.VRRPVersion = 3; m.Auth = &Auth{Type: "PASS", Pass: "1111"} }, "auth"},
		{"auth type AH", func(m *Metadata) { m.Auth = &Auth{Type: "AH", Pass: "1111"} }, "auth.type"},
		{"auth pass 9 chars", func(m *Metadata) { m.Auth = &Auth{Type: "PASS", Pass: "123456789"} }, "auth.pass"},
		{"auth pass empty", func(m *Metadata) { m.Auth = &Auth{Type: "PASS"} }, "auth.pass"},
		{"auth pass brace", func(m *Metadata) { m.Auth = &Auth{Type: "PASS", Pass: "a}b"} }, "auth.pass"},
		{"auth pass space", func(m *Metadata) { m.Auth = &Auth{Type: "PASS", Pass: "a b"} }, "auth.pass"},
		{"auth pass quote", func(m *Metadata) { m.Auth = &Auth{Type: "PASS", Pass: `a"b`} }, "auth.pass"},
		{"auth pass keepalived variable", func(m *Metadata) { m.Auth = &Auth{Type: "PASS", Pass: "$_RANDOM"} }, "auth.pass"},
		{"garp delay", func(m *Metadata) { m.Garp = &Garp{MasterDelay: 256} }, "garp.master_delay"},
		{"garp repeat", func(m *Metadata) { m.Garp = &Garp{MasterRepeat: -1} }, "garp.master_repeat"},
		{"garp refresh", func(m *Metadata) { m.Garp = &Garp{MasterRefresh: 90000} }, "garp.master_refresh"},
		{"no members", func(m *Metadata) { m.Members = nil }, "members"},
		{"member name newline", func(m *Metadata) { m.Members[1].Name = "b\nc" }, "members[1].name"},
		{"member name dup", func(m *Metadata) { m.Members[1].Name = "web-a" }, "members[1].name"},
		{"member guest id bad", func(m *Metadata) { m.Members[0].GuestID = "g 1" }, "members[0].guest_id"},
		{"member address missing", func(m *Metadata) { m.Members[1].Address = netip.Addr{} }, "members[1].address"},
		{"member outside subnet", func(m *Metadata) { m.Members[1].Address = netip.MustParseAddr("198.51.100.12") }, "members[1].address"},
		{"member is vip", func(m *Metadata) { m.Members[1].Address = netip.MustParseAddr("192.0.2.10") }, "members[1].address"},
		{"member address dup", func(m *Metadata) { m.Members[1].Address = netip.MustParseAddr("192.0.2.11") }, "members[1].address"},
		{"member mac bad", func(m *Metadata) { m.Members[0].MAC = "52:54:00:00:00" }, "members[0].mac"},
		{"member mac upper", func(m *Metadata) { m.Members[0].MAC = "52:54:00:00:00:AB" }, "members[0].mac"},
		{"priority 0", func(m *Metadata) { m.Members[1].Priority = 0 }, "members[1].priority"},
		{"priority 255", func(m *Metadata) { m.Members[1].Priority = 255 }, "members[1].priority"},
		{"priority 300", func(m *Metadata) { m.Members[1].Priority = 300 }, "members[1].priority"},
		// VRRP breaks a tie by the higher address; symmetric nopreempt
		// groups rely on equal priorities.
		{"priority equal", func(m *Metadata) { m.Members[1].Priority = 100 }, ""},
		{"priority equal nopreempt", func(m *Metadata) { m.Preempt = &f; m.Members[1].Priority = 100 }, ""},
		{"priority 254", func(m *Metadata) { m.Members[1].Priority = 254 }, ""},
		{"priority 1", func(m *Metadata) { m.Members[1].Priority = 1 }, ""},
		{"check name newline", func(m *Metadata) { m.Checks[0].Name = "chk\nx" }, "checks[0].name"},
		{"check name brace", func(m *Metadata) { m.Checks[0].Name = "chk}" }, "checks[0].name"},
		{"check name dup", func(m *Metadata) {
			m.Checks = append(m.Checks, Check{Name: "chk_web", Kind: CheckTCP, Address: "127.0.0.1:80"})
		}, "checks[1].name"},
		{"check kind missing", func(m *Metadata) { m.Checks[0].Kind = ""; m.Checks[0].URL = "" }, "checks[0].kind"},
		{"check kind unknown", func(m *Metadata) { m.Checks[0].Kind = "icmp"; m.Checks[0].URL = "" }, "checks[0].kind"},
		{"on_failure unknown", func(m *Metadata) { m.Checks[0].OnFailure = "restart" }, "checks[0].on_failure"},
		{"on_failure upper case", func(m *Metadata) { m.Checks[0].OnFailure = "RESIGN" }, "checks[0].on_failure"},
		{"on_failure resign", func(m *Metadata) { m.Checks[0].OnFailure = OnFailureResign }, ""},
		{"resign with weight", func(m *Metadata) { m.Checks[0].OnFailure = OnFailureResign; m.Checks[0].Weight = 2 }, "checks[0].weight"},
		{"lower_priority without weight", func(m *Metadata) { m.Checks[0].OnFailure = OnFailureLowerPriority }, "checks[0].weight"},
		{"lower_priority with weight", func(m *Metadata) { m.Checks[0].OnFailure = OnFailureLowerPriority; m.Checks[0].Weight = -20 }, ""},
		{"weight alone means lower_priority", func(m *Metadata) { m.Checks[0].Weight = 2 }, ""},
		{"check weight 254", func(m *Metadata) { m.Checks[0].Weight = 254 }, "checks[0].weight"},
		{"check weight -253", func(m *Metadata) { m.Checks[0].Weight = -253 }, ""},
		{"check weight -254", func(m *Metadata) { m.Checks[0].Weight = -254 }, "checks[0].weight"},
		// resign (the default without a weight): 0.05–3600 s in 0.01 s steps.
		{"resign interval 0.05", func(m *Metadata) { m.Checks[0].Interval = 50 }, ""},
		{"resign interval 0.5", func(m *Metadata) { m.Checks[0].Interval = 500; m.Checks[0].Timeout = 250 }, ""},
		{"resign interval 0.04", func(m *Metadata) { m.Checks[0].Interval = 40 }, "checks[0].interval"},
		{"resign interval 0.055", func(m *Metadata) { m.Checks[0].Interval = 55 }, "checks[0].interval"},
		{"resign interval 3600", func(m *Metadata) { m.Checks[0].Interval = 3600 * 1000 }, ""},
		{"resign interval 3600.01", func(m *Metadata) { m.Checks[0].Interval = 3600*1000 + 10 }, "checks[0].interval"},
		{"resign timeout 0.01", func(m *Metadata) { m.Checks[0].Timeout = 10 }, "checks[0].timeout"},
		{"resign timeout 1.255", func(m *Metadata) { m.Checks[0].Timeout = 1255 }, "checks[0].timeout"},
		// lower_priority (a keepalived vrrp_script): whole seconds 1–3600.
		{"lower_priority interval fraction", func(m *Metadata) { m.Checks[0].Weight = 2; m.Checks[0].Interval = 500 }, "checks[0].interval"},
		{"lower_priority timeout fraction", func(m *Metadata) { m.Checks[0].Weight = 2; m.Checks[0].Timeout = 1500 }, "checks[0].timeout"},
		{"lower_priority interval 3600", func(m *Metadata) { m.Checks[0].Weight = 2; m.Checks[0].Interval = 3600 * 1000 }, ""},
		{"lower_priority interval 3601", func(m *Metadata) { m.Checks[0].Weight = 2; m.Checks[0].Interval = 3601 * 1000 }, "checks[0].interval"},
		{"lower_priority timeout 1", func(m *Metadata) { m.Checks[0].Weight = 2; m.Checks[0].Timeout = 1000 }, ""},
		{"check fall", func(m *Metadata) { m.Checks[0].Fall = 256 }, "checks[0].fall"},
		{"check rise", func(m *Metadata) { m.Checks[0].Rise = -1 }, "checks[0].rise"},
		{"check restart unit bad", func(m *Metadata) { m.Checks[0].RestartUnit = "nginx; rm -rf /" }, "checks[0].restart_unit"},
		{"check restart unit ok", func(m *Metadata) { m.Checks[0].RestartUnit = "nginx.service" }, ""},
		{"http url missing", func(m *Metadata) { m.Checks[0].URL = "" }, "checks[0].url"},
		{"http url ftp", func(m *Metadata) { m.Checks[0].URL = "ftp://127.0.0.1/" }, "checks[0].url"},
		{"http url quote", func(m *Metadata) { m.Checks[0].URL = "http://127.0.0.1/'x" }, "checks[0].url"},
		{"http url userinfo", func(m *Metadata) { m.Checks[0].URL = "http://u:p@127.0.0.1/" }, "checks[0].url"},
		{"http expect status", func(m *Metadata) { m.Checks[0].ExpectStatus = 700 }, "checks[0].expect_status"},
		{"field of other kind", func(m *Metadata) { m.Checks[0].Process = "nginx" }, "checks[0].process"},
		{"process ok", func(m *Metadata) {
			m.Checks[0] = Check{Name: "chk_p", Kind: CheckProcess, Process: "nginx"}
		}, ""},
		{"process too long", func(m *Metadata) {
			m.Checks[0] = Check{Name: "chk_p", Kind: CheckProcess, Process: "a-very-long-process-name"}
		}, "checks[0].process"},
		{"process shell", func(m *Metadata) {
			m.Checks[0] = Check{Name: "chk_p", Kind: CheckProcess, Process: "$(reboot)"}
		}, "checks[0].process"},
		{"tcp ok", func(m *Metadata) { m.Checks[0] = Check{Name: "chk_t", Kind: CheckTCP, Address: "127.0.0.1:80"} }, ""},
		{"tcp no port", func(m *Metadata) { m.Checks[0] = Check{Name: "chk_t", Kind: CheckTCP, Address: "127.0.0.1"} }, "checks[0].address"},
		{"tcp port 0", func(m *Metadata) { m.Checks[0] = Check{Name: "chk_t", Kind: CheckTCP, Address: "127.0.0.1:0"} }, "checks[0].address"},
		{"tcp bad host", func(m *Metadata) { m.Checks[0] = Check{Name: "chk_t", Kind: CheckTCP, Address: "a;b:80"} }, "checks[0].address"},
		{"exec ok", func(m *Metadata) {
			m.Checks[0] = Check{Name: "chk_e", Kind: CheckExec, Command: []string{"/usr/local/bin/probe", "--it's fine"}}
		}, ""},
		{"exec relative", func(m *Metadata) {
			m.Checks[0] = Check{Name: "chk_e", Kind: CheckExec, Command: []string{"probe"}}
		}, "checks[0].command[0]"},
		{"exec control char", func(m *Metadata) {
			m.Checks[0] = Check{Name: "chk_e", Kind: CheckExec, Command: []string{"/bin/probe", "a\nb"}}
		}, "checks[0].command[1]"},
		{"exec missing", func(m *Metadata) { m.Checks[0] = Check{Name: "chk_e", Kind: CheckExec} }, "checks[0].command"},
		{"eip unspecified", func(m *Metadata) { m.EIP = netip.MustParseAddr("0.0.0.0") }, "eip"},
		{"eip ok", func(m *Metadata) { m.EIP = netip.MustParseAddr("203.0.113.5") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			tt.mutate(m)
			err := m.Validate()
			if tt.path == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a *FieldError for %s", err, tt.path)
			}
			if fe.Path != tt.path {
				t.Fatalf("error path = %q (%v), want %q", fe.Path, err, tt.path)
			}
			if fe.Msg == "" {
				t.Fatalf("error for %s has no message", tt.path)
			}
		})
	}
}

func TestCheckEffectiveValues(t *testing.T) {
	tests := []struct {
		name     string
		c        Check
		policy   string
		interval Seconds
		timeout  Seconds
	}{
		{"bare check resigns", Check{}, OnFailureResign, 1000, 1000},
		{"weight without on_failure keeps its old meaning", Check{Weight: 2}, OnFailureLowerPriority, 2000, 2000},
		{"negative weight", Check{Weight: -10}, OnFailureLowerPriority, 2000, 2000},
		{"explicit resign", Check{OnFailure: OnFailureResign, Interval: 100}, OnFailureResign, 100, 100},
		{"explicit lower_priority", Check{OnFailure: OnFailureLowerPriority, Weight: 5, Timeout: 1000}, OnFailureLowerPriority, 2000, 1000},
		{"explicit wins over weight", Check{OnFailure: OnFailureResign, Weight: 2}, OnFailureResign, 1000, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.EffectiveOnFailure(); got != tt.policy {
				t.Errorf("EffectiveOnFailure() = %q, want %q", got, tt.policy)
			}
			if got := tt.c.EffectiveInterval(); got != tt.interval {
				t.Errorf("EffectiveInterval() = %s, want %s", got, tt.interval)
			}
			if got := tt.c.EffectiveTimeout(); got != tt.timeout {
				t.Errorf("EffectiveTimeout() = %s, want %s", got, tt.timeout)
			}
		})
	}
}

// TestParseBeforeOnFailure: a document written before on_failure existed
// (the seed's check with "weight": 2) parses as it did and means
// lower_priority, and it marshals without an on_failure field.
func TestParseBeforeOnFailure(t *testing.T) {
	doc := `{"version":1,"group":{"id":"g","name":"g"},"vip":"192.0.2.10/24",
		"members":[{"name":"a","address":"192.0.2.11","priority":100},{"name":"b","address":"192.0.2.12","priority":100}],
		"checks":[{"name":"chk","kind":"process","process":"nginx","interval":2,"weight":2}]}`
	m, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if got := m.Checks[0].EffectiveOnFailure(); got != OnFailureLowerPriority {
		t.Errorf("EffectiveOnFailure() = %q, want %q", got, OnFailureLowerPriority)
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "on_failure") {
		t.Errorf("Marshal added on_failure:\n%s", b)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr error  // sentinel, or nil
		path    string // field error path, or ""
	}{
		{"not json", `{"version":1,`, ErrSyntax, ""},
		{"unknown field", `{"version":1,"group":{"id":"g","name":"g"},"bogus":1}`, ErrSyntax, ""},
		{"newer version", `{"version":2,"whatever":true}`, ErrUnsupportedVersion, ""},
		{"no version", `{"group":{"id":"g","name":"g"}}`, nil, "version"},
		{"version string", `{"version":"1"}`, nil, "version"},
		{"trailing data", `{"version":1} {}`, ErrSyntax, ""},
		{"bad vip", `{"version":1,"group":{"id":"g","name":"g"},"vip":"192.0.2.10"}`, ErrSyntax, ""},
		{"advert float", `{"version":1,"advert_int":1e3}`, ErrSyntax, ""},
		{"invalid field", `{"version":1,"group":{"id":"g","name":"g"},"vip":"192.0.2.10/24","members":[{"name":"a","address":"192.0.2.11","priority":300}]}`, nil, "members[0].priority"},
		{"on_failure not a string", `{"version":1,"group":{"id":"g","name":"g"},"vip":"192.0.2.10/24","members":[{"name":"a","address":"192.0.2.11","priority":1}],"checks":[{"name":"c","kind":"tcp","address":"127.0.0.1:80","on_failure":1}]}`, ErrSyntax, ""},
		{"on_failure unknown", `{"version":1,"group":{"id":"g","name":"g"},"vip":"192.0.2.10/24","members":[{"name":"a","address":"192.0.2.11","priority":1}],"checks":[{"name":"c","kind":"tcp","address":"127.0.0.1:80","on_failure":"panic"}]}`, nil, "checks[0].on_failure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatal("Parse accepted the document")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Parse() = %v, want %v", err, tt.wantErr)
			}
			if tt.path != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Path != tt.path {
					t.Fatalf("Parse() = %v, want field error at %s", err, tt.path)
				}
			}
		})
	}
}

func TestParseSeedExample(t *testing.T) {
	f, err := os.Open("../examples/nginx.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Decode(f)
	if err != nil {
		t.Fatalf("seed example rejected: %v", err)
	}
	if m.EffectiveVRID() != 66 || m.EffectiveAdvertInt() != 1000 || m.Auth.Pass != "1111" {
		t.Errorf("seed semantics lost: vrid %d advert %s auth %+v", m.EffectiveVRID(), m.EffectiveAdvertInt(), m.Auth)
	}
	master, ok := m.Member("nginx-master")
	if !ok || master.Priority != 100 {
		t.Errorf("nginx-master = %+v, %v; want priority 100", master, ok)
	}
	// Round trip: marshal and parse again gives the same document.
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(b)
	if err != nil {
		t.Fatalf("re-parse of marshalled seed: %v", err)
	}
	b2, _ := again.Marshal()
	if string(b) != string(b2) {
		t.Errorf("round trip changed the document:\n%s\n---\n%s", b, b2)
	}
}

func TestDeriveVRIDStableAndInRange(t *testing.T) {
	// Stable across runs and machines: FNV-1a (checked against the standard
	// library's implementation) modulo 255, plus one.
	for _, id := range []string{"ig-nginx", "ig-web", ""} {
		h := fnv.New32a()
		h.Write([]byte(id))
		if got, want := DeriveVRID(id), int(h.Sum32()%255)+1; got != want {
			t.Fatalf("DeriveVRID(%q) = %d, want %d", id, got, want)
		}
	}
	seen := map[int]bool{}
	for _, id := range []string{"", "a", "ig-nginx", "ig-web", strings.Repeat("z", 64)} {
		v := DeriveVRID(id)
		if v < 1 || v > 255 {
			t.Fatalf("DeriveVRID(%q) = %d, outside 1–255", id, v)
		}
		seen[v] = true
	}
	if len(seen) < 3 {
		t.Errorf("DeriveVRID maps different ids to too few values: %v", seen)
	}
	m := base()
	m.VirtualRouterID = 0
	if m.EffectiveVRID() != DeriveVRID("ig-web") {
		t.Error("EffectiveVRID does not derive from the group id")
	}
}

func TestSeconds(t *testing.T) {
	good := map[string]Seconds{"0": 0, "1": 1000, "0.1": 100, "2.5": 2500, "0.01": 10, "40.950": 40950, "86400": 86400000}
	for in, want := range good {
		got, err := ParseSeconds(in)
		if err != nil || got != want {
			t.Errorf("ParseSeconds(%q) = %v, %v; want %v", in, got, err, want)
		}
		if again, _ := ParseSeconds(got.String()); again != got {
			t.Errorf("String() of %v does not parse back", got)
		}
	}
	for _, in := range []string{"", "-1", "1e3", "0.0001", ".5", "5.", "abc", "86401", "1,5", `"1"`} {
		if _, err := ParseSeconds(in); err == nil {
			t.Errorf("ParseSeconds(%q) accepted", in)
		}
	}
}

func TestParseNotify(t *testing.T) {
	n, err := ParseNotify([]string{"INSTANCE", "VI_nginx", "MASTER", "100"})
	if err != nil || n.State != RoleMaster || n.Priority != 100 || n.Name != "VI_nginx" {
		t.Fatalf("ParseNotify = %+v, %v", n, err)
	}
	bad := [][]string{
		{"INSTANCE", "VI_nginx", "MASTER"},
		{"VRRP", "VI_nginx", "MASTER", "100"},
		{"INSTANCE", "VI nginx", "MASTER", "100"},
		{"INSTANCE", "VI_nginx\n", "MASTER", "100"},
		{"INSTANCE", "VI_nginx", "LEADER", "100"},
		{"INSTANCE", "VI_nginx", "MASTER", "256"},
		{"INSTANCE", "VI_nginx", "MASTER", "x"},
	}
	for _, args := range bad {
		if _, err := ParseNotify(args); err == nil {
			t.Errorf("ParseNotify(%q) accepted", args)
		}
	}
}
