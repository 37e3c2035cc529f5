package hooks_test

import (
	"context"
	"github.com/directorate/directorate/internal/testlog"
	"log/slog"
	"testing"
	"time"
)

func newTestLogger(t *testing.T) (*slog.Logger, *testlog.Sink) { return testlog.New(t) }

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
