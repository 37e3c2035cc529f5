package probes_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/probes"
	"github.com/directorate/directorate/probes/probestest"
)

// schedRig is a running Scheduler on a fake checker, recording every
// OnChange.
type schedRig struct {
	t       *testing.T
	checker *probestest.Checker
	s       *probes.Scheduler

	mu      sync.Mutex
	changes []probes.CheckStatus
}

func startScheduler(t *testing.T) *schedRig {
	t.Helper()
	r := &schedRig{t: t, checker: probestest.NewChecker()}
	s, err := probes.NewScheduler(probes.SchedulerOptions{
		Checkers: r.checker.Checkers(),
		Logger:   testLogger(t),
		OnChange: func(st probes.CheckStatus) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.changes = append(r.changes, st)
		},
	})
	if err != nil {
		t.Fatalf("NewScheduler: %v", err)
	}
	r.s = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

// changesOf returns the OnChange calls for spec, in order.
func (r *schedRig) changesOf(spec probes.CheckSpec) []probes.CheckStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []probes.CheckStatus
	for _, c := range r.changes {
		if c.Spec == spec {
			out = append(out, c)
		}
	}
	return out
}

func (r *schedRig) status(spec probes.CheckSpec) (probes.CheckStatus, bool) {
	for _, st := range r.s.Statuses() {
		if st.Spec == spec {
			return st, true
		}
	}
	return probes.CheckStatus{}, false
}

// waitHealth waits until spec's n-th change (from 1) is to h, and
// returns it.
func (r *schedRig) waitChange(spec probes.CheckSpec, n int, h probes.Health) probes.CheckStatus {
	r.t.Helper()
	waitFor(r.t, "change "+string(h)+" of "+spec.String(), func() bool { return len(r.changesOf(spec)) >= n })
	got := r.changesOf(spec)[n-1]
	if got.Health != h {
		r.t.Fatalf("change %d of %s is to %s, want %s (all: %+v)", n, spec, got.Health, h, r.changesOf(spec))
	}
	return got
}

// fastSpec is a TCP check of target every 10 ms.
func fastSpec(target string, rise, fall int) probes.CheckSpec {
	return probes.CheckSpec{
		Kind: probes.CheckTCP, Target: netip.MustParseAddrPort(target),
		Interval: 10 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: rise, Fall: fall,
	}
}

func TestSchedulerRiseAndFall(t *testing.T) {
	r := startScheduler(t)
	spec := fastSpec("192.0.2.1:80", 3, 2)
	r.s.Set([]probes.CheckSpec{spec})
	if st, ok := r.status(spec); !ok || st.Health != probes.HealthUnknown {
		t.Fatalf("a new check is %+v, want unknown", st)
	}
	up := r.waitChange(spec, 1, probes.HealthUp)
	if up.Successes != 3 || up.Failures != 0 || up.Since.IsZero() || up.LastRun.IsZero() || up.LastError != "" {
		t.Errorf("up after %d successes (want rise=3): %+v", up.Successes, up)
	}

	r.checker.SetUp(spec.Target, false)
	down := r.waitChange(spec, 2, probes.HealthDown)
	if down.Failures != 2 || down.Successes != 0 || !strings.Contains(down.LastError, "target down") {
		t.Errorf("down after %d failures (want fall=2): %+v", down.Failures, down)
	}
	if !down.Since.After(up.Since) {
		t.Errorf("Since did not move: up %s, down %s", up.Since, down.Since)
	}

	r.checker.SetUp(spec.Target, true)
	again := r.waitChange(spec, 3, probes.HealthUp)
	if again.Successes != 3 {
		t.Errorf("back up after %d successes, want rise=3", again.Successes)
	}
	if n := len(r.changesOf(spec)); n != 3 {
		t.Errorf("%d changes, want exactly 3: %+v", n, r.changesOf(spec))
	}
}

func TestSchedulerNewCheckFallsToDown(t *testing.T) {
	r := startScheduler(t)
	spec := fastSpec("192.0.2.2:80", 1, 3)
	r.checker.SetUp(spec.Target, false)
	r.s.Set([]probes.CheckSpec{spec})
	down := r.waitChange(spec, 1, probes.HealthDown)
	if down.Failures != 3 {
		t.Errorf("unknown to down after %d failures, want fall=3", down.Failures)
	}
	if !strings.Contains(down.LastError, probestest.ErrDown.Error()) {
		t.Errorf("LastError = %q", down.LastError)
	}
}

func TestSchedulerFlappingNeverCrossesHysteresis(t *testing.T) {
	// Alternating results never make rise=2 successes or fall=2 failures
	// in a row, so the check stays unknown.
	spec := fastSpec("192.0.2.3:80", 2, 2)
	// A checker that alternates by call count.
	var mu sync.Mutex
	n := 0
	flip := checkerFunc(func(ctx context.Context, s probes.CheckSpec) error {
		mu.Lock()
		defer mu.Unlock()
		n++
		if n%2 == 0 {
			return errors.New("flap")
		}
		return nil
	})
	s, err := probes.NewScheduler(probes.SchedulerOptions{
		Checkers: map[probes.CheckKind]probes.Checker{probes.CheckTCP: flip},
		Logger:   testLogger(t),
		OnChange: func(st probes.CheckStatus) { t.Errorf("flapping check changed: %+v", st) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	s.Set([]probes.CheckSpec{spec})
	waitFor(t, "20 attempts", func() bool { mu.Lock(); defer mu.Unlock(); return n >= 20 })
	cancel()
	<-done
	if st := s.Statuses()[0]; st.Health != probes.HealthUnknown {
		t.Errorf("health %s, want unknown", st.Health)
	}
}

type checkerFunc func(context.Context, probes.CheckSpec) error

func (f checkerFunc) Check(ctx context.Context, s probes.CheckSpec) error { return f(ctx, s) }

func TestSchedulerDeduplicates(t *testing.T) {
	r := startScheduler(t)
	a := fastSpec("192.0.2.10:80", 1, 1)
	b := a
	b.Kind, b.Path = probes.CheckHTTP, "/health" // same server, a different check
	// Three services reference a; two reference b.
	r.s.Set([]probes.CheckSpec{a, b, a, a, b})
	if n := len(r.s.Statuses()); n != 2 {
		t.Fatalf("%d checks scheduled, want 2: %+v", n, r.s.Statuses())
	}
	r.waitChange(a, 1, probes.HealthUp)
	r.waitChange(b, 1, probes.HealthUp)
	waitFor(t, "10 checks of b", func() bool { return r.checker.CallsOf(b) >= 10 })
	// Run k of a check is due k intervals after its first: a check run
	// three times as often would be far ahead of the other.
	ca, cb := r.checker.CallsOf(a), r.checker.CallsOf(b)
	if ca > 2*cb+3 {
		t.Errorf("a ran %d times while b ran %d: a is not deduplicated", ca, cb)
	}
}

func TestSchedulerSetKeepsStateAndStopsRemoved(t *testing.T) {
	r := startScheduler(t)
	kept := fastSpec("192.0.2.20:80", 1, 1)
	removed := fastSpec("192.0.2.21:80", 1, 1)
	r.s.Set([]probes.CheckSpec{kept, removed})
	r.waitChange(kept, 1, probes.HealthUp)
	r.waitChange(removed, 1, probes.HealthUp)

	added := fastSpec("192.0.2.22:80", 1, 1)
	r.s.Set([]probes.CheckSpec{added, kept})
	before := r.checker.CallsOf(removed)
	st, ok := r.status(kept)
	if !ok || st.Health != probes.HealthUp {
		t.Fatalf("kept check lost its state: %+v", st)
	}
	if _, ok := r.status(removed); ok {
		t.Error("removed check still in Statuses")
	}
	r.waitChange(added, 1, probes.HealthUp)
	waitFor(t, "10 more checks of kept", func() bool { return r.checker.CallsOf(added) >= 10 })
	// One attempt may have been in flight at the Set.
	if after := r.checker.CallsOf(removed); after > before+1 {
		t.Errorf("removed check ran %d more times", after-before)
	}
	if n := len(r.changesOf(kept)); n != 1 {
		t.Errorf("kept check changed %d times, want only its first rise", n)
	}
	// A removed check that comes back starts afresh. Its first attempt
	// is due at once; hung, it cannot end (and move the check out of
	// unknown) before its 10 ms timeout, so the status read below does
	// not race it.
	r.checker.SetUp(removed.Target, false)
	r.checker.SetHung(removed.Target, true)
	r.s.Set([]probes.CheckSpec{kept, removed})
	// On a loaded machine the timeout may still pass first (fall is 1),
	// so down is fresh too; up could only be the removed check's old state.
	if st, _ := r.status(removed); st.Health == probes.HealthUp {
		t.Errorf("re-added check is %s, want unknown (or down once it ran): it kept the removed check's state", st.Health)
	}
	r.waitChange(removed, 2, probes.HealthDown)
	r.s.Set(nil)
	if n := len(r.s.Statuses()); n != 0 {
		t.Errorf("%d checks after Set(nil)", n)
	}
}

func TestSchedulerTimeoutBoundsAttempt(t *testing.T) {
	r := startScheduler(t)
	spec := fastSpec("192.0.2.30:80", 1, 1)
	spec.Interval, spec.Timeout = 100*time.Millisecond, 30*time.Millisecond
	r.checker.SetHung(spec.Target, true)
	r.s.Set([]probes.CheckSpec{spec})
	down := r.waitChange(spec, 1, probes.HealthDown)
	if !strings.Contains(down.LastError, "deadline exceeded") {
		t.Errorf("LastError = %q", down.LastError)
	}
	call := r.checker.Calls()[0]
	if d := call.Deadline.Sub(call.At); d <= 0 || d > spec.Timeout {
		t.Errorf("attempt's deadline %s after its start, want within the timeout %s", d, spec.Timeout)
	}
}

func TestSchedulerInvalidSpecIsReportedNotRun(t *testing.T) {
	r := startScheduler(t)
	bad := fastSpec("192.0.2.40:80", 0, 1)
	good := fastSpec("192.0.2.41:80", 1, 1)
	r.s.Set([]probes.CheckSpec{bad, good})
	r.waitChange(good, 1, probes.HealthUp)
	st, ok := r.status(bad)
	if !ok || st.Health != probes.HealthUnknown || !strings.Contains(st.LastError, "invalid check: rise: must be >= 1") {
		t.Errorf("invalid spec status: %+v", st)
	}
	waitFor(t, "5 checks of good", func() bool { return r.checker.CallsOf(good) >= 5 })
	if n := r.checker.CallsOf(bad); n != 0 {
		t.Errorf("invalid spec ran %d times", n)
	}
}

func TestSchedulerRunsOnlyOnce(t *testing.T) {
	s, err := probes.NewScheduler(probes.SchedulerOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run: %v", err)
	}
}

func TestNewSchedulerRejectsBadOptions(t *testing.T) {
	if _, err := probes.NewScheduler(probes.SchedulerOptions{}); err == nil || !strings.Contains(err.Error(), "logger") {
		t.Errorf("no logger: %v", err)
	}
	if _, err := probes.NewScheduler(probes.SchedulerOptions{Logger: testLogger(t), MaxInFlight: -1}); err == nil || !strings.Contains(err.Error(), "max in flight") {
		t.Errorf("negative MaxInFlight: %v", err)
	}
}

func TestSchedulerRealTCPCheck(t *testing.T) {
	// The default checkers are the real ones.
	l := listenTCP(t)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	var mu sync.Mutex
	var got []probes.CheckStatus
	s, err := probes.NewScheduler(probes.SchedulerOptions{Logger: testLogger(t), OnChange: func(st probes.CheckStatus) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, st)
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	spec := fastSpec(l.Addr().String(), 1, 1)
	spec.Timeout = 10 * time.Millisecond
	s.Set([]probes.CheckSpec{spec})
	waitFor(t, "up", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 && got[0].Health == probes.HealthUp })
	l.Close()
	waitFor(t, "down", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 && got[1].Health == probes.HealthDown })
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(got[1].LastError, "connection refused") {
		t.Errorf("LastError = %q", got[1].LastError)
	}
}
