package sdlab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vipkeeper/vipkeeper/harness/netns"
)

// Options configure New.
type Options struct {
	// Rootfs is the tree every container boots from (EnsureRootfs).
	// Required.
	Rootfs string
	// Dir is the work directory (overlay layers, console logs); empty
	// means a new directory under os.TempDir, removed by Close.
	Dir string
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Lab is a set of network namespaces and systemd containers on this
// machine. Every name it creates starts with its Prefix, so labs running
// at the same time do not collide. Its methods are safe for concurrent
// use.
type Lab struct {
	// immutable after New
	Prefix string // "vksd" and 4 hex digits
	Dir    string
	rootfs string
	ownDir bool
	log    *slog.Logger

	mu         sync.Mutex // guards the fields below
	namespaces []string
	containers []*Container // to close
	booted     []*Container // every container, for Leftovers
	closed     bool
}

// New prepares an empty lab.
func New(opts Options) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opts.Rootfs == "" {
		return nil, errors.New("sdlab: Options.Rootfs is required")
	}
	if _, err := os.Stat(filepath.Join(opts.Rootfs, rootfsMarker)); err != nil {
		return nil, fmt.Errorf("sdlab: %s is not a finished root file system: %w", opts.Rootfs, err)
	}
	if strings.ContainsAny(opts.Rootfs, ",:\\") {
		return nil, fmt.Errorf("sdlab: root file system path %q cannot be an overlay layer (',', ':' or '\\')", opts.Rootfs)
	}
	var suffix [2]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("sdlab: %w", err)
	}
	l := &Lab{Prefix: "vksd" + hex.EncodeToString(suffix[:]), rootfs: opts.Rootfs, log: opts.Log}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.Dir = opts.Dir
	if l.Dir == "" {
		d, err := os.MkdirTemp("", "vipkeeper-sdlab-")
		if err != nil {
			return nil, fmt.Errorf("sdlab: %w", err)
		}
		l.Dir, l.ownDir = d, true
	}
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("sdlab: %w", err)
	}
	return l, nil
}

// NS is the full name of the lab's namespace with short name n.
func (l *Lab) NS(n string) string { return l.Prefix + "-" + n }

// shortName is what a namespace's short name or a machine name may be:
// the full namespace name stays within 15 characters, like a link name.
var shortName = regexp.MustCompile(`^[a-z][a-z0-9]{0,5}$`)

// AddNS creates namespace n (1–6 of a-z, 0-9) with loopback up.
func (l *Lab) AddNS(n string) error {
	if !shortName.MatchString(n) {
		return fmt.Errorf("sdlab: namespace name %q: want 1-6 of a-z 0-9, starting with a letter", n)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("sdlab: lab closed")
	}
	l.mu.Unlock()
	name := l.NS(n)
	if _, err := netns.IP("netns", "add", name); err != nil {
		return fmt.Errorf("sdlab: %w", err)
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, name)
	l.mu.Unlock()
	return l.IP(n, "link", "set", "lo", "up")
}

// IP runs `ip ARGS` inside namespace n.
func (l *Lab) IP(n string, args ...string) error {
	if _, err := netns.IPIn(l.NS(n), args...); err != nil {
		return fmt.Errorf("sdlab: %w", err)
	}
	return nil
}

// Veth creates a veth pair, end an in namespace na and end bn in nb, both up.
func (l *Lab) Veth(na, an, nb, bn string) error {
	if err := netns.Veth(l.NS(na), an, l.NS(nb), bn); err != nil {
		return fmt.Errorf("sdlab: %w", err)
	}
	return nil
}

// Bridge creates bridge br in namespace n, up, with the addresses given
// (CIDR form).
func (l *Lab) Bridge(n, br string, addrs ...string) error {
	if err := netns.Bridge(l.NS(n), br, addrs...); err != nil {
		return fmt.Errorf("sdlab: %w", err)
	}
	return nil
}

// Sysctl sets a sysctl of namespace n (the net.* ones are per namespace).
func (l *Lab) Sysctl(n, key, value string) error {
	if err := netns.Sysctl(l.NS(n), key, value); err != nil {
		return fmt.Errorf("sdlab: %w", err)
	}
	return nil
}

// Close powers off every container (in parallel; one that does not stop
// is killed by PID), unmounts their overlays, deletes the namespaces and,
// when New made it, the work directory. It is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	l.closed = true
	cs, nss := l.containers, l.namespaces
	l.containers, l.namespaces = nil, nil
	l.mu.Unlock()

	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() { errs[i] = c.Close() })
	}
	wg.Wait()
	for i := len(nss) - 1; i >= 0; i-- {
		if err := netns.Delete(nss[i]); err != nil {
			errs = append(errs, fmt.Errorf("sdlab: %w", err))
		}
	}
	if l.ownDir && errors.Join(errs...) == nil {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, fmt.Errorf("sdlab: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists what of this lab is still on the machine: namespaces,
// mounts under its directory, container processes. Empty after Close.
func (l *Lab) Leftovers() []string {
	var left []string
	for _, name := range netns.List(l.Prefix + "-") {
		left = append(left, "netns "+name)
	}
	for _, m := range mountsUnder(l.Dir) {
		left = append(left, "mount "+m)
	}
	l.mu.Lock()
	cs := append([]*Container(nil), l.booted...)
	l.mu.Unlock()
	for _, c := range cs {
		for _, pid := range c.pids() {
			if processAlive(pid) {
				left = append(left, fmt.Sprintf("process %d (%s)", pid, c.Name))
			}
		}
	}
	if own, err := ownCgroups(); err == nil {
		for h, root := range cgroupRoots() {
			if path, ok := own[h]; ok {
				m, _ := filepath.Glob(filepath.Join(root, path, "vipkeeper-sdlab-"+l.Prefix+"-*"))
				for _, d := range m {
					left = append(left, "cgroup "+d)
				}
			}
		}
	}
	return left
}

// mountsUnder lists the mount points at or below dir.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + c - '0'
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Poll calls cond every interval until it returns true, returns an error,
// or timeout passes; the error then names what was awaited and the state
// cond last described. It is how the lab and its tests wait: never a bare
// sleep.
func Poll(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	last := ""
	for {
		ok, state, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		last = state
		select {
		case <-ctx.Done():
			return fmt.Errorf("sdlab: %s: not within %s (last: %s)", what, timeout, last)
		case <-t.C:
		}
	}
}
