package watchdog_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directorate/directorate/cluster/watchdog"
	"github.com/directorate/directorate/cluster/watchdog/watchdogtest"
)

// callbacks records the detector's callbacks in order.
type callbacks struct {
	mu     sync.Mutex
	calls  []string
	stalls []time.Duration
	gaps   []time.Duration
}

func (c *callbacks) onStall(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "stall")
	c.stalls = append(c.stalls, d)
}

func (c *callbacks) onRecover(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, "recover")
	c.gaps = append(c.gaps, d)
}

func (c *callbacks) seq() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.calls, ",")
}

// monitor drives a StallDetector's Run goroutine with a fake clock.
type monitor struct {
	t   *testing.T
	clk *watchdogtest.Clock
}

// step advances the clock by d once Run is waiting, and returns after Run
// has finished the resulting check (and any callback) and waits again.
func (m monitor) step(d time.Duration) {
	m.t.Helper()
	eventually(m.t, "monitor waiting", func() bool { return m.clk.Waiters() == 1 })
	n := m.clk.AfterCalls()
	m.clk.Advance(d)
	eventually(m.t, "monitor checked", func() bool { return m.clk.AfterCalls() > n })
}

func startDetector(t *testing.T, bound, check time.Duration) (*watchdog.StallDetector, *callbacks, monitor) {
	t.Helper()
	clk := watchdogtest.NewClock(t0)
	cb := &callbacks{}
	log, _ := newTestLogger(t)
	d, err := watchdog.NewStallDetector(watchdog.StallOptions{
		Bound: bound, CheckInterval: check,
		OnStall: cb.onStall, OnRecover: cb.onRecover,
		Clock: clk, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return d, cb, monitor{t: t, clk: clk}
}

func TestStallDetectorFiresOnceAndRecovers(t *testing.T) {
	d, cb, m := startDetector(t, 2*time.Second, 500*time.Millisecond)

	// A loop that beats every check interval never stalls.
	for range 10 {
		m.step(500 * time.Millisecond)
		d.Beat()
	}
	if got := cb.seq(); got != "" {
		t.Fatalf("callbacks on a healthy loop: %q", got)
	}
	lastBeat := d.LastBeat()

	// The loop stops. At exactly the bound it is not yet a stall.
	for range 4 {
		m.step(500 * time.Millisecond)
	}
	if got := cb.seq(); got != "" || d.Stalled() {
		t.Fatalf("stall declared at exactly the bound: %q", got)
	}
	m.step(500 * time.Millisecond)
	if got := cb.seq(); got != "stall" || !d.Stalled() {
		t.Fatalf("after the bound: callbacks %q stalled=%v, want one stall", got, d.Stalled())
	}
	if cb.stalls[0] != 2500*time.Millisecond {
		t.Errorf("OnStall got %s silent, want 2.5s", cb.stalls[0])
	}
	// Still stalled: no second call.
	for range 10 {
		m.step(500 * time.Millisecond)
	}
	if got := cb.seq(); got != "stall" {
		t.Fatalf("a long stall gave callbacks %q, want exactly one stall", got)
	}

	// The loop resumes; recovery is reported once, with the real gap.
	d.Beat()
	resumedGap := d.LastBeat().Sub(lastBeat)
	d.Beat()
	m.step(500 * time.Millisecond)
	d.Beat()
	m.step(500 * time.Millisecond)
	if got := cb.seq(); got != "stall,recover" || d.Stalled() {
		t.Fatalf("after resuming: %q stalled=%v", got, d.Stalled())
	}
	if cb.gaps[0] != resumedGap {
		t.Errorf("OnRecover gap %s, want %s", cb.gaps[0], resumedGap)
	}

	// A second stall fires again.
	for range 5 {
		m.step(500 * time.Millisecond)
	}
	if got := cb.seq(); got != "stall,recover,stall" {
		t.Fatalf("second stall: %q", got)
	}
}

// TestStallDetectorNeverStarted: a loop that never beats is a stall one
// bound after construction.
func TestStallDetectorNeverStarted(t *testing.T) {
	_, cb, m := startDetector(t, time.Second, 0)
	for range 4 {
		m.step(250 * time.Millisecond)
	}
	if got := cb.seq(); got != "" {
		t.Fatalf("stall before the bound: %q", got)
	}
	m.step(250 * time.Millisecond)
	if got := cb.seq(); got != "stall" {
		t.Fatalf("no stall for a loop that never beat: %q", got)
	}
}

// TestStallDetectorRealClock runs on the wall clock with short bounds, to
// check Run against real timers; it polls, so a slow machine only makes it
// slower.
func TestStallDetectorRealClock(t *testing.T) {
	var stalls, recovers atomic.Int32
	log, _ := newTestLogger(t)
	d, err := watchdog.NewStallDetector(watchdog.StallOptions{
		Bound:     50 * time.Millisecond,
		OnStall:   func(time.Duration) { stalls.Add(1) },
		OnRecover: func(time.Duration) { recovers.Add(1) },
		Logger:    log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	// No beats: the detector notices.
	eventually(t, "stall", func() bool { return stalls.Load() == 1 })
	// Beat until recovery is seen.
	eventually(t, "recovery", func() bool {
		d.Beat()
		return recovers.Load() == 1
	})
	if n := stalls.Load(); n != 1 {
		t.Fatalf("stalls = %d, want 1", n)
	}
}

func TestNewStallDetectorValidation(t *testing.T) {
	noop := func(time.Duration) {}
	for _, tc := range []struct {
		name string
		o    watchdog.StallOptions
		want string
	}{
		{"zero bound", watchdog.StallOptions{OnStall: noop}, "bound: 0s must be positive"},
		{"check longer than bound", watchdog.StallOptions{Bound: time.Second, CheckInterval: 2 * time.Second, OnStall: noop}, "check interval: 2s must be positive and at most the bound 1s"},
		{"negative check", watchdog.StallOptions{Bound: time.Second, CheckInterval: -1, OnStall: noop}, "check interval"},
		{"no OnStall", watchdog.StallOptions{Bound: time.Second}, "OnStall: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := watchdog.NewStallDetector(tc.o)
			checkErr(t, err, tc.want)
		})
	}
}

func BenchmarkBeat(b *testing.B) {
	d, err := watchdog.NewStallDetector(watchdog.StallOptions{Bound: time.Second, OnStall: func(time.Duration) {}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		d.Beat()
	}
}
