package testutil

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// StandIn is a real process under a comm name the test chooses, standing
// in for a daemon that the code under test finds by name or pid (as
// keepalived): /bin/sh copied to a temporary file of that name, ignoring
// SIGHUP (as keepalived survives a reload) and waiting on a pipe the test
// holds. It runs until signalled to death, and is reaped as it exits (a
// goroutine waits for it); it is killed and reaped when the test ends.
type StandIn struct {
	Cmd *exec.Cmd
	// Done is closed once the process has exited and been reaped.
	Done <-chan struct{}
}

// StartStandIn starts a StandIn named name (the kernel keeps 15 bytes of
// a comm name) and returns once the shell has said it ignores SIGHUP. It
// skips the test without /bin/sh (see SkipUnprivileged).
func StartStandIn(tb testing.TB, name string) *StandIn {
	tb.Helper()
	data, err := os.ReadFile("/bin/sh")
	if err != nil {
		SkipUnprivileged(tb, "needs /bin/sh: %v", err)
	}
	bin := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		tb.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", `trap "" HUP; echo ready; read x`)
	cmd.Stdin = r
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	r.Close()
	done := make(chan struct{})
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		w.Close()
	})
	// SIGHUP is ignored once the shell says so.
	_, err = bufio.NewReader(out).ReadString('\n')
	go func() { // after the read: Wait closes the pipe
		cmd.Wait()
		close(done)
	}()
	if err != nil {
		tb.Fatalf("stand-in %s: %v", name, err)
	}
	return &StandIn{Cmd: cmd, Done: done}
}

// Pid returns the process's pid.
func (s *StandIn) Pid() int { return s.Cmd.Process.Pid }

// Signal sends sig to the process, failing the test if it cannot.
func (s *StandIn) Signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if err := s.Cmd.Process.Signal(sig); err != nil {
		tb.Fatal(err)
	}
}
