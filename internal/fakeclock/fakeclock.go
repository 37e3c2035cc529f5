// Package fakeclock is the hand-driven clock the fakes of vip, probes and
// the watchdog share: each of those packages declares its own small Clock
// interface (Now and After), and this type satisfies all of them.
package fakeclock

import (
	"slices"
	"sync"
	"time"
)

// Clock is a fake clock. After fires only when Advance passes its deadline,
// or, in auto mode, at once with time moved forward as if it had waited, so
// code that sleeps runs straight through. It is safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	auto    bool
	waiters []waiter
	sleeps  []time.Duration
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// New returns a clock standing at start that moves only with Advance.
func New(start time.Time) *Clock { return &Clock{now: start} }

// NewAuto returns a clock at start whose After advances time by its
// duration and fires at once.
func NewAuto(start time.Time) *Clock { return &Clock{now: start, auto: true} }

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After records d and returns a channel that fires once the clock has
// advanced by d; at once when d is not positive.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	ch := make(chan time.Time, 1)
	switch {
	case c.auto:
		c.now = c.now.Add(max(d, 0))
		ch <- c.now
	case d <= 0:
		ch <- c.now
	default:
		c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	}
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

// Waiters counts the After channels not yet fired: it tells a test when the
// goroutines it drives are asleep again.
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
	return slices.MinFunc(c.waiters, func(a, b waiter) int { return a.at.Compare(b.at) }).at, true
}

// Sleeps lists every duration After was called with.
func (c *Clock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sleeps)
}

// AfterCalls counts calls to After, so a test can tell that a goroutine
// went round its loop once more.
func (c *Clock) AfterCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sleeps)
}
