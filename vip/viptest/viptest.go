// Package viptest provides fakes for package vip's kernel side: a Netlink
// that keeps links and addresses in memory and expires addresses on a fake
// clock as the kernel would, an Announcer that records what it would send,
// and a Clock the test drives. Every fake may share a Journal, which orders
// their calls in one list.
package viptest

import (
	"fmt"
	"github.com/directorate/directorate/internal/fakeclock"
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
type Clock = fakeclock.Clock

var _ vip.Clock = (*Clock)(nil)

// NewClock returns a clock at start, in auto mode if auto is set.
func NewClock(start time.Time, auto bool) *Clock {
	if auto {
		return fakeclock.NewAuto(start)
	}
	return fakeclock.New(start)
}
