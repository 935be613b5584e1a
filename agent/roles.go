package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vipkeeper/vipkeeper/agent/control"
	"github.com/vipkeeper/vipkeeper/api"
	"github.com/vipkeeper/vipkeeper/vrrp"
)

// notifyOutcome says what became of a notify event.
type notifyOutcome int

const (
	notifyRecorded  notifyOutcome = iota
	notifySameRole                // the role did not change: nothing recorded
	notifyStale                   // older than the last recorded transition
	notifyIgnored                 // a GROUP event: sync groups are not rendered
	notifyDuplicate               // a spool file recorded before
	notifyForeign                 // not the vrrp_instance the agent rendered
)

func (o notifyOutcome) String() string {
	return [...]string{"recorded", "same role", "stale", "ignored", "duplicate", "other instance"}[o]
}

// maxClockSkew bounds how far in the future a hook's timestamp may be
// before the agent uses its own clock instead.
const maxClockSkew = time.Minute

// notify records one keepalived notify event. spool is the spool file
// name it came from ("" for the socket).
func (a *Agent) notify(req api.NotifyRequest, n vrrp.Notify, spool string) (vrrp.Transition, notifyOutcome, error) {
	if n.Type != "INSTANCE" {
		return vrrp.Transition{}, notifyIgnored, nil
	}
	now := a.d.now()
	at := req.At
	if at.IsZero() || at.After(now.Add(maxClockSkew)) {
		at = now
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Only the instance the agent rendered is the group's role; an event
	// of another vrrp_instance (a hand-written one, a stale spool file of
	// another group) must not become this group's claim. Before anything
	// was applied (a new state database) the agent cannot tell, and a
	// spooled event of its own instance must not be lost: accepted.
	if want := a.instanceLocked(); want != "" && n.Name != want {
		a.log.Warn("notify for a vrrp_instance this agent did not render, ignored", "op", "notify",
			"instance", n.Name, "rendered", want, "state", n.State)
		return vrrp.Transition{}, notifyForeign, nil
	}
	present := a.vipPresent
	if vip := a.vipAddrLocked(); vip.IsValid() {
		if p, err := hasAddr(a.d.link, vip); err == nil {
			present = p
		}
	}
	present6 := a.vip6PresenceLocked()
	// A hook that ran before the last recorded transition was delivered
	// late (two hooks raced, or a spooled event after a newer one): it is
	// history, not the current role. If the clock stepped back (the last
	// transition is in the future), time order means nothing: accept.
	if at.Before(a.lastAt) && !a.lastAt.After(now.Add(time.Second)) {
		a.log.Info("notify older than the last transition, ignored", "op", "notify", "state", n.State, "at", at, "last", a.lastAt)
		return vrrp.Transition{}, notifyStale, nil
	}
	if n.State == a.role {
		a.vipPresent = present
		if present6 != nil {
			a.vip6Present = *present6
		}
		a.publishLocked()
		return vrrp.Transition{}, notifySameRole, nil
	}
	return a.recordLocked(vrrp.Transition{
		Instance:    n.Name,
		To:          n.State,
		Priority:    n.Priority,
		At:          at,
		Source:      SourceNotify,
		VIPPresent:  present,
		VIP6Present: present6,
	}, spool)
}

// instanceLocked is the vrrp_instance name the agent renders for its
// group, "" when unknown (no metadata applied yet); a.mu is held.
func (a *Agent) instanceLocked() string {
	if a.group == "" {
		return ""
	}
	return (&vrrp.Metadata{Group: vrrp.Group{Name: a.group}}).InstanceName()
}

// recordLocked stores a transition from the current role; a.mu is held.
func (a *Agent) recordLocked(t vrrp.Transition, spool string) (vrrp.Transition, notifyOutcome, error) {
	t.From, t.Member, t.Group = a.role, a.self, a.group
	if hr := a.health.Load(); t.To == vrrp.RoleFault && t.Note == "" && spool == "" && hr != nil {
		// keepalived's FAULT says nothing of why: the agent's own checks
		// (their track files) are the usual cause.
		t.Note = faultNote(hr.Status())
	}
	t.Recorded = time.Now()
	rec, dup, err := a.store.Record(t, spool)
	if err != nil {
		return vrrp.Transition{}, notifyRecorded, err
	}
	if dup {
		return vrrp.Transition{}, notifyDuplicate, nil
	}
	if a.role != rec.To {
		a.since = rec.At
		a.mismatchSince, a.mismatchRecorded = time.Time{}, false
	}
	a.role, a.vipPresent, a.lastAt = rec.To, rec.VIPPresent, rec.At
	if rec.VIP6Present != nil {
		a.vip6Present = *rec.VIP6Present
	}
	a.d.metrics.transition(rec.To)
	a.publishLocked()
	a.noteOutbox()
	a.log.Info("transition", "op", "record", "seq", rec.Seq, "group", rec.Group, "from", rec.From, "state", rec.To,
		"source", rec.Source, "vip_present", rec.VIPPresent, "note", rec.Note)
	kick(a.reportKick)
	kick(a.statusChanged)
	return rec, notifyRecorded, nil
}

// drainSpool records the events the notify hook spooled, oldest first,
// deleting each file only once its event is durably recorded.
func (a *Agent) drainSpool() {
	names, err := control.SpoolList(a.cfg.SpoolDir)
	if err != nil {
		a.log.Error("read spool", "op", "spool", "err", err)
		return
	}
	for _, name := range names {
		path := filepath.Join(a.cfg.SpoolDir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			a.log.Error("read spooled event", "op", "spool", "file", name, "err", err)
			continue
		}
		req, n, err := control.DecodeNotify(data)
		if err != nil {
			// Keep it for a person to look at, out of the drain's way.
			a.log.Error("invalid spooled event set aside", "op", "spool", "file", name, "err", err)
			if err := os.Rename(path, path+".invalid"); err != nil {
				a.log.Error("set aside spooled event", "op", "spool", "file", name, "err", err)
			}
			continue
		}
		rec, outcome, err := a.notify(req, n, name)
		if err != nil {
			a.log.Error("record spooled event; left in the spool", "op", "spool", "file", name, "err", err)
			return
		}
		a.log.Info("spooled event", "op", "spool", "file", name, "state", n.State, "outcome", outcome.String(), "seq", rec.Seq)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Error("remove spooled event", "op", "spool", "file", name, "err", err)
			continue
		}
		if outcome == notifyRecorded || outcome == notifyDuplicate {
			if err := a.store.ForgetSpool(name); err != nil {
				a.log.Warn("forget spooled event", "op", "spool", "file", name, "err", err)
			}
		}
	}
}

// reconcileLoop compares keepalived's liveness, the recorded role and the
// VIP on the interface, on a ticker and whenever the interface changes.
func (a *Agent) reconcileLoop(ctx context.Context) error {
	t := time.NewTicker(a.cfg.ReconcileInterval)
	defer t.Stop()
	a.reconcile(ctx)
	a.lastReconcile.Store(time.Now().UnixNano())
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.drainSpool()
		case <-a.linkChanged:
		}
		a.reconcile(ctx)
		a.lastReconcile.Store(time.Now().UnixNano())
	}
}

// healthy reports whether the reconcile loop ran recently enough to keep
// pinging a watchdog of interval wd.
func (a *Agent) healthy(wd time.Duration) bool {
	limit := max(wd, 3*a.cfg.ReconcileInterval+5*time.Second)
	return time.Since(time.Unix(0, a.lastReconcile.Load())) < limit
}

// reconcile makes the recorded role agree with what the machine shows:
//   - keepalived not running (seen twice, half an interval apart): a VIP
//     left on the interface is removed, and STOP is recorded;
//   - keepalived running, the role MASTER but the VIP not on the
//     interface (or the VIP there without MASTER) for longer than the
//     grace: recorded once, with a note, so that hostsync sees it.
func (a *Agent) reconcile(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	running, rerr := a.d.keepalived.Running(cctx)
	cancel()
	if rerr != nil {
		a.log.Warn("cannot tell whether keepalived runs", "op", "reconcile", "err", rerr)
	}
	a.reconcileAs(running, rerr, 0)
}

// reconcileExited is reconcile once keepalived's main process (pid) was
// seen exiting and no keepalived runs since (kadeath.go): the exit is
// certain, so a VIP left on the interface is removed at once, without
// the second look half an interval later.
func (a *Agent) reconcileExited(pid int) {
	a.reconcileAs(false, nil, pid)
}

// reconcileAs is reconcile with keepalived's liveness known; exited is
// the pid of a keepalived whose exit is certain, 0 when none.
func (a *Agent) reconcileAs(running bool, rerr error, exited int) {
	now := a.d.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	vip := a.vipAddrLocked()
	present, perr := false, error(nil)
	if vip.IsValid() {
		present, perr = hasAddr(a.d.link, vip)
		if perr != nil {
			a.log.Warn("cannot read the interface's addresses", "op", "reconcile", "iface", a.cfg.Interface, "err", perr)
		} else if present != a.vipPresent {
			a.vipPresent = present
			a.publishLocked()
			kick(a.statusChanged)
		}
	}
	present6 := a.vip6PresenceLocked()
	if present6 != nil && *present6 != a.vip6Present {
		a.vip6Present = *present6
		kick(a.statusChanged)
	}
	if rerr == nil {
		a.kaRunning = running
	}
	if rerr == nil && !running {
		a.mismatchSince, a.mismatchRecorded = time.Time{}, false
		if exited != 0 {
			if a.stoppedSince.IsZero() {
				a.stoppedSince = now
			}
			a.keepalivedGoneLocked(present && perr == nil, present6, now, exited)
			return
		}
		if a.stoppedSince.IsZero() {
			a.stoppedSince = now
			return
		}
		if now.Sub(a.stoppedSince) < a.cfg.ReconcileInterval/2 {
			return
		}
		a.keepalivedGoneLocked(present && perr == nil, present6, now, 0)
		return
	}
	a.stoppedSince = time.Time{}
	if !vip.IsValid() || perr != nil || rerr != nil {
		return
	}
	if (a.role == vrrp.RoleMaster) == present {
		a.mismatchSince, a.mismatchRecorded = time.Time{}, false
		return
	}
	if a.mismatchSince.IsZero() {
		a.mismatchSince = now
	}
	if a.mismatchRecorded || now.Sub(a.mismatchSince) < a.cfg.ReconcileGrace {
		return
	}
	a.mismatchRecorded = true
	t := vrrp.Transition{To: vrrp.RoleMaster, At: now, Source: SourceNetlink, VIPPresent: present, VIP6Present: present6}
	if present {
		t.Note = fmt.Sprintf("the VIP %s is on %s without a MASTER notify from keepalived", a.vip, a.cfg.Interface)
	} else {
		t.Note = fmt.Sprintf("MASTER without the VIP %s on %s", a.vip, a.cfg.Interface)
	}
	t.Note += a.vip6NoteLocked(present6)
	if _, _, err := a.recordLocked(t, ""); err != nil {
		a.log.Error("record reconciliation", "op", "reconcile", "err", err)
	}
}

// keepalivedGoneLocked handles keepalived not running: remove a stale VIP
// and record STOP. exited is the pid of a keepalived whose exit was seen
// (the notes say so), 0 when keepalived was found not running twice.
// a.mu is held.
func (a *Agent) keepalivedGoneLocked(present bool, present6 *bool, now time.Time, exited int) {
	// A keepalived that stops cleanly removes its VIP itself: one left
	// behind by a keepalived seen exiting was most likely killed.
	gone, goneVIP := "keepalived is not running", "keepalived is not running; "
	if exited != 0 {
		gone, goneVIP = "keepalived exited", "keepalived exited (killed?): "
	}
	if present6 != nil && *present6 {
		// The IPv6 VIP rides on the same instance: left behind with it.
		a.removeStaleVIP6Locked(exited)
		if !present {
			*present6 = a.vip6Present
			if a.role == vrrp.RoleStop {
				return
			}
			t := vrrp.Transition{To: vrrp.RoleStop, At: now, Source: SourceReconcile, VIP6Present: present6,
				Note: fmt.Sprintf("%sremoved the stale IPv6 VIP %s from %s", goneVIP, a.vip6, a.cfg.Interface)}
			if *present6 {
				t.Note = fmt.Sprintf("%sthe IPv6 VIP %s is still on %s", goneVIP, a.vip6, a.cfg.Interface)
			}
			if _, _, err := a.recordLocked(t, ""); err != nil {
				a.log.Error("record stale VIP", "op", "reconcile", "err", err)
			}
			return
		}
		*present6 = a.vip6Present
	}
	if present {
		addr := a.vipAddrLocked()
		t := vrrp.Transition{To: vrrp.RoleStop, At: now, Source: SourceReconcile, VIP6Present: present6}
		err := a.d.link.RemoveAddr(addr)
		if err != nil {
			// keepalived's VRRP process outlives a main process killed
			// alone for a moment and removes the VIP itself: gone is gone.
			if still, herr := hasAddr(a.d.link, addr); herr == nil && !still {
				err = nil
			}
		}
		if err != nil {
			a.log.Error("remove stale VIP", "op", "reconcile", "vip", a.vip.String(), "iface", a.cfg.Interface, "pid", exited, "err", err)
			t.VIPPresent = true
			t.Note = fmt.Sprintf("%sthe VIP %s is still on %s: removing it failed: %v", goneVIP, a.vip, a.cfg.Interface, err)
		} else {
			a.log.Warn(gone+": removed the stale VIP", "op", "reconcile", "vip", a.vip.String(), "iface", a.cfg.Interface, "pid", exited)
			t.Note = fmt.Sprintf("%sremoved the stale VIP %s from %s", goneVIP, a.vip, a.cfg.Interface)
		}
		if a.role == vrrp.RoleStop && t.VIPPresent && a.lastAt.After(now.Add(-time.Minute)) {
			return // removal keeps failing: recorded within the last minute already
		}
		if _, _, err := a.recordLocked(t, ""); err != nil {
			a.log.Error("record stale VIP", "op", "reconcile", "err", err)
		}
		return
	}
	if a.role == vrrp.RoleStop {
		return
	}
	_, _, err := a.recordLocked(vrrp.Transition{To: vrrp.RoleStop, At: now, Source: SourceReconcile, Note: gone}, "")
	if err != nil {
		a.log.Error("record keepalived stop", "op", "reconcile", "err", err)
	}
}
