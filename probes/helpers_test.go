package probes_test

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/directorate/directorate/internal/testlog"
	"github.com/directorate/directorate/internal/testpoll"
	"github.com/directorate/directorate/probes"
	"github.com/directorate/directorate/probes/probestest"
)

func testLogger(t testing.TB) *slog.Logger { return testlog.Logger(t) }

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testpoll.Until(t, 5*time.Second, time.Millisecond, what, cond)
}

// rig is a PingMonitor on a fake clock and a fake pinger.
type rig struct {
	t       *testing.T
	clock   *probestest.Clock
	pinger  *probestest.Pinger
	m       *probes.PingMonitor
	sleepy  int // probers expected asleep on the clock when idle
	cancel  context.CancelFunc
	runDone chan error
}

func newRig(t *testing.T, cfg probes.PingConfig, opts probes.PingOptions) *rig {
	t.Helper()
	r := &rig{t: t, clock: probestest.NewClock(t0)}
	r.pinger = probestest.NewPinger(r.clock.Now)
	opts.Clock = r.clock
	opts.Logger = testLogger(t)
	m, err := probes.NewPingMonitor(cfg, r.pinger, opts)
	if err != nil {
		t.Fatalf("NewPingMonitor: %v", err)
	}
	r.m = m
	r.sleepy = len(cfg.Nodes)
	for _, g := range cfg.Groups {
		r.sleepy += len(g)
	}
	return r
}

// start runs the monitor and waits until every prober has finished its
// first probe, if due at once, and sleeps.
func (r *rig) start() {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.runDone = make(chan error, 1)
	go func() { r.runDone <- r.m.Run(ctx) }()
	r.t.Cleanup(func() { r.stop() })
	r.settle()
}

// stop cancels Run and waits for it.
func (r *rig) stop() {
	r.t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.runDone:
		if err != nil {
			r.t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		r.t.Fatal("Run did not return after cancel")
	}
}

// settle waits until every unblocked prober sleeps on the clock again.
func (r *rig) settle() {
	r.t.Helper()
	waitFor(r.t, "probers to sleep", func() bool {
		return r.clock.Waiters()+r.pinger.Blocked() == r.sleepy
	})
}

// runFor advances the fake clock by d, stopping at every deadline on the
// way so each probe runs at exactly its due time.
func (r *rig) runFor(d time.Duration) {
	r.t.Helper()
	end := r.clock.Now().Add(d)
	for {
		next, ok := r.clock.NextDeadline()
		if !ok || next.After(end) {
			r.clock.Advance(end.Sub(r.clock.Now()))
			r.settle()
			return
		}
		r.clock.Advance(next.Sub(r.clock.Now()))
		r.settle()
	}
}
