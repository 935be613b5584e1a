package eip

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

const (
	// DefaultCommandTimeout bounds one run of the hook.
	DefaultCommandTimeout = 30 * time.Second
	// commandWaitDelay is how long Apply waits for the hook's output pipes
	// after killing it on timeout.
	commandWaitDelay = 2 * time.Second
)

// CommandOptions configures the Command backend.
type CommandOptions struct {
	// Path is the absolute path of the executable.
	Path string
	// Args are its arguments, fixed by configuration: nothing from a
	// mapping ever reaches the command line.
	Args []string
	// Env is its whole environment; nil means only
	// PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin, so
	// hostsync's own environment does not leak into a platform script.
	Env []string
	// Timeout bounds one run (DefaultCommandTimeout when zero); on expiry
	// the hook's whole process group is killed.
	Timeout time.Duration
	// Logger receives apply logs; nil discards them.
	Logger *slog.Logger
}

// Command is the backend for platforms that own their gateway: every Apply
// runs the configured executable with the complete desired set as a JSON
// array of Mapping on stdin (`[]` when empty). Exit status 0 means applied.
// Runs are serialised, so the hook never sees two sets at once.
type Command struct {
	// Immutable after NewCommand.
	path    string
	args    []string
	env     []string
	timeout time.Duration
	log     *slog.Logger

	// mu serialises runs of the hook.
	mu sync.Mutex
}

// ExitError is returned by Command.Apply when the hook exits with a
// non-zero status or is killed by a signal.
type ExitError struct {
	Path string
	// Code is the exit status, -1 when a signal ended the process.
	Code int
	// Stderr is the start of what the hook wrote on stderr, at most 4 KiB.
	Stderr string
	// Err is the underlying *exec.ExitError.
	Err error
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("eip: command %s exited with status %d: %s", e.Path, e.Code, e.Stderr)
}

func (e *ExitError) Unwrap() error { return e.Err }

// NewCommand returns the Command backend configured by opts.
func NewCommand(opts CommandOptions) (*Command, error) {
	if opts.Path == "" || !filepath.IsAbs(opts.Path) {
		return nil, fmt.Errorf("%w: command path %q must be absolute", ErrInvalidOptions, opts.Path)
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("%w: command timeout %s is negative", ErrInvalidOptions, opts.Timeout)
	}
	c := &Command{
		path:    filepath.Clean(opts.Path),
		args:    slices.Clone(opts.Args),
		env:     slices.Clone(opts.Env),
		timeout: cmp.Or(opts.Timeout, DefaultCommandTimeout),
		log:     opts.Logger,
	}
	if c.env == nil {
		c.env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Apply runs the hook with mappings on stdin. It returns an *ExitError
// (with the hook's stderr) on a non-zero exit, an error wrapping
// context.DeadlineExceeded when the hook outlived the timeout, and ctx's
// error when ctx ended first.
func (c *Command) Apply(ctx context.Context, mappings []Mapping) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	if mappings == nil {
		mappings = []Mapping{}
	}
	input, err := json.Marshal(mappings)
	if err != nil {
		return fmt.Errorf("eip: encode mappings: %w", err)
	}
	input = append(input, '\n')

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.path, c.args...)
	cmd.Env = c.env
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(input)
	stdout, stderr := &boundedBuffer{max: maxOutput}, &boundedBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// The hook gets its own process group, and a timeout kills the whole
	// group: a script's children must not outlive it holding the pipes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = commandWaitDelay

	start := time.Now()
	err = cmd.Run()
	log := c.log.With("command", c.path, "mappings", len(mappings), "took", time.Since(start))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			log.Warn("eip: command stopped", "err", ctxErr)
			return fmt.Errorf("eip: command %s stopped after %s: %w", c.path, time.Since(start).Round(time.Millisecond), ctxErr)
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			xe := &ExitError{Path: c.path, Code: ee.ExitCode(), Stderr: string(bytes.TrimSpace(stderr.Bytes())), Err: ee}
			log.Warn("eip: command failed", "code", xe.Code, "stderr", xe.Stderr)
			return xe
		}
		return fmt.Errorf("eip: run command %s: %w", c.path, err)
	}
	log.Info("eip: command applied", "stdout", string(bytes.TrimSpace(stdout.Bytes())))
	return nil
}

// boundedBuffer keeps the first max bytes written to it and notes that
// more were dropped; writes never fail, so a chatty child never blocks.
type boundedBuffer struct {
	max       int
	buf       bytes.Buffer
	truncated bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		b.buf.Write(p[:max(room, 0)])
		b.truncated = true
	} else {
		b.buf.Write(p)
	}
	return len(p), nil
}

// Bytes returns what was kept, with a marker when output was dropped.
func (b *boundedBuffer) Bytes() []byte {
	if b.truncated {
		return append(bytes.Clone(b.buf.Bytes()), "... (truncated)"...)
	}
	return b.buf.Bytes()
}
