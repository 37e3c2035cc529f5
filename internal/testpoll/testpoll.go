// Package testpoll waits in tests for a condition to hold, with a deadline:
// the project's tests poll instead of sleeping a fixed time, and every
// package polls the same way.
package testpoll

import (
	"testing"
	"time"
)

// Poll calls cond every interval until it returns nil. Once timeout has
// passed it fails t, naming what it waited for and cond's last error.
func Poll(t testing.TB, timeout, interval time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
			return
		}
		time.Sleep(interval)
	}
}

// Until is Poll for a condition that gives no reason.
func Until(t testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
			return
		}
		time.Sleep(interval)
	}
}
