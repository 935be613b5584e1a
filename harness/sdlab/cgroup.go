package sdlab

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// With --keep-unit, nspawn roots the container's cgroup tree at the cgroup
// it runs in, and systemd inside makes /system.slice/... there. Two
// containers started from one cgroup would share those directories: one
// container's systemd removes a unit's cgroup while the other moves a
// process into it ("Failed at step CGROUP"). So every container's nspawn
// runs in a cgroup of its own, made under the caller's in each hierarchy
// systemd manages: the unified one (cgroup v2, alone or next to v1 in the
// hybrid layout) and v1's name=systemd.

// cgroupRoots maps each hierarchy systemd manages to its mount point.
func cgroupRoots() map[string]string {
	roots := make(map[string]string)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		roots[""] = "/sys/fs/cgroup" // unified only
		return roots
	}
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.controllers"); err == nil {
		roots[""] = "/sys/fs/cgroup/unified"
	}
	if _, err := os.Stat("/sys/fs/cgroup/systemd/cgroup.procs"); err == nil {
		roots["name=systemd"] = "/sys/fs/cgroup/systemd"
	}
	return roots
}

// ownCgroups maps each hierarchy ("" for the unified one, else its
// controller list) to this process's cgroup path in it.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("sdlab: %w", err)
	}
	defer f.Close()
	m := make(map[string]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 {
			m[parts[1]] = parts[2]
		}
	}
	return m, sc.Err()
}

// makeCgroups creates the cgroup named name under this process's cgroup
// in every hierarchy systemd manages and returns their directories.
func makeCgroups(name string) ([]string, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	var dirs []string
	roots := cgroupRoots()
	for _, h := range slices.Sorted(maps.Keys(roots)) {
		path, ok := own[h]
		if !ok {
			continue
		}
		dir := filepath.Join(roots[h], path, "vipkeeper-sdlab-"+name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			removeCgroups(dirs)
			return nil, fmt.Errorf("sdlab: cgroup for %s: %w", name, err)
		}
		dirs = append(dirs, dir)
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("%w: no cgroup hierarchy managed by systemd is mounted under /sys/fs/cgroup", ErrUnavailable)
	}
	return dirs, nil
}

// removeCgroups removes the directories and what the container's systemd
// left below them, deepest first. A cgroup that still holds a process
// cannot be removed: that is an error.
func removeCgroups(dirs []string) error {
	var errs []error
	for _, dir := range dirs {
		var sub []string
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				sub = append(sub, p)
			}
			return nil
		})
		for i := len(sub) - 1; i >= 0; i-- {
			if err := os.Remove(sub[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("sdlab: remove cgroup: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}
