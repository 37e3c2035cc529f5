package watchdog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// StallOptions configure a StallDetector.
type StallOptions struct {
	// Bound is how long the control loop may go without a Beat before it
	// counts as stalled. Required.
	Bound time.Duration
	// CheckInterval is how often the monitor looks; it must not exceed
	// Bound. Default Bound/4, so a stall is noticed within 1.25·Bound.
	CheckInterval time.Duration
	// OnStall is called once per stall with the time since the last beat.
	// The caller releases the VIPs and steps down here.
	OnStall func(silentFor time.Duration)
	// OnRecover is called once when beats resume after a stall, with the
	// gap between the last beat before the stall and the first after it.
	OnRecover func(gap time.Duration)
	// Clock defaults to the system clock.
	Clock Clock
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// StallDetector notices a control loop that stopped iterating. The loop
// calls Beat each iteration; Run watches from its own goroutine. Both
// callbacks run on Run's goroutine, one at a time and in order (OnStall,
// OnRecover, OnStall, ...), so a callback that blocks delays only the next
// check, never the loop.
type StallDetector struct {
	bound, check time.Duration
	onStall      func(time.Duration)
	onRecover    func(time.Duration)
	clock        Clock
	log          *slog.Logger

	mu         sync.Mutex
	last       time.Time // last beat, or construction time before the first
	stalled    bool
	stallStart time.Time // last beat before the current stall
	resumed    time.Time // first beat after it; zero until one arrives
}

// NewStallDetector validates o. The loop counts as having beaten at
// construction, so a loop that never starts is a stall after Bound.
func NewStallDetector(o StallOptions) (*StallDetector, error) {
	if o.Bound <= 0 {
		return nil, fmt.Errorf("stall detector bound: %s must be positive", o.Bound)
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = o.Bound / 4
	}
	if o.CheckInterval <= 0 || o.CheckInterval > o.Bound {
		return nil, fmt.Errorf("stall detector check interval: %s must be positive and at most the bound %s", o.CheckInterval, o.Bound)
	}
	if o.OnStall == nil {
		return nil, errors.New("stall detector OnStall: required")
	}
	if o.OnRecover == nil {
		o.OnRecover = func(time.Duration) {}
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &StallDetector{
		bound:     o.Bound,
		check:     o.CheckInterval,
		onStall:   o.OnStall,
		onRecover: o.OnRecover,
		clock:     o.Clock,
		log:       o.Logger.With("component", "stall-detector"),
		last:      o.Clock.Now(),
	}, nil
}

// Beat records one control-loop iteration. It only takes a lock, so it is
// cheap enough for every iteration.
func (d *StallDetector) Beat() {
	now := d.clock.Now()
	d.mu.Lock()
	d.last = now
	if d.stalled && d.resumed.IsZero() {
		d.resumed = now
	}
	d.mu.Unlock()
}

// LastBeat returns the time of the last beat, for Health.LoopBeat.
func (d *StallDetector) LastBeat() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// Stalled reports whether the monitor currently considers the loop stalled.
func (d *StallDetector) Stalled() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stalled
}

// Run monitors until ctx is done. Call it once, from one goroutine: the
// callbacks run on it.
func (d *StallDetector) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.clock.After(d.check):
		}
		d.checkOnce()
	}
}

func (d *StallDetector) checkOnce() {
	now := d.clock.Now()
	d.mu.Lock()
	silent := now.Sub(d.last)
	switch {
	case !d.stalled && silent > d.bound:
		d.stalled, d.stallStart, d.resumed = true, d.last, time.Time{}
		d.mu.Unlock()
		d.log.Error("control loop stalled", "silent_for", silent, "bound", d.bound)
		d.onStall(silent)
	case d.stalled && silent <= d.bound:
		d.stalled = false
		// Only a clock that steps backwards gets here without a resumed
		// beat; the newest beat is then the best estimate.
		resumed := d.resumed
		if resumed.IsZero() {
			resumed = d.last
		}
		gap := resumed.Sub(d.stallStart)
		d.mu.Unlock()
		d.log.Warn("control loop recovered", "gap", gap)
		d.onRecover(gap)
	default:
		d.mu.Unlock()
	}
}
