package render

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vipkeeper/vipkeeper/vrrp"
)

// confNode is one statement of a keepalived configuration: a keyword with
// arguments, and children when it opens a block.
type confNode struct {
	Line     int
	Key      string
	Args     []string
	Block    bool
	Children []*confNode
}

var reKeepalivedSubst = regexp.MustCompile(`\$[_{]`)

// parseConf is a small, strict reader of the keepalived syntax the renderer
// emits: one statement per line, "#"/"!" comments, "..." strings without
// escapes, "{" only at the end of a line, "}" alone on a line. It refuses
// anything keepalived would treat specially (conditional "@", parameter
// definitions and substitution, sequence blocks, includes).
func parseConf(data []byte) ([]*confNode, error) {
	root := &confNode{Block: true}
	stack := []*confNode{root}
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		line := strings.TrimLeft(raw, " ")
		if strings.ContainsAny(raw, "\t\r\x00") {
			return nil, fmt.Errorf("line %d: tab, CR or NUL", n)
		}
		if line != "" && strings.ContainsRune("@$~", rune(line[0])) {
			return nil, fmt.Errorf("line %d: starts with %q, special to keepalived", n, line[0])
		}
		if reKeepalivedSubst.MatchString(line) {
			return nil, fmt.Errorf("line %d: keepalived parameter substitution in %q", n, line)
		}
		toks, err := tokenizeConfLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if len(toks) == 0 {
			continue
		}
		top := stack[len(stack)-1]
		switch {
		case len(toks) == 1 && toks[0] == "}":
			if len(stack) == 1 {
				return nil, fmt.Errorf("line %d: unbalanced }", n)
			}
			stack = stack[:len(stack)-1]
			continue
		case toks[0] == "include" || strings.HasPrefix(toks[0], "include"):
			return nil, fmt.Errorf("line %d: include", n)
		}
		node := &confNode{Line: n, Key: toks[0]}
		args := toks[1:]
		if len(args) > 0 && args[len(args)-1] == "{" {
			node.Block = true
			args = args[:len(args)-1]
		}
		for _, a := range append([]string{node.Key}, args...) {
			if strings.ContainsAny(a, "{}") {
				return nil, fmt.Errorf("line %d: brace inside %q", n, a)
			}
		}
		node.Args = args
		top.Children = append(top.Children, node)
		if node.Block {
			stack = append(stack, node)
		}
	}
	if len(stack) != 1 {
		return nil, fmt.Errorf("%d unclosed blocks", len(stack)-1)
	}
	return root.Children, nil
}

func tokenizeConfLine(line string) ([]string, error) {
	var toks []string
	for i := 0; i < len(line); {
		switch c := line[i]; {
		case c == ' ':
			i++
		case c == '#' || c == '!':
			return toks, nil
		case c == '"':
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				return nil, fmt.Errorf("unterminated string")
			}
			tok := line[i : i+j+2]
			if strings.ContainsAny(tok, " \\") {
				return nil, fmt.Errorf("space or backslash in string %s", tok)
			}
			toks = append(toks, tok)
			i += j + 2
		default:
			j := strings.IndexAny(line[i:], " \"")
			if j < 0 {
				j = len(line) - i
			}
			toks = append(toks, line[i:i+j])
			i += j
		}
	}
	return toks, nil
}

// splitShellWords splits a line of words made only of single-quoted
// segments and \' escapes, separated by single spaces: the POSIX shell
// subset the renderer emits. Anything else (an unquoted $, `, ;, ", a
// newline) is an error, so a passing line has exactly the argv it shows.
func splitShellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); {
		switch {
		case s[i] == ' ':
			if !inWord {
				return nil, fmt.Errorf("empty word at %d", i)
			}
			words = append(words, cur.String())
			cur.Reset()
			inWord = false
			i++
		case s[i] == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated quote at %d", i)
			}
			cur.WriteString(s[i+1 : i+1+j])
			inWord = true
			i += j + 2
		case strings.HasPrefix(s[i:], `\'`):
			cur.WriteByte('\'')
			inWord = true
			i += 2
		default:
			return nil, fmt.Errorf("unquoted %q at %d", s[i], i)
		}
	}
	if !inWord {
		return nil, fmt.Errorf("line ends without a word")
	}
	return append(words, cur.String()), nil
}

// parseScript checks a rendered script's shape (shebang, comment lines,
// one final exec line) and returns the exec line's argv and whether it
// passes "$@" on.
func parseScript(data []byte) (argv []string, passArgs bool, err error) {
	text := string(data)
	if !strings.HasSuffix(text, "\n") {
		return nil, false, fmt.Errorf("no final newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 2 || lines[0] != "#!/bin/sh" {
		return nil, false, fmt.Errorf("does not start with #!/bin/sh")
	}
	for _, l := range lines[1 : len(lines)-1] {
		if !strings.HasPrefix(l, "# ") {
			return nil, false, fmt.Errorf("line %q is neither a comment nor the exec line", l)
		}
	}
	last := lines[len(lines)-1]
	rest, ok := strings.CutPrefix(last, "exec ")
	if !ok {
		return nil, false, fmt.Errorf("last line %q is not exec", last)
	}
	rest, passArgs = strings.CutSuffix(rest, ` "$@"`)
	argv, err = splitShellWords(rest)
	return argv, passArgs, err
}

// wantChecks is the group's checks with local ones replacing same-named
// ones in place and the rest appended.
func wantChecks(group, local []vrrp.Check) []vrrp.Check {
	out := slices.Clone(group)
	for _, l := range local {
		i := slices.IndexFunc(out, func(c vrrp.Check) bool { return c.Name == l.Name })
		if i >= 0 && i < len(group) {
			out[i] = l
		} else {
			out = append(out, l)
		}
	}
	return out
}

// wantArgv is the command a check's script must run: for a resign check
// always vipctl, deferring to the agent on its control socket.
func wantArgv(o Options, c vrrp.Check) []string {
	resign := c.OnFailure == vrrp.OnFailureResign || c.OnFailure == "" && c.Weight == 0
	if c.Kind == vrrp.CheckExec && c.RestartUnit == "" && !resign {
		return c.Command
	}
	a := []string{o.Vipctl, "check", string(c.Kind)}
	switch c.Kind {
	case vrrp.CheckProcess:
		a = append(a, "--name", c.Process)
	case vrrp.CheckHTTP:
		a = append(a, "--url", c.URL, "--expect-status", strconv.Itoa(c.EffectiveExpectStatus()))
	case vrrp.CheckTCP:
		a = append(a, "--address", c.Address)
	}
	if c.RestartUnit != "" {
		a = append(a, "--restart-unit", c.RestartUnit)
	}
	a = append(a, "--timeout", c.EffectiveTimeout().String())
	if resign {
		a = append(a, "--agent-socket", o.NotifySocket)
	}
	if c.Kind == vrrp.CheckExec {
		a = append(append(a, "--"), c.Command...)
	}
	return a
}

func keys(nodes []*confNode) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Key
	}
	return out
}

// leaf returns the arguments of the only child with key k.
func leaf(t testing.TB, block *confNode, k string) []string {
	t.Helper()
	var found []*confNode
	for _, c := range block.Children {
		if c.Key == k {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s %v: %d %q statements, want 1", block.Key, block.Args, len(found), k)
	}
	return found[0].Args
}

func child(block *confNode, k string) *confNode {
	for _, c := range block.Children {
		if c.Key == k {
			return c
		}
	}
	return nil
}

// allowedInstanceKeys are the only statements a vrrp_instance may hold.
var allowedInstanceKeys = map[string]bool{
	"state": true, "interface": true, "virtual_router_id": true, "priority": true,
	"advert_int": true, "version": true, "nopreempt": true, "preempt_delay": true,
	"authentication": true, "unicast_src_ip": true, "unicast_peer": true,
	"garp_master_delay": true, "garp_master_repeat": true, "garp_master_refresh": true,
	"track_script": true, "track_file": true, "virtual_ipaddress": true, "notify": true,
	"virtual_ipaddress_excluded": true,
}

// assertRendered checks the structure of out against m and opts, reading
// it back with the parsers above rather than comparing text.
func assertRendered(t testing.TB, m *vrrp.Metadata, opts Options, out *Output) {
	t.Helper()
	opts = opts.withDefaults()
	self, ok := m.Member(opts.Self)
	if !ok {
		t.Fatalf("self %q not a member", opts.Self)
	}
	wantDir := opts.ScriptsDir
	if opts.VersionedScripts {
		wantDir = path.Join(opts.ScriptsDir, out.ScriptsVersion)
		if !strings.HasPrefix(out.ScriptsVersion, ScriptsVersionPrefix) {
			t.Fatalf("versioned scripts without a version: %q", out.ScriptsVersion)
		}
	}
	if out.ScriptsDir != wantDir {
		t.Fatalf("ScriptsDir = %q, want %q", out.ScriptsDir, wantDir)
	}
	checks := wantChecks(m.Checks, opts.ExtraChecks)

	nodes, err := parseConf(out.Config)
	if err != nil {
		t.Fatalf("keepalived.conf does not parse: %v\n%s", err, out.Config)
	}
	// The policy is derived here from the fields, not through
	// EffectiveOnFailure, so that a mistake there shows.
	isResign := func(c vrrp.Check) bool {
		return c.OnFailure == vrrp.OnFailureResign || c.OnFailure == "" && c.Weight == 0
	}
	wantTop := []string{"global_defs"}
	for _, c := range checks {
		if isResign(c) {
			wantTop = append(wantTop, "track_file")
		}
		wantTop = append(wantTop, "vrrp_script")
	}
	wantTop = append(wantTop, "vrrp_instance")
	if diff := cmp.Diff(wantTop, keys(nodes)); diff != "" {
		t.Fatalf("top-level blocks (-want +got):\n%s\n%s", diff, out.Config)
	}
	for _, n := range nodes {
		if !n.Block {
			t.Errorf("line %d: top-level %q is not a block", n.Line, n.Key)
		}
	}

	gd := nodes[0]
	if diff := cmp.Diff([]string{"router_id", "enable_script_security", "script_user"}, keys(gd.Children)); diff != "" {
		t.Errorf("global_defs (-want +got):\n%s", diff)
	}
	if got := leaf(t, gd, "router_id"); !slices.Equal(got, []string{self.Name}) {
		t.Errorf("router_id %q, want %q", got, self.Name)
	}
	if got := leaf(t, gd, "script_user"); !slices.Equal(got, []string{"root"}) {
		t.Errorf("script_user %q, want root", got)
	}

	next := 1
	var wantFiles []string
	for i, c := range checks {
		if isResign(c) {
			tf := nodes[next]
			next++
			wantFiles = append(wantFiles, c.Name)
			if !slices.Equal(tf.Args, []string{c.Name}) {
				t.Errorf("track_file of check %d is named %q, want %q", i, tf.Args, c.Name)
			}
			if diff := cmp.Diff([]string{"file", "weight", "init_file"}, keys(tf.Children)); diff != "" {
				t.Errorf("track_file %s statements (-want +got):\n%s", c.Name, diff)
			} else {
				for k, v := range map[string]string{
					"file":      `"` + path.Join(opts.TrackDir, c.Name) + `"`,
					"weight":    "0",
					"init_file": "1", // failing until the agent's first verdict; no overwrite
				} {
					if got := leaf(t, tf, k); !slices.Equal(got, []string{v}) {
						t.Errorf("track_file %s %s = %q, want %q", c.Name, k, got, v)
					}
				}
			}
		}
		vs := nodes[next]
		next++
		if !slices.Equal(vs.Args, []string{c.Name}) {
			t.Errorf("vrrp_script %d is named %q, want %q", i, vs.Args, c.Name)
		}
		if diff := cmp.Diff([]string{"script", "interval", "timeout", "weight", "fall", "rise"}, keys(vs.Children)); diff != "" {
			t.Errorf("vrrp_script %s statements (-want +got):\n%s", c.Name, diff)
			continue
		}
		want := map[string]string{
			"script":   `"` + path.Join(out.ScriptsDir, "check_"+c.Name+".sh") + `"`,
			"interval": c.EffectiveInterval().String(),
			"timeout":  c.EffectiveTimeout().String(),
			"weight":   strconv.Itoa(c.Weight),
			"fall":     strconv.Itoa(max(1, c.Fall)),
			"rise":     strconv.Itoa(max(1, c.Rise)),
		}
		if isResign(c) {
			// The backstop: whole seconds, never more often than the
			// check itself, a timeout covering the agent's answer (1 s),
			// the check's own timeout and a margin; weight 0 = FAULT.
			ceil := func(ms int64) string { return strconv.FormatInt((ms+999)/1000, 10) }
			want["interval"] = ceil(max(opts.BackstopInterval.Millis(), c.EffectiveInterval().Millis()))
			want["timeout"] = ceil(1000 + c.EffectiveTimeout().Millis() + 500)
			want["fall"], want["rise"] = "1", "1"
		}
		for k, v := range want {
			if got := leaf(t, vs, k); !slices.Equal(got, []string{v}) {
				t.Errorf("vrrp_script %s %s = %q, want %q", c.Name, k, got, v)
			}
		}
	}

	vi := nodes[len(nodes)-1]
	if !slices.Equal(vi.Args, []string{m.InstanceName()}) {
		t.Errorf("vrrp_instance named %q, want %q", vi.Args, m.InstanceName())
	}
	for _, c := range vi.Children {
		if !allowedInstanceKeys[c.Key] {
			t.Errorf("line %d: unexpected keyword %q in vrrp_instance", c.Line, c.Key)
		}
	}
	wantState := "BACKUP"
	if m.PreemptEnabled() && m.PreemptDelay == 0 && !slices.ContainsFunc(m.Members, func(o vrrp.Member) bool { return o.Priority > self.Priority }) {
		wantState = "MASTER"
	}
	for k, v := range map[string]string{
		"state":             wantState,
		"interface":         opts.Interface,
		"virtual_router_id": strconv.Itoa(m.EffectiveVRID()),
		"priority":          strconv.Itoa(self.Priority),
		"advert_int":        m.EffectiveAdvertInt().String(),
		"notify":            `"` + path.Join(out.ScriptsDir, "notify.sh") + `"`,
	} {
		if got := leaf(t, vi, k); !slices.Equal(got, []string{v}) {
			t.Errorf("vrrp_instance %s = %q, want %q", k, got, v)
		}
	}
	// No option on a VIP: keepalived adds IPv6 VIPs without DAD unless
	// told "-nodad". The IPv6 VIP of a dual-stack group is the IPv4
	// instance's one excluded address.
	vip := child(vi, "virtual_ipaddress")
	if vip == nil || !vip.Block || len(vip.Children) != 1 || vip.Children[0].Key != m.VIP.String() || len(vip.Children[0].Args) != 0 {
		t.Errorf("virtual_ipaddress is not exactly { %s }", m.VIP)
	}
	evip := child(vi, "virtual_ipaddress_excluded")
	switch {
	case !m.VIP6.IsValid() && evip != nil:
		t.Errorf("virtual_ipaddress_excluded in a group without vip6")
	case m.VIP6.IsValid() && (evip == nil || !evip.Block || len(evip.Children) != 1 || evip.Children[0].Key != m.VIP6.String() ||
		len(evip.Children[0].Args) != 0):
		t.Errorf("virtual_ipaddress_excluded is not exactly { %s }", m.VIP6)
	}
	ts := child(vi, "track_script")
	var tracked []string
	if ts != nil {
		tracked = keys(ts.Children)
	}
	var names []string
	for _, c := range checks {
		names = append(names, c.Name)
	}
	if !slices.Equal(tracked, names) {
		t.Errorf("track_script %q, want %q", tracked, names)
	}
	var trackedFiles []string
	if tf := child(vi, "track_file"); tf != nil {
		for _, n := range tf.Children {
			trackedFiles = append(trackedFiles, n.Key)
			if !slices.Equal(n.Args, []string{"weight", "0"}) {
				t.Errorf("track_file %s in vrrp_instance has %q, want weight 0", n.Key, n.Args)
			}
		}
	}
	if !slices.Equal(trackedFiles, wantFiles) {
		t.Errorf("vrrp_instance track_file %q, want %q", trackedFiles, wantFiles)
	}
	if auth := child(vi, "authentication"); (auth != nil) != (m.Auth != nil) {
		t.Errorf("authentication block present %v, want %v", auth != nil, m.Auth != nil)
	} else if auth != nil {
		if diff := cmp.Diff([]string{"auth_type", "auth_pass"}, keys(auth.Children)); diff != "" {
			t.Errorf("authentication (-want +got):\n%s", diff)
		} else if got := leaf(t, auth, "auth_pass"); !slices.Equal(got, []string{m.Auth.Pass}) {
			t.Errorf("auth_pass %q, want %q", got, m.Auth.Pass)
		}
	}
	wantUnicast := m.Unicast && len(m.Members) > 1
	if (child(vi, "unicast_src_ip") != nil) != wantUnicast {
		t.Errorf("unicast_src_ip present %v, want %v", child(vi, "unicast_src_ip") != nil, wantUnicast)
	}
	if peers := child(vi, "unicast_peer"); (peers != nil) != wantUnicast {
		t.Errorf("unicast_peer present %v, want %v", peers != nil, wantUnicast)
	} else if peers != nil {
		var want []string
		for _, o := range m.Members {
			if o.Name != self.Name {
				want = append(want, o.Address.String())
			}
		}
		if got := keys(peers.Children); !slices.Equal(got, want) {
			t.Errorf("unicast_peer %q, want %q", got, want)
		}
		if got := leaf(t, vi, "unicast_src_ip"); !slices.Equal(got, []string{self.Address.String()}) {
			t.Errorf("unicast_src_ip %q, want %s", got, self.Address)
		}
	}
	if (child(vi, "version") != nil) != (m.EffectiveVRRPVersion() == 3) {
		t.Errorf("version statement present %v with VRRPv%d", child(vi, "version") != nil, m.EffectiveVRRPVersion())
	}

	var wantNames []string
	for _, c := range checks {
		wantNames = append(wantNames, "check_"+c.Name+".sh")
	}
	wantNames = append(wantNames, "notify.sh")
	slices.Sort(wantNames)
	var gotNames []string
	for _, f := range out.Scripts {
		gotNames = append(gotNames, f.Name)
		if f.Mode != 0o700 {
			t.Errorf("%s mode %o, want 0700", f.Name, f.Mode)
		}
	}
	if diff := cmp.Diff(wantNames, gotNames); diff != "" {
		t.Fatalf("script names (-want +got):\n%s", diff)
	}
	byName := map[string][]byte{}
	for _, f := range out.Scripts {
		byName[f.Name] = f.Data
	}
	for _, c := range checks {
		argv, pass, err := parseScript(byName["check_"+c.Name+".sh"])
		if err != nil {
			t.Errorf("check_%s.sh: %v\n%s", c.Name, err, byName["check_"+c.Name+".sh"])
			continue
		}
		if pass {
			t.Errorf("check_%s.sh passes \"$@\"", c.Name)
		}
		if diff := cmp.Diff(wantArgv(opts, c), argv); diff != "" {
			t.Errorf("check_%s.sh argv (-want +got):\n%s", c.Name, diff)
		}
	}
	argv, pass, err := parseScript(byName["notify.sh"])
	if err != nil {
		t.Fatalf("notify.sh: %v", err)
	}
	if !pass {
		t.Errorf("notify.sh does not pass keepalived's arguments on")
	}
	if diff := cmp.Diff([]string{opts.Vipctl, "notify", "--socket", opts.NotifySocket, "--spool", opts.SpoolDir}, argv); diff != "" {
		t.Errorf("notify.sh argv (-want +got):\n%s", diff)
	}
	if len(out.Hash) != 64 || strings.Trim(out.Hash, "0123456789abcdef") != "" {
		t.Errorf("hash %q is not hex SHA-256", out.Hash)
	}
}
