package sdlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Where the root file system is cached.
const (
	// CacheEnv names the environment variable that overrides the cache
	// directory.
	CacheEnv = "VIPKEEPER_SDLAB_CACHE"
	// DefaultCacheDir holds the built trees and the downloaded .debs.
	DefaultCacheDir = "/var/cache/vipkeeper-sdlab"
	// rootfsMarker is written into a tree as its last step: a tree without
	// it is not finished.
	rootfsMarker = ".vipkeeper-sdlab"
)

// ErrUnavailable is returned (wrapped) by Available, New and EnsureRootfs
// when the lab cannot run on this machine; the text says what is missing.
var ErrUnavailable = errors.New("sdlab: systemd lab unavailable")

// Commands the lab runs on the machine itself.
var requiredCommands = []string{"systemd-nspawn", "debootstrap", "nsenter", "ip", "flock", "sha256sum"}

// Available reports whether the lab can run here: root, the commands it
// runs (systemd-nspawn and debootstrap come from Debian's
// systemd-container and debootstrap packages) and overlayfs.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (running as uid %d)", ErrUnavailable, os.Geteuid())
	}
	var missing []string
	for _, c := range requiredCommands {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not installed (apt-get install debootstrap systemd-container iproute2)", ErrUnavailable, strings.Join(missing, ", "))
	}
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !bytes.Contains(fs, []byte("\toverlay\n")) {
		return fmt.Errorf("%w: the kernel has no overlayfs", ErrUnavailable)
	}
	return nil
}

// CacheDir is the cache directory: $VIPKEEPER_SDLAB_CACHE or DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv(CacheEnv); d != "" {
		return d
	}
	return DefaultCacheDir
}

// RootfsOptions configure EnsureRootfs.
type RootfsOptions struct {
	// Script is scripts/rootfs.sh of the repository. Required.
	Script string
	// CacheDir overrides CacheDir().
	CacheDir string
	// Out receives the script's progress; nil discards it.
	Out io.Writer
}

// Rootfs is a finished root file system tree.
type Rootfs struct {
	// Dir is the tree, the lower layer of every container's overlay.
	Dir string
	// Cached is true when the tree existed already.
	Cached bool
	// Took is how long EnsureRootfs took (the build when not cached).
	Took time.Duration
}

// EnsureRootfs returns the cached tree, building it first with the script
// (debootstrap, about a minute and 250 MB) when it is missing. Concurrent
// callers, also in other processes, wait for one build.
func EnsureRootfs(ctx context.Context, opts RootfsOptions) (Rootfs, error) {
	start := time.Now()
	if err := Available(); err != nil {
		return Rootfs{}, err
	}
	if opts.Script == "" {
		return Rootfs{}, errors.New("sdlab: RootfsOptions.Script is required")
	}
	cache := opts.CacheDir
	if cache == "" {
		cache = CacheDir()
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "bash", append([]string{opts.Script}, args...)...)
		cmd.Env = append(os.Environ(), CacheEnv+"="+cache)
		var stdout bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, out
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("sdlab: %s %s: %w", opts.Script, strings.Join(args, " "), err)
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		return lines[len(lines)-1], nil
	}
	dir, err := run("--path")
	if err != nil {
		return Rootfs{}, err
	}
	if _, err := os.Stat(filepath.Join(dir, rootfsMarker)); err == nil {
		return Rootfs{Dir: dir, Cached: true, Took: time.Since(start)}, nil
	}
	built, err := run()
	if err != nil {
		return Rootfs{}, err
	}
	if built != dir {
		return Rootfs{}, fmt.Errorf("sdlab: %s built %q, expected %q", opts.Script, built, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, rootfsMarker)); err != nil {
		return Rootfs{}, fmt.Errorf("sdlab: %s finished without a tree: %w", opts.Script, err)
	}
	return Rootfs{Dir: dir, Took: time.Since(start)}, nil
}
