// Package viptest provides fakes for package vip's kernel side: a Netlink
// that keeps links and addresses in memory and expires addresses on a fake
// clock as the kernel would, an Announcer that records what it would send,
// and a Clock the test drives. Every fake may share a Journal, which orders
// their calls in one list.
package viptest

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/directorate/directorate/vip"
)

// Journal records successful calls across fakes in the order they happened.
type Journal struct {
	mu      sync.Mutex
	entries []string
}

// Entries returns a copy of the journal.
func (j *Journal) Entries() []string {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.entries)
}

func (j *Journal) add(format string, args ...any) {
	if j == nil {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, fmt.Sprintf(format, args...))
}

// Clock is a fake vip.Clock. In auto mode After advances time by d at once
// and fires, so code that waits runs straight through while time moves as if
// it had waited; otherwise After fires only when Advance passes its deadline.
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

var _ vip.Clock = (*Clock)(nil)

// NewClock returns a clock at start.
func NewClock(start time.Time, auto bool) *Clock { return &Clock{now: start, auto: auto} }

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
	if c.auto {
		c.now = c.now.Add(d)
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock forward and fires the waiters now due.
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
	c.waiters = kept
}

// Waiters counts the After channels not yet fired.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// Sleeps lists every duration After was called with.
func (c *Clock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sleeps)
}
