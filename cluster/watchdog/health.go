package watchdog

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Health is what the leader knows about itself when it considers petting the
// watchdog.
type Health struct {
	// LoopBeat is when the control loop last completed an iteration
	// (StallDetector.LastBeat); zero if it never has.
	LoopBeat time.Time
	// LeaseOK is true while the raft leader lease holds.
	LeaseOK bool
	// VIPOpsSince is when the oldest VIP operation still in flight (claim,
	// release, renewal) started; zero when none is in flight.
	VIPOpsSince time.Time
}

// Bounds say how old a loop beat and an in-flight VIP operation may be for
// the leader to count as healthy.
type Bounds struct {
	// LoopStall is the largest age of Health.LoopBeat; normally the stall
	// detector's bound.
	LoopStall time.Duration
	// VIPOpStuck is the longest a VIP operation may stay in flight.
	VIPOpStuck time.Duration
}

// Validate checks that both bounds are positive.
func (b Bounds) Validate() error {
	var errs []error
	if b.LoopStall <= 0 {
		errs = append(errs, fmt.Errorf("bounds.loop_stall: %s must be positive", b.LoopStall))
	}
	if b.VIPOpStuck <= 0 {
		errs = append(errs, fmt.Errorf("bounds.vip_op_stuck: %s must be positive", b.VIPOpStuck))
	}
	return errors.Join(errs...)
}

// OK reports whether the leader is healthy at now: its loop beat within
// b.LoopStall, its lease holds, and no VIP operation has been in flight for
// longer than b.VIPOpStuck. When it is not, reason lists every failed
// condition, for the log. Bounds that are not positive fail, so a
// misconfiguration stops petting rather than hiding a hang.
func (h Health) OK(now time.Time, b Bounds) (ok bool, reason string) {
	var why []string
	switch {
	case b.LoopStall <= 0:
		why = append(why, fmt.Sprintf("loop stall bound %s is not positive", b.LoopStall))
	case h.LoopBeat.IsZero():
		why = append(why, "control loop has not beaten yet")
	case now.Sub(h.LoopBeat) > b.LoopStall:
		why = append(why, fmt.Sprintf("control loop silent for %s (bound %s)", now.Sub(h.LoopBeat), b.LoopStall))
	}
	if !h.LeaseOK {
		why = append(why, "raft leader lease not held")
	}
	switch {
	case b.VIPOpStuck <= 0:
		why = append(why, fmt.Sprintf("VIP operation bound %s is not positive", b.VIPOpStuck))
	case !h.VIPOpsSince.IsZero() && now.Sub(h.VIPOpsSince) > b.VIPOpStuck:
		why = append(why, fmt.Sprintf("VIP operation in flight for %s (bound %s)", now.Sub(h.VIPOpsSince), b.VIPOpStuck))
	}
	if len(why) > 0 {
		return false, strings.Join(why, "; ")
	}
	return true, ""
}
