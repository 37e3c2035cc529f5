package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/cluster/watchdog"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/hooks"
	"github.com/directorate/directorate/internal/testpoll"
	"github.com/directorate/directorate/vip"
)

// recordingVIPs is a vipOwner that records every call in order.
type recordingVIPs struct {
	mu    sync.Mutex
	calls []string
	fence time.Duration
}

func (r *recordingVIPs) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

func (r *recordingVIPs) log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func names(vips []vip.VIP) string {
	var n []string
	for _, v := range vips {
		n = append(n, v.Name)
	}
	return strings.Join(n, ",")
}

func (r *recordingVIPs) Claim(_ context.Context, v []vip.VIP) error {
	r.add("claim %s", names(v))
	return nil
}
func (r *recordingVIPs) Renew(context.Context) error   { r.add("renew"); return nil }
func (r *recordingVIPs) Release(context.Context) error { r.add("release"); return nil }
func (r *recordingVIPs) Sync(_ context.Context, v []vip.VIP) error {
	r.add("sync %s", names(v))
	return nil
}
func (r *recordingVIPs) CleanupStale(_ context.Context, v []vip.VIP) error {
	r.add("cleanup %s", names(v))
	return nil
}
func (r *recordingVIPs) Held() []vip.Held                  { return nil }
func (r *recordingVIPs) FenceWait(vip.Fence) time.Duration { return r.fence }

// recordingWatchdog and recordingHooks write into the same journal as the
// VIPs, so tests see the order of every duty.
type recordingWatchdog struct {
	rec  *recordingVIPs
	pets atomic.Int64
}

func (w *recordingWatchdog) Arm() error    { w.rec.add("arm"); return nil }
func (w *recordingWatchdog) Disarm() error { w.rec.add("disarm"); return nil }
func (w *recordingWatchdog) PetIfHealthy(h watchdog.Health, b watchdog.Bounds) (bool, error) {
	ok, _ := h.OK(time.Now(), b)
	if ok {
		w.pets.Add(1)
	}
	return ok, nil
}

type recordingHooks struct{ rec *recordingVIPs }

func (h recordingHooks) RunAsync(ev hooks.Event) {
	h.rec.add("hook %s %s", ev.Role, strings.Join(ev.VIPs, ","))
}

// fakeLease answers lease checks as told, and counts them.
type fakeLease struct {
	ok    atomic.Bool
	calls atomic.Int64
}

// waitChecks waits until n more lease checks have been answered.
func (l *fakeLease) waitChecks(t *testing.T, n int64) {
	t.Helper()
	target := l.calls.Load() + n
	testpoll.Until(t, 5*time.Second, time.Millisecond, "the leader to keep checking its lease", func() bool {
		return l.calls.Load() >= target
	})
}

func (l *fakeLease) VerifyLeader(context.Context) error {
	defer l.calls.Add(1)
	if l.ok.Load() {
		return nil
	}
	return cluster.ErrNotLeader
}

func newDuties(t *testing.T) (*duties, *recordingVIPs, *fakeLease, *applier) {
	rec := &recordingVIPs{}
	lease := &fakeLease{}
	lease.ok.Store(true)
	f := fsm.New()
	a := &applier{t: t, f: f}
	a.apply(fsm.AddVIP{VIP: fsm.VIP{Name: "web", Prefix: netip.MustParsePrefix("192.0.2.10/24")}})
	d := &duties{node: "d1", log: testLogger(t), fsm: f, vips: rec, lease: lease, interval: 5 * time.Millisecond,
		leaseTimeout: time.Second, watchdog: &recordingWatchdog{rec: rec}, hooks: recordingHooks{rec: rec}}
	return d, rec, lease, a
}

func waitCalls(t *testing.T, rec *recordingVIPs, what string, ok func([]string) bool) []string {
	t.Helper()
	var calls []string
	testpoll.Poll(t, 5*time.Second, time.Millisecond, what, func() error {
		if calls = rec.log(); !ok(calls) {
			return fmt.Errorf("calls so far: %v", calls)
		}
		return nil
	})
	return calls
}

func TestDutiesClaimRenewRelease(t *testing.T) {
	d, rec, lease, a := newDuties(t)
	d.becomeLeader(cluster.LeadershipEvent{Leader: true, Term: 3})
	calls := waitCalls(t, rec, "a claim and a renewal", func(c []string) bool { return slices.Contains(c, "renew") })
	if !slices.Equal(calls[:3], []string{"arm", "claim web", "hook leader 192.0.2.10"}) {
		t.Fatalf("a new leader must arm the watchdog, claim, then run its hooks: %v", calls)
	}
	if d.watchdog.(*recordingWatchdog).pets.Load() == 0 {
		waitCalls(t, rec, "a pet", func([]string) bool { return d.watchdog.(*recordingWatchdog).pets.Load() > 0 })
	}

	// A configuration change while leading is synced.
	a.apply(fsm.AddVIP{VIP: fsm.VIP{Name: "api", Prefix: netip.MustParsePrefix("192.0.2.11/24")}})
	waitCalls(t, rec, "a sync with both VIPs", func(c []string) bool { return slices.Contains(c, "sync api,web") })

	// Without a confirmed lease, nothing is renewed.
	lease.ok.Store(false)
	lease.waitChecks(t, 2) // a check in flight may still have seen the old answer
	n := len(rec.log())
	lease.waitChecks(t, 10)
	for _, c := range rec.log()[n:] {
		if c == "renew" {
			t.Fatalf("renewed without a confirmed lease: %v", rec.log()[n:])
		}
	}

	d.stepDown(context.Background(), "test")
	after := rec.log()
	if !slices.Equal(after[len(after)-3:], []string{"release", "disarm", "hook follower 192.0.2.11,192.0.2.10"}) {
		t.Fatalf("stepping down must release, then disarm, then run the hooks: %v", after)
	}
	// Nothing runs after the release: the leader goroutine has ended.
	for range 10 {
		time.Sleep(d.interval)
	}
	if got := rec.log(); len(got) != len(after) {
		t.Fatalf("duties ran after the release: %v", got[len(after):])
	}
}

func TestDutiesFenceWaitsBeforeClaiming(t *testing.T) {
	d, rec, _, _ := newDuties(t)
	rec.fence = time.Hour
	d.fence = vip.FenceLease
	d.becomeLeader(cluster.LeadershipEvent{Leader: true, Term: 1})
	for range 10 {
		time.Sleep(d.interval)
	}
	if got := rec.log(); len(got) != 0 {
		t.Fatalf("acted during the fence wait: %v", got)
	}
	// Losing leadership during the wait releases without ever claiming.
	d.stepDown(context.Background(), "test")
	if got := rec.log(); !slices.Equal(got, []string{"release", "disarm", "hook follower 192.0.2.10"}) {
		t.Fatalf("got %v, want a release without a claim", got)
	}
}

func TestDutiesCloseNeverClaimsAgain(t *testing.T) {
	d, rec, _, _ := newDuties(t)
	d.becomeLeader(cluster.LeadershipEvent{Leader: true, Term: 1})
	waitCalls(t, rec, "the claim", func(c []string) bool { return len(c) > 0 })
	d.close(context.Background())
	n := len(rec.log())
	d.becomeLeader(cluster.LeadershipEvent{Leader: true, Term: 2})
	d.cleanupStale(context.Background())
	if got := rec.log()[n:]; len(got) != 1 || got[0] != "cleanup web" {
		t.Fatalf("a closed director must only clean up: %v", got)
	}
}

func TestDutiesCleanupOnlyWhileFollowing(t *testing.T) {
	d, rec, _, _ := newDuties(t)
	d.cleanupStale(context.Background())
	if got := rec.log(); !slices.Equal(got, []string{"cleanup web"}) {
		t.Fatalf("a follower must remove stale VIPs: %v", got)
	}
	d.becomeLeader(cluster.LeadershipEvent{Leader: true, Term: 1})
	waitCalls(t, rec, "the claim", func(c []string) bool { return len(c) > 1 })
	n := len(rec.log())
	d.cleanupStale(context.Background())
	for _, c := range rec.log()[n:] {
		if strings.HasPrefix(c, "cleanup") {
			t.Fatal("the leader removed its own VIPs as stale")
		}
	}
	d.stepDown(context.Background(), "test")
}

func TestDryRunVIPs(t *testing.T) {
	d := newDryRunVIPs(testLogger(t), 3*time.Second)
	ctx := context.Background()
	a := vip.VIP{Name: "a", Prefix: netip.MustParsePrefix("192.0.2.1/24")}
	b := vip.VIP{Name: "b", Prefix: netip.MustParsePrefix("192.0.2.2/24")}
	if err := d.Claim(ctx, []vip.VIP{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(ctx, []vip.VIP{b}); err != nil {
		t.Fatal(err)
	}
	if h := d.Held(); len(h) != 1 || h[0].VIP != b {
		t.Fatalf("held %+v, want only b", h)
	}
	if err := d.Release(ctx); err != nil || len(d.Held()) != 0 {
		t.Fatalf("release: %v, held %+v", err, d.Held())
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := d.Claim(cctx, []vip.VIP{a}); !errors.Is(err, context.Canceled) || len(d.Held()) != 0 {
		t.Fatalf("a claim after the leadership ended must fail and hold nothing: %v", err)
	}
	if d.FenceWait(vip.FenceLease) != vip.FenceWait(3*time.Second) || d.FenceWait(vip.FenceNone) != 0 {
		t.Fatal("fence waits differ from the kernel backend's")
	}
}
