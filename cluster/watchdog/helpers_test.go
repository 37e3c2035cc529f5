package watchdog_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testLogger sends log lines to t.Log and keeps their messages so tests can
// assert on what was logged.
type testLogger struct {
	t    *testing.T
	mu   sync.Mutex
	msgs []string
}

func newTestLogger(t *testing.T) (*slog.Logger, *testLogger) {
	tl := &testLogger{t: t}
	return slog.New(slog.NewTextHandler(tl, &slog.HandlerOptions{Level: slog.LevelDebug})), tl
}

func (l *testLogger) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	l.t.Log(line)
	l.mu.Lock()
	l.msgs = append(l.msgs, line)
	l.mu.Unlock()
	return len(p), nil
}

// count counts log lines containing sub.
func (l *testLogger) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(slices.DeleteFunc(slices.Clone(l.msgs), func(m string) bool { return !strings.Contains(m, sub) }))
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(time.Millisecond):
		}
	}
}

// joined returns every logged line, one per line.
func (l *testLogger) joined() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.msgs, "\n")
}
