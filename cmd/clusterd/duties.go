package main

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/cluster/watchdog"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/hooks"
	"github.com/directorate/directorate/vip"
)

// vipOwner claims and releases this director's VIPs: vip.Manager on a real
// host, dryRunVIPs where several directors share one host for testing.
type vipOwner interface {
	Claim(ctx context.Context, vips []vip.VIP) error
	Renew(ctx context.Context) error
	Release(ctx context.Context) error
	Sync(ctx context.Context, vips []vip.VIP) error
	CleanupStale(ctx context.Context, vips []vip.VIP) error
	Held() []vip.Held
	FenceWait(f vip.Fence) time.Duration
}

// leaseChecker confirms that this director still leads, with a fresh
// round of contact with a quorum.
type leaseChecker interface {
	VerifyLeader(ctx context.Context) error
}

// leaderWatchdog is the kernel watchdog as the leader uses it; noWatchdog
// stands in when none is configured.
type leaderWatchdog interface {
	Arm() error
	PetIfHealthy(h watchdog.Health, b watchdog.Bounds) (bool, error)
	Disarm() error
}

type noWatchdog struct{}

func (noWatchdog) Arm() error                                                  { return nil }
func (noWatchdog) PetIfHealthy(watchdog.Health, watchdog.Bounds) (bool, error) { return true, nil }
func (noWatchdog) Disarm() error                                               { return nil }

// hookRunner runs role-change hooks without blocking the caller.
type hookRunner interface {
	RunAsync(ev hooks.Event)
}

// duties runs the leader's VIP duties and the follower's stale-VIP cleanup.
// Its ordering is what keeps invariant 3 (at most one director holds a VIP):
// claim only after the barrier (the leadership event comes after it), renew
// only after a fresh lease check, release first on any loss of leadership.
type duties struct {
	node     string
	log      *slog.Logger
	fsm      *fsm.FSM
	vips     vipOwner
	lease    leaseChecker
	watchdog leaderWatchdog
	hooks    hookRunner
	// onStall is called when the leader's loop stops beating: the caller
	// hands leadership over (and the watchdog stops being petted).
	onStall  func()
	fence    vip.Fence
	interval time.Duration // renew period; also the followers' cleanup period
	// leaseTimeout bounds each lease check, so a leader cut off from its
	// quorum stops renewing within about one lease.
	leaseTimeout time.Duration

	mu     sync.Mutex
	leader bool
	// closed is set by the final step-down of a stopping director, after
	// which it never claims again.
	closed bool
	term   uint64
	cancel context.CancelFunc // ends the current leadership's claim and renewals
	done   chan struct{}
}

// vipsOf lists the replicated VIPs in the vip package's terms.
func vipsOf(st *fsm.State) []vip.VIP {
	out := make([]vip.VIP, 0, len(st.VIPs))
	for _, v := range st.VIPs {
		out = append(out, vip.VIP{Name: v.Name, Prefix: v.Prefix, Interface: v.Interface})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (d *duties) currentVIPs() []vip.VIP {
	var out []vip.VIP
	d.fsm.Read(func(st *fsm.State) { out = vipsOf(st) })
	return out
}

// becomeLeader starts claiming and renewing for a leadership term.
func (d *duties) becomeLeader(ev cluster.LeadershipEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.leader || d.closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.leader, d.term, d.cancel, d.done = true, ev.Term, cancel, make(chan struct{})
	go d.lead(ctx, ev.Term, d.done)
}

// health is what the watchdog is petted on, shared between the leader's
// loop and its petting goroutine.
type health struct {
	mu      sync.Mutex
	leaseOK bool
	opSince time.Time // when the VIP operation in flight started
}

func (h *health) set(fn func(*health)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fn(h)
}

// op marks a VIP operation in flight until the returned function is called.
func (h *health) op() func() {
	h.set(func(h *health) { h.opSince = time.Now() })
	return func() { h.set(func(h *health) { h.opSince = time.Time{} }) }
}

// bounds derives the watchdog's health bounds from the renew interval: the
// loop beats every interval, so three missed beats is a stall.
func (d *duties) bounds() watchdog.Bounds {
	return watchdog.Bounds{LoopStall: 3 * d.interval, VIPOpStuck: 3 * d.interval}
}

// guard arms the watchdog and pets it from its own goroutine, so a loop
// stuck in a VIP operation is noticed, and runs the stall detector. The
// watchdog is petted only while the loop beats, the lease holds and no VIP
// operation is stuck; if the leader hangs the kernel reboots the host.
func (d *duties) guard(ctx context.Context, log *slog.Logger, h *health) (*watchdog.StallDetector, error) {
	stall, err := watchdog.NewStallDetector(watchdog.StallOptions{
		Bound:  d.bounds().LoopStall,
		Logger: log,
		OnStall: func(silent time.Duration) {
			log.Error("leader loop stalled: handing leadership over", "silent_for", silent)
			if d.onStall != nil {
				go d.onStall()
			}
		},
		OnRecover: func(gap time.Duration) { log.Warn("leader loop recovered from a stall", "gap", gap) },
	})
	if err != nil {
		return nil, err
	}
	if err := d.watchdog.Arm(); err != nil {
		return nil, fmt.Errorf("arm the watchdog: %w", err)
	}
	go stall.Run(ctx)
	go func() {
		tick := time.NewTicker(d.interval / 2)
		defer tick.Stop()
		for {
			var hv watchdog.Health
			h.set(func(h *health) {
				hv = watchdog.Health{LoopBeat: stall.LastBeat(), LeaseOK: h.leaseOK, VIPOpsSince: h.opSince}
			})
			if _, err := d.watchdog.PetIfHealthy(hv, d.bounds()); err != nil {
				log.Error("pet the watchdog", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return stall, nil
}

// lead claims the VIPs, then renews them while the lease holds and keeps
// them in step with the replicated state.
func (d *duties) lead(ctx context.Context, term uint64, done chan<- struct{}) {
	defer close(done)
	log := d.log.With("term", term)
	// The fence wait comes first: nothing is held during it, and the stall
	// detector and watchdog guard the loop from its first beat on.
	if wait := d.vips.FenceWait(d.fence); wait > 0 {
		log.Info("fence: waiting out the longest lifetime a previous leader's VIPs may have left", "wait", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	h := &health{leaseOK: true}
	stall, err := d.guard(ctx, log, h)
	if err != nil {
		// A leader that cannot arm its watchdog must not hold VIPs: a hang
		// would go unfenced but for the lifetimes.
		log.Error("cannot guard this leadership: not claiming VIPs; handing over", "err", err)
		if d.onStall != nil {
			go d.onStall()
		}
		return
	}
	stall.Beat()
	changed, unsubscribe := d.fsm.Subscribe()
	defer unsubscribe()
	vips := d.currentVIPs()
	start := time.Now()
	end := h.op()
	err = d.vips.Claim(ctx, vips)
	end()
	if err != nil {
		log.Error("claim VIPs", "err", err)
	} else {
		log.Info("claimed VIPs", "vips", len(vips), "duration", time.Since(start))
	}
	if ctx.Err() == nil {
		d.hooks.RunAsync(hooks.Event{Role: hooks.RoleLeader, Previous: hooks.RoleFollower, Node: d.node, Term: term,
			Index: d.fsm.Index(), VIPs: vipNames(vips)})
	}
	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	for {
		stall.Beat()
		select {
		case <-ctx.Done():
			return
		case <-changed:
			end := h.op()
			if err := d.vips.Sync(ctx, d.currentVIPs()); err != nil && ctx.Err() == nil {
				log.Error("sync VIPs with the configuration", "err", err)
			}
			end()
		case <-tick.C:
			lctx, cancel := context.WithTimeout(ctx, d.leaseTimeout)
			err := d.lease.VerifyLeader(lctx)
			cancel()
			h.set(func(h *health) { h.leaseOK = err == nil })
			if err != nil {
				// Not renewing lets the kernel drop the VIPs by their
				// lifetime even if the step-down event is late.
				if ctx.Err() == nil {
					log.Warn("lease not confirmed: not renewing VIPs", "err", err)
				}
				continue
			}
			end := h.op()
			if err := d.vips.Renew(ctx); err != nil && ctx.Err() == nil {
				log.Error("renew VIPs", "err", err)
			}
			end()
		}
	}
}

func vipNames(vips []vip.VIP) []string {
	out := make([]string, len(vips))
	for i, v := range vips {
		out[i] = v.Prefix.Addr().String()
	}
	return out
}

// stepTimeout bounds how long a step-down waits for the leader's loop to
// end before releasing anyway: a loop stuck in the kernel must not keep
// the VIPs claimed (their lifetimes and the watchdog cover what a release
// cannot reach).
func (d *duties) stepTimeout() time.Duration { return 3 * d.interval }

// stepDown releases every VIP before anything else happens. It waits for
// the leader goroutine so a claim in flight cannot add a VIP after the
// release.
func (d *duties) stepDown(ctx context.Context, why string) {
	d.stepDownAndMaybeClose(ctx, why, false)
}

// close steps down for good: a stopping director releases its VIPs before
// it hands leadership over, and must not claim them again meanwhile.
func (d *duties) close(ctx context.Context) {
	d.stepDownAndMaybeClose(ctx, "stopping", true)
}

func (d *duties) stepDownAndMaybeClose(ctx context.Context, why string, closing bool) {
	d.mu.Lock()
	if closing {
		d.closed = true
	}
	if !d.leader {
		d.mu.Unlock()
		return
	}
	cancel, done, term := d.cancel, d.done, d.term
	d.leader = false
	d.mu.Unlock()
	cancel()
	select {
	case <-done:
	case <-time.After(d.stepTimeout()):
		d.log.Error("the leader's loop did not end: releasing anyway", "term", term, "waited", d.stepTimeout())
	}
	start := time.Now()
	vips := vipNames(d.currentVIPs())
	if err := d.vips.Release(ctx); err != nil {
		d.log.Error("release VIPs", "term", term, "why", why, "err", err)
	} else {
		d.log.Info("released VIPs", "term", term, "why", why, "duration", time.Since(start))
	}
	// Disarm only after the release: a director that hangs between the
	// two is still fenced by the watchdog.
	if err := d.watchdog.Disarm(); err != nil {
		d.log.Error("disarm the watchdog", "term", term, "err", err)
	}
	if !closing {
		d.hooks.RunAsync(hooks.Event{Role: hooks.RoleFollower, Previous: hooks.RoleLeader, Node: d.node, Term: term,
			Index: d.fsm.Index(), VIPs: vips})
	}
}

func (d *duties) isLeader() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.leader
}

// cleanupStale removes VIPs this director holds while it is not the
// leader, such as those a crashed clusterd left behind. It runs at start
// and then every interval while following.
func (d *duties) cleanupStale(ctx context.Context) {
	if d.isLeader() {
		return
	}
	if err := d.vips.CleanupStale(ctx, d.currentVIPs()); err != nil {
		d.log.Error("remove stale VIPs", "err", err)
	}
}

// dryRunVIPs keeps claims in memory. It is for directors that share one
// host in tests and demos, where claiming addresses on the host's links
// would make them collide.
type dryRunVIPs struct {
	log *slog.Logger
	mu  sync.Mutex
	now func() time.Time
	// lifetime is what the kernel would give each VIP.
	lifetime time.Duration
	held     map[string]vip.Held
}

func newDryRunVIPs(log *slog.Logger, lifetime time.Duration) *dryRunVIPs {
	return &dryRunVIPs{log: log.With("vip_backend", "dry-run"), now: time.Now, lifetime: lifetime, held: map[string]vip.Held{}}
}

func (d *dryRunVIPs) Claim(ctx context.Context, vips []vip.VIP) error {
	return d.Sync(ctx, vips)
}

func (d *dryRunVIPs) Renew(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	for k, h := range d.held {
		h.Renewed, h.Expires = now, now.Add(d.lifetime)
		d.held[k] = h
	}
	return nil
}

func (d *dryRunVIPs) Release(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, h := range d.held {
		d.log.Info("would release VIP", "vip", h.VIP.Name, "prefix", h.VIP.Prefix)
		delete(d.held, k)
	}
	return nil
}

func (d *dryRunVIPs) Sync(ctx context.Context, vips []vip.VIP) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("claim VIPs: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[string]vip.VIP{}
	for _, v := range vips {
		want[v.Name] = v
	}
	for k, h := range d.held {
		if w, ok := want[k]; !ok || w != h.VIP {
			d.log.Info("would release VIP", "vip", h.VIP.Name, "prefix", h.VIP.Prefix)
			delete(d.held, k)
		}
	}
	now := d.now()
	for k, v := range want {
		if _, ok := d.held[k]; !ok {
			d.log.Info("would claim VIP", "vip", v.Name, "prefix", v.Prefix)
			d.held[k] = vip.Held{VIP: v, Interface: v.Interface, Renewed: now, Expires: now.Add(d.lifetime)}
		}
	}
	return nil
}

func (d *dryRunVIPs) CleanupStale(context.Context, []vip.VIP) error { return nil }

func (d *dryRunVIPs) Held() []vip.Held {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]vip.Held, 0, len(d.held))
	for _, h := range d.held {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VIP.Name < out[j].VIP.Name })
	return out
}

func (d *dryRunVIPs) FenceWait(f vip.Fence) time.Duration {
	if f == vip.FenceLease {
		return vip.FenceWait(d.lifetime)
	}
	return 0
}
