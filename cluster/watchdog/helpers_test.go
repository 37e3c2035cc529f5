package watchdog_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/directorate/directorate/internal/testlog"
	"github.com/directorate/directorate/internal/testpoll"
)

func newTestLogger(t *testing.T) (*slog.Logger, *testlog.Sink) { return testlog.New(t) }

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testpoll.Until(t, 10*time.Second, time.Millisecond, what, cond)
}
