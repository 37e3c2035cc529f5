package probestest

import (
	"time"

	"github.com/directorate/directorate/internal/fakeclock"
	"github.com/directorate/directorate/probes"
)

// Clock is a fake probes.Clock driven by the test with Advance; see
// fakeclock.Clock for Waiters, NextDeadline and Sleeps.
type Clock = fakeclock.Clock

var _ probes.Clock = (*Clock)(nil)

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return fakeclock.New(start) }
