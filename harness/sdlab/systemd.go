package sdlab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Show returns properties of a unit inside the container, as `systemctl
// show -p NAME` prints them (e.g. "ActiveState", "MainPID", "NRestarts").
func (c *Container) Show(ctx context.Context, unit string, props ...string) (map[string]string, error) {
	if len(props) == 0 {
		return nil, errors.New("sdlab: Show needs at least one property")
	}
	out, err := c.Output(ctx, "systemctl", "show", "--property="+strings.Join(props, ","), "--", unit)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(props))
	for line := range strings.SplitSeq(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	for _, p := range props {
		if _, ok := m[p]; !ok {
			return nil, fmt.Errorf("sdlab: %s: systemctl show %s printed no %s", c.Name, unit, p)
		}
	}
	return m, nil
}

// MainPID is the unit's main process as the container sees it (0: none).
func (c *Container) MainPID(ctx context.Context, unit string) (int, error) {
	p, err := c.Show(ctx, unit, "MainPID")
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(p["MainPID"])
	if err != nil {
		return 0, fmt.Errorf("sdlab: %s: MainPID of %s is %q", c.Name, unit, p["MainPID"])
	}
	return pid, nil
}

// IsActive is `systemctl is-active UNIT`: "active", "inactive",
// "activating", "failed"... (its exit status says no more than that).
func (c *Container) IsActive(ctx context.Context, unit string) (string, error) {
	out, err := c.Output(ctx, "systemctl", "is-active", "--", unit)
	var ee *ExitError
	if err != nil && !errors.As(err, &ee) {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// Status is what `systemctl status UNIT` prints, without journal lines.
// Its exit status (3 for an inactive unit) is not an error.
func (c *Container) Status(ctx context.Context, unit string) (string, error) {
	out, err := c.Output(ctx, "systemctl", "status", "--no-pager", "--full", "--lines=0", "--", unit)
	var ee *ExitError
	if err != nil && (!errors.As(err, &ee) || out == "") {
		return out, err // e.g. exit 4: no such unit
	}
	return out, nil
}

// JournalEntry is one record of the container's journal.
type JournalEntry struct {
	Cursor   string
	Time     time.Time
	Unit     string // _SYSTEMD_UNIT, or UNIT for systemd's own messages about it
	Comm     string // _COMM
	PID      int    // _PID
	Priority int    // PRIORITY, 6 (info) when absent
	Message  string
}

// Cursor is the journal's current end, for JournalAfter.
func (c *Container) Cursor(ctx context.Context) (string, error) {
	out, err := c.Output(ctx, "journalctl", "--lines=0", "--show-cursor", "--quiet", "--no-pager")
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(out, "\n") {
		if cur, ok := strings.CutPrefix(strings.TrimSpace(line), "-- cursor: "); ok {
			return cur, nil
		}
	}
	return "", fmt.Errorf("sdlab: %s: journalctl printed no cursor: %q", c.Name, out)
}

// Journal returns the records about unit (the unit's own and systemd's
// about it, as `journalctl -u`), after cursor when it is not empty.
func (c *Container) Journal(ctx context.Context, unit, cursor string) ([]JournalEntry, error) {
	args := []string{"journalctl", "--output=json", "--no-pager", "--quiet", "--unit=" + unit}
	if cursor != "" {
		args = append(args, "--after-cursor="+cursor)
	}
	out, err := c.Output(ctx, args...)
	if err != nil {
		return nil, err
	}
	return ParseJournalJSON(out)
}

// ParseJournalJSON decodes `journalctl --output=json`: one object per
// line. MESSAGE is a string, or an array of bytes when it is not UTF-8.
func ParseJournalJSON(s string) ([]JournalEntry, error) {
	var entries []JournalEntry
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(line, &raw); err != nil {
			return nil, fmt.Errorf("sdlab: journal record: %w", err)
		}
		str := func(k string) string {
			v, ok := raw[k]
			if !ok {
				return ""
			}
			var s string
			if json.Unmarshal(v, &s) == nil {
				return s
			}
			var b []byte
			var ints []int
			if json.Unmarshal(v, &ints) == nil {
				for _, i := range ints {
					b = append(b, byte(i))
				}
				return string(b)
			}
			return ""
		}
		e := JournalEntry{
			Cursor:   str("__CURSOR"),
			Unit:     str("_SYSTEMD_UNIT"),
			Comm:     str("_COMM"),
			Message:  str("MESSAGE"),
			Priority: 6,
		}
		if e.Unit == "" {
			e.Unit = str("UNIT")
		}
		if us, err := strconv.ParseInt(str("__REALTIME_TIMESTAMP"), 10, 64); err == nil {
			e.Time = time.UnixMicro(us)
		}
		if pid, err := strconv.Atoi(str("_PID")); err == nil {
			e.PID = pid
		}
		if p, err := strconv.Atoi(str("PRIORITY")); err == nil {
			e.Priority = p
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sdlab: journal: %w", err)
	}
	return entries, nil
}
