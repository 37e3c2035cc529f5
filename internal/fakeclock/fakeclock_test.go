package fakeclock

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fired(ch <-chan time.Time) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestAdvanceFiresDueWaiters(t *testing.T) {
	c := New(t0)
	a, b := c.After(time.Second), c.After(3*time.Second)
	if !fired(c.After(0)) {
		t.Error("After(0) must fire at once")
	}
	c.Advance(time.Second)
	if fa, fb := fired(a), fired(b); !fa || fb || c.Waiters() != 1 {
		t.Fatalf("after 1s: a fired %v, b fired %v, waiters %d; want a only, 1 waiting", fa, fb, c.Waiters())
	}
	if at, ok := c.NextDeadline(); !ok || !at.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("next deadline %v %v", at, ok)
	}
	c.Advance(2 * time.Second)
	if !fired(b) || c.Waiters() != 0 || c.AfterCalls() != 3 {
		t.Fatalf("b not fired, or %d waiters, %d calls", c.Waiters(), c.AfterCalls())
	}
}

func TestAutoMovesTime(t *testing.T) {
	c := NewAuto(t0)
	if !fired(c.After(2*time.Second)) || !c.Now().Equal(t0.Add(2*time.Second)) {
		t.Fatalf("auto clock at %v", c.Now())
	}
	if got := c.Sleeps(); len(got) != 1 || got[0] != 2*time.Second {
		t.Fatalf("sleeps %v", got)
	}
}
