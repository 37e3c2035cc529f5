package main

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
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

// duties runs the leader's VIP duties and the follower's stale-VIP cleanup.
// Its ordering is what keeps invariant 3 (at most one director holds a VIP):
// claim only after the barrier (the leadership event comes after it), renew
// only after a fresh lease check, release first on any loss of leadership.
type duties struct {
	log      *slog.Logger
	fsm      *fsm.FSM
	vips     vipOwner
	lease    leaseChecker
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

// lead claims the VIPs, then renews them while the lease holds and keeps
// them in step with the replicated state.
func (d *duties) lead(ctx context.Context, term uint64, done chan<- struct{}) {
	defer close(done)
	log := d.log.With("term", term)
	if wait := d.vips.FenceWait(d.fence); wait > 0 {
		log.Info("fence: waiting out the longest lifetime a previous leader's VIPs may have left", "wait", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	changed, unsubscribe := d.fsm.Subscribe()
	defer unsubscribe()
	vips := d.currentVIPs()
	start := time.Now()
	if err := d.vips.Claim(ctx, vips); err != nil {
		log.Error("claim VIPs", "err", err)
	} else {
		log.Info("claimed VIPs", "vips", len(vips), "duration", time.Since(start))
	}
	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			if err := d.vips.Sync(ctx, d.currentVIPs()); err != nil && ctx.Err() == nil {
				log.Error("sync VIPs with the configuration", "err", err)
			}
		case <-tick.C:
			lctx, cancel := context.WithTimeout(ctx, d.leaseTimeout)
			err := d.lease.VerifyLeader(lctx)
			cancel()
			if err != nil {
				// Not renewing lets the kernel drop the VIPs by their
				// lifetime even if the step-down event is late.
				if ctx.Err() == nil {
					log.Warn("lease not confirmed: not renewing VIPs", "err", err)
				}
				continue
			}
			if err := d.vips.Renew(ctx); err != nil && ctx.Err() == nil {
				log.Error("renew VIPs", "err", err)
			}
		}
	}
}

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
	<-done
	start := time.Now()
	if err := d.vips.Release(ctx); err != nil {
		d.log.Error("release VIPs", "term", term, "why", why, "err", err)
		return
	}
	d.log.Info("released VIPs", "term", term, "why", why, "duration", time.Since(start))
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
