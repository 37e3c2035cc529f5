// Package testlog gives tests a *slog.Logger whose lines go to t.Log, as
// the project's testing rules ask, and are kept so a test can assert on
// what was logged.
package testlog

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Sink receives a test's log lines.
type Sink struct {
	tb    testing.TB
	mu    sync.Mutex
	lines []string
}

// New returns a debug-level logger writing to tb.Log, and the Sink that
// keeps its lines.
func New(tb testing.TB) (*slog.Logger, *Sink) {
	s := &Sink{tb: tb}
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug})), s
}

// Logger returns only the logger, for tests that do not inspect the lines.
func Logger(tb testing.TB) *slog.Logger {
	l, _ := New(tb)
	return l
}

// Write implements io.Writer for the slog handler.
func (s *Sink) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	s.tb.Log(line)
	s.mu.Lock()
	s.lines = append(s.lines, line)
	s.mu.Unlock()
	return len(p), nil
}

// Find returns the lines that contain every one of subs.
func (s *Sink) Find(subs ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(s.lines), func(line string) bool {
		for _, sub := range subs {
			if !strings.Contains(line, sub) {
				return true
			}
		}
		return false
	})
}

// Count counts the lines that contain every one of subs.
func (s *Sink) Count(subs ...string) int { return len(s.Find(subs...)) }
