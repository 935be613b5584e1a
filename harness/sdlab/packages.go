package sdlab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// PackageNames are vipkeeper's packages.
var PackageNames = []string{"vipkeeper-agent", "vipkeeper-hostsync"}

// BuildOptions configure BuildPackages.
type BuildOptions struct {
	// Repo is the repository root (holding scripts/packages.sh). Required.
	Repo string
	// Dir receives the .deb files. Required.
	Dir string
	// Version is the `git describe`-style version stamped into the
	// binaries, e.g. "v1.0.0" (package version 1.0.0). Required.
	Version string
	// Arch is the Debian architecture; empty means this machine's.
	Arch string
	// Out receives the script's output; nil discards it.
	Out io.Writer
}

// Debs are built packages: package name -> .deb path.
type Debs map[string]string

// BuildPackages builds vipkeeper's .deb packages with the repository's
// own scripts/packages.sh (what `make packages` runs), for one
// architecture, into opts.Dir.
func BuildPackages(ctx context.Context, opts BuildOptions) (Debs, error) {
	if opts.Repo == "" || opts.Dir == "" || opts.Version == "" {
		return nil, fmt.Errorf("sdlab: BuildOptions needs Repo, Dir and Version")
	}
	arch := opts.Arch
	if arch == "" {
		arch = runtime.GOARCH // Go's amd64, arm64, ... are Debian's names too
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(opts.Repo, "scripts", "packages.sh"))
	cmd.Dir = opts.Repo
	cmd.Env = append(os.Environ(), "DIST="+opts.Dir, "VERSION="+opts.Version, "ARCHES="+arch, "FORMATS=deb")
	// The script runs $GO or go from PATH; `go test` puts its own go
	// first on the PATH of the tests.
	var buf bytes.Buffer
	// One writer for both: exec then copies them through one pipe.
	w := io.MultiWriter(&buf, out)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("sdlab: scripts/packages.sh (version %s): %w\n%s", opts.Version, err, buf.Bytes())
	}
	debs := make(Debs)
	for _, name := range PackageNames {
		m, err := filepath.Glob(filepath.Join(opts.Dir, name+"_*_"+arch+".deb"))
		if err != nil || len(m) != 1 {
			return nil, fmt.Errorf("sdlab: scripts/packages.sh made %d %s packages for %s in %s, want 1", len(m), name, arch, opts.Dir)
		}
		debs[name] = m[0]
	}
	return debs, nil
}

// CopyIn copies the host file src to dst inside the container (see
// WriteFile).
func (c *Container) CopyIn(ctx context.Context, src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("sdlab: %w", err)
	}
	return c.WriteFile(ctx, dst, data, "root:root", mode)
}

// IndexAptRepo makes the directory dir inside the container, holding
// .deb files, a flat apt repository (`deb [trusted=yes] URL ./`): its
// Packages index, as `dpkg-scanpackages . > Packages` would write it, with
// the container's own dpkg-deb.
func (c *Container) IndexAptRepo(ctx context.Context, dir string) error {
	const script = `set -e
cd "$1"
: >Packages.tmp
for f in *.deb; do
	dpkg-deb --field "$f" >>Packages.tmp
	printf 'Filename: ./%s\nSize: %s\nSHA256: %s\n\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d ' ' -f 1)" >>Packages.tmp
done
chmod 0644 Packages.tmp
mv -f Packages.tmp Packages`
	if _, err := c.Shell(ctx, script, dir); err != nil {
		return fmt.Errorf("sdlab: index apt repository %s: %w", dir, err)
	}
	return nil
}
