// Package probestest provides fakes for package probes: a Pinger whose
// answers the test scripts per address and which records every call, and
// a Clock the test advances by hand.
package probestest

import (
	"slices"
	"sync"
	"time"

	"github.com/directorate/directorate/probes"
)

// Clock is a fake probes.Clock: After fires only when Advance moves the
// clock past its deadline.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []clockWaiter
	sleeps  []time.Duration
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

var _ probes.Clock = (*Clock)(nil)

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After records d and returns a channel that fires once the clock has
// advanced by d.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, clockWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock forward by d and fires the waiters now due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

// Waiters counts the After channels not yet fired: with one goroutine per
// probe target, it tells a test when every prober is asleep again.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// NextDeadline reports when the earliest pending After fires.
func (c *Clock) NextDeadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.waiters) == 0 {
		return time.Time{}, false
	}
	return slices.MinFunc(c.waiters, func(a, b clockWaiter) int { return a.at.Compare(b.at) }).at, true
}

// Sleeps lists every duration After was called with.
func (c *Clock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sleeps)
}
