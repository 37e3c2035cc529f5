package testpoll

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that records Fatalf instead of stopping the
// test, so the failure path can be checked.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	for _, a := range args {
		if err, ok := a.(error); ok {
			r.failed += " " + err.Error()
		}
	}
}

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	Poll(t, time.Minute, time.Millisecond, "three calls", func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
	m := 0
	Until(t, time.Minute, time.Millisecond, "two calls", func() bool { m++; return m == 2 })
	if m != 2 {
		t.Fatalf("cond called %d times, want 2", m)
	}
}

func TestPollFailsAtTheDeadlineWithTheLastReason(t *testing.T) {
	r := &recorder{TB: t}
	Poll(r, 5*time.Millisecond, time.Millisecond, "never", func() error { return errors.New("still 3 left") })
	if !strings.Contains(r.failed, "still 3 left") {
		t.Fatalf("Poll failed with %q, want the condition's last error", r.failed)
	}
	r = &recorder{TB: t}
	Until(r, 5*time.Millisecond, time.Millisecond, "never", func() bool { return false })
	if !strings.Contains(r.failed, "timed out") {
		t.Fatalf("Until failed with %q", r.failed)
	}
}
