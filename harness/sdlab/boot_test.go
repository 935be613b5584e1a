package sdlab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipkeeper/vipkeeper/harness/netns"
)

// A container boots with systemd as PID 1 in the lab's namespace, runs
// units, answers on the system bus, and powers off leaving nothing behind.
func TestBootAndPoweroff(t *testing.T) {
	requireLab(t)
	t.Parallel()
	f := getRootfs(t)
	l := newLab(t, f)
	ctx := t.Context()

	if err := l.AddNS("b"); err != nil {
		t.Fatal(err)
	}
	if err := l.AddNS("g"); err != nil {
		t.Fatal(err)
	}
	if err := l.Bridge("b", "br0", "192.0.2.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := guestNet(l, "b", "g", "vm-g", "52:54:00:00:02:21", "192.0.2.33", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	c, err := l.Boot(ctx, "vm-boot", "g", BootOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: boot to running in %s", c.BootTime.Round(10*time.Millisecond))

	t.Run("systemd is PID 1 and running", func(t *testing.T) {
		if got := strings.TrimSpace(run(t, ctx, c, "cat", "/proc/1/comm")); got != "systemd" {
			t.Errorf("PID 1 is %q, want systemd", got)
		}
		if got := strings.TrimSpace(run(t, ctx, c, "systemctl", "is-system-running")); got != "running" {
			t.Errorf("is-system-running = %q", got)
		}
		if got := strings.TrimSpace(run(t, ctx, c, "hostname")); got != "vm-boot" {
			t.Errorf("hostname = %q, want the machine name", got)
		}
		if got := strings.TrimSpace(run(t, ctx, c, "systemd-detect-virt", "--container")); got != "systemd-nspawn" {
			t.Errorf("systemd-detect-virt = %q", got)
		}
	})
	t.Run("cloud-init stays disabled without a seed", func(t *testing.T) {
		r, err := c.CloudInit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != "disabled" || r.BootStatusCode != "disabled-by-marker-file" {
			t.Errorf("cloud-init status %q (%s), want disabled by %s:\n%s", r.Status, r.BootStatusCode, CloudInitDisabled, r.Long)
		}
		for _, u := range []string{"cloud-init-local.service", "cloud-init.service", "cloud-final.service"} {
			if got, err := c.IsActive(ctx, u); err != nil || got != "inactive" {
				t.Errorf("%s is %q (%v), want inactive", u, got, err)
			}
		}
	})
	t.Run("its network is the lab's namespace", func(t *testing.T) {
		ok, err := hasAddr(ctx, c, "eth0", "192.0.2.33/24")
		if err != nil || !ok {
			t.Fatalf("192.0.2.33/24 on eth0: %v %v", ok, err)
		}
		// A server in the bridge's namespace answers the container.
		ln, err := netns.Listen(l.NS("b"), "tcp", "192.0.2.1:8080")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s\n", r.RemoteAddr)
		})}
		var wg sync.WaitGroup
		wg.Go(func() { _ = srv.Serve(ln) })
		defer wg.Wait()
		defer srv.Close()
		got := run(t, ctx, c, "curl", "-fsS", "--max-time", "10", "http://192.0.2.1:8080/")
		if !strings.HasPrefix(got, "hello 192.0.2.33:") {
			t.Errorf("answer = %q, want the container's address", got)
		}
	})
	t.Run("system bus and units", func(t *testing.T) {
		if got, err := c.IsActive(ctx, "dbus.service"); err != nil || got != "active" {
			t.Fatalf("dbus.service: %q %v", got, err)
		}
		// busctl goes through the system bus to systemd.
		out := run(t, ctx, c, "busctl", "get-property", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
			"org.freedesktop.systemd1.Manager", "SystemState")
		if strings.TrimSpace(out) != `s "running"` {
			t.Errorf("SystemState over D-Bus = %q", out)
		}
		if got, err := c.IsActive(ctx, "nginx.service"); err != nil || got != "active" {
			t.Errorf("nginx.service: %q %v", got, err)
		}
	})
	t.Run("files written inside stay inside", func(t *testing.T) {
		if err := c.WriteFile(ctx, "/etc/vipkeeper/probe", []byte("x\n"), "root:root", 0o640); err != nil {
			t.Fatal(err)
		}
		if got := run(t, ctx, c, "stat", "-c", "%a %U:%G %s", "/etc/vipkeeper/probe"); strings.TrimSpace(got) != "640 root:root 2" {
			t.Errorf("stat = %q", got)
		}
		if ok, err := c.Exists(ctx, "/etc/vipkeeper/probe"); err != nil || !ok {
			t.Errorf("Exists = %v, %v", ok, err)
		}
		if ok, err := c.Exists(ctx, "/etc/vipkeeper/none"); err != nil || ok {
			t.Errorf("Exists(missing) = %v, %v", ok, err)
		}
		if _, err := c.Output(ctx, "false"); err == nil {
			t.Error("a failing command returned no error")
		}
	})

	start := time.Now()
	if err := c.Poweroff(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: poweroff in %s", time.Since(start).Round(10*time.Millisecond))
	if !c.Exited() {
		t.Fatal("nspawn still runs after Poweroff")
	}
	if _, err := c.Output(context.Background(), "true"); err == nil {
		t.Error("a command ran in a container that is off")
	}
}

// Where the work directory cannot hold an overlay's upper layer (it is on
// an overlayfs itself, as in some CI containers), a container boots from
// a copy of the tree instead.
func TestBootFromCopy(t *testing.T) {
	requireLab(t)
	t.Parallel()
	f := getRootfs(t)
	base := t.TempDir()
	for _, d := range []string{"l", "u", "w", "m"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "m")
	opts := "lowerdir=" + filepath.Join(base, "l") + ",upperdir=" + filepath.Join(base, "u") + ",workdir=" + filepath.Join(base, "w")
	if err := unix.Mount("overlay", dir, "overlay", 0, opts); err != nil {
		t.Fatalf("mount the overlay standing in for the work directory: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	l, err := New(Options{Rootfs: f.rootfs.Dir, Dir: filepath.Join(dir, "lab"), Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
		if left := l.Leftovers(); len(left) > 0 {
			t.Errorf("left on the machine after Close: %v", left)
		}
	})
	ctx := t.Context()
	if err := l.AddNS("c"); err != nil {
		t.Fatal(err)
	}
	c, err := l.Boot(ctx, "vm-copy", "c", BootOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: boot from a copy to running in %s", c.BootTime.Round(10*time.Millisecond))
	if got := strings.TrimSpace(run(t, ctx, c, "systemctl", "is-system-running")); got != "running" {
		t.Errorf("is-system-running = %q", got)
	}
	if m := mountsUnder(l.Dir); len(m) != 0 {
		t.Errorf("mounts under the lab: %v, want none (a copy, not an overlay)", m)
	}
	// The copy is the container's: the cached tree is untouched.
	if err := c.WriteFile(ctx, "/etc/vipkeeper-copy-probe", []byte("x"), "root:root", 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.rootfs.Dir, "etc", "vipkeeper-copy-probe")); !os.IsNotExist(err) {
		t.Errorf("a file written in the container reached the cached tree: %v", err)
	}
}
