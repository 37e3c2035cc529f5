package lvs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/cloudflare/ipvs"
)

// DefaultResyncInterval is how long a Reconciler trusts its cached view of
// the kernel table when Options.ResyncInterval is zero. It bounds how long
// drift, such as someone running `ipvsadm -C`, survives, provided the
// caller reconciles at least this often.
const DefaultResyncInterval = 30 * time.Second

// DefaultRemoveGrace is the longest a removed destination stays in the
// kernel at weight 0 when Options.RemoveGrace is zero.
const DefaultRemoveGrace = 30 * time.Second

// RetireRecheck is how long a removed destination stays at weight 0 before
// its connections are first counted. The pause lets a connection the
// scheduler picked just before the weight change reach the kernel's
// counters. While connections remain, the interval between counts doubles
// up to RetireRecheckMax.
const (
	RetireRecheck    = 250 * time.Millisecond
	RetireRecheckMax = 5 * time.Second
)

// FWMarkRange is an inclusive range of firewall marks.
type FWMarkRange struct {
	First, Last uint32
}

// Options tune a Reconciler.
type Options struct {
	// ResyncInterval is how long the reconciler trusts its cached view of
	// the kernel table; after it, the next Reconcile reads the table again
	// and repairs drift. Zero means DefaultResyncInterval; a negative
	// value reads the table on every Reconcile.
	ResyncInterval time.Duration
	// OwnedPrefixes and OwnedFWMarks declare address ranges and firewall
	// marks Directorate's alone: every kernel service inside them is
	// managed, even one nothing else identifies (see the package
	// documentation).
	OwnedPrefixes []netip.Prefix
	OwnedFWMarks  []FWMarkRange
	// RemoveGrace bounds how long a destination removed from a service
	// that stays is kept at weight 0 before it is deleted, counted from
	// when the kernel took the weight 0; a destination whose weight cannot
	// be set to 0 for RemoveGrace is deleted anyway. Deleting a
	// destination at once cuts its connections: with the kernel's
	// expire_nodest_conn=1 they are reset, and with 0 their packets are
	// dropped, which catches even a connection whose handshake the
	// scheduler had just sent there. So a removed destination is first
	// quiesced, as ldirectord's quiescent=yes does, and deleted once the
	// kernel counts no active connection to it (at least RetireRecheck
	// later) or once RemoveGrace has passed, whichever comes first. The
	// kernel counts every UDP flow as inactive, so for UDP and
	// firewall-mark services inactive connections count too: such a
	// destination waits until it has no flow at all, or for the grace.
	// Zero means DefaultRemoveGrace; a negative value deletes at once.
	// A whole service that is removed is deleted at once.
	RemoveGrace time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Result describes one Reconcile.
type Result struct {
	// Index is the configuration index of the desired table.
	Index uint64
	// Resynced is true when the kernel table was read rather than taken
	// from the cache.
	Resynced bool
	// Incremental is true when only the services Desired.Patch changed
	// were compared.
	Incremental bool
	// Ops counts the ops sent to the backend, Failed those that failed.
	Ops    OpCounts
	Failed OpCounts
	// Services and Dests count the desired table.
	Services, Dests int
	// Retiring counts the destinations held at weight 0 after their
	// removal (see Options.RemoveGrace). While it is not zero the caller
	// should Reconcile again after Recheck, when the next of them is due
	// a count, or they stay until the next commit or resync.
	Retiring int
	Recheck  time.Duration
	Duration time.Duration
}

// Changes returns how many ops the reconcile sent.
func (res Result) Changes() int { return res.Ops.Total() }

// Reconciler converges a Backend's table to a Desired one, applying only
// the difference and touching only the services it manages (see the
// package documentation). It is safe for concurrent use; reconciles run
// one at a time.
type Reconciler struct {
	backend Backend
	log     *slog.Logger
	opts    Options
	now     func() time.Time

	mu sync.Mutex
	// cache is the kernel table as of readAt plus every op applied since;
	// nil forces a read.
	cache  Table
	readAt time.Time
	// prev is the last desired table reconciled, and synced says that
	// reconcile succeeded, so cache matches prev where Directorate
	// manages it.
	prev   *Desired
	synced bool
	// record holds services this reconciler created whose fate a failed
	// batch left unknown; with prev it is the "desired or created
	// earlier" part of the managed rule.
	record map[ServiceKey]struct{}
	// retiring holds the destinations removed from the desired table
	// that are, or are being, quiesced at weight 0 in the kernel.
	retiring map[ServiceKey]map[netip.AddrPort]*retiree
}

// NewReconciler returns a Reconciler that programs b and logs to log.
func NewReconciler(b Backend, log *slog.Logger, opts Options) *Reconciler {
	if opts.ResyncInterval == 0 {
		opts.ResyncInterval = DefaultResyncInterval
	}
	if opts.RemoveGrace == 0 {
		opts.RemoveGrace = DefaultRemoveGrace
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Reconciler{
		backend:  b,
		log:      log.With("backend", b.Name()),
		opts:     opts,
		now:      now,
		record:   make(map[ServiceKey]struct{}),
		retiring: make(map[ServiceKey]map[netip.AddrPort]*retiree),
	}
}

// Reconcile converges the backend to d. It reads the kernel table when it
// has no trusted view (the first run, after a failure, after Invalidate or
// Report, or once the resync interval has passed) and otherwise diffs
// against its cache; when d was patched (Desired.Patch) from the table it
// last reconciled, it compares only the patched services. It applies the
// difference in one batch. A failed op does not stop the others; every
// failure is returned, joined (see OpErrors), and the next Reconcile reads
// the table again.
func (r *Reconciler) Reconcile(ctx context.Context, d *Desired) (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := r.now()
	res := Result{Index: d.Index}
	res.Services, res.Dests = d.Count()

	actual := r.cache
	if actual == nil || r.opts.ResyncInterval < 0 || start.Sub(r.readAt) >= r.opts.ResyncInterval {
		t, err := r.backend.List(ctx)
		if err != nil {
			r.cache, r.synced = nil, false
			res.Duration = r.now().Sub(start)
			return res, fmt.Errorf("read the IPVS table: %w", err)
		}
		actual, r.readAt, res.Resynced = t, start, true
		r.pruneRecord(actual)
	}

	r.pruneRetiring(d, actual)
	managed := r.managed(d)
	var ops []Op
	if keys, ok := r.changedSince(d); ok && !res.Resynced {
		for k := range r.retiring {
			keys = append(keys, k)
		}
		ops = planKeys(d, actual, managed, keys)
		res.Incremental = true
	} else {
		ops = planAll(d, actual, managed)
	}
	ops, quiescing, stale := r.retire(ctx, actual, ops, start)
	for _, op := range ops {
		res.Ops.Count(op.Kind)
	}
	var err error
	if len(ops) > 0 {
		err = r.backend.Apply(ctx, ops)
	}
	if err != nil {
		r.cache, r.synced = nil, false
		for _, oe := range OpErrors(err) {
			res.Failed.Count(oe.Op.Kind)
		}
		if res.Failed.Total() == 0 {
			// The batch failed as a whole; its ops' fate is unknown.
			res.Failed = res.Ops
		}
		// Keep prev: the services it had that this batch meant to
		// delete may still be there. Remember what it meant to create.
		for _, op := range ops {
			if op.Kind == AddService {
				r.record[KeyOf(op.Service)] = struct{}{}
			}
		}
	} else {
		r.cache, r.prev, r.synced = actual, d, true
		for _, op := range ops {
			if aerr := applyOp(actual, op); aerr != nil {
				// The backend accepted an op the cached view
				// cannot take: the view is wrong, so drop it.
				r.log.WarnContext(ctx, "cached IPVS table disagrees with the backend; rereading next time", "op", op.String(), "error", aerr)
				r.cache, r.synced = nil, false
				break
			}
			switch op.Kind {
			case DeleteService:
				delete(r.record, KeyOf(op.Service))
				delete(r.retiring, KeyOf(op.Service))
			case DeleteDest:
				r.forgetRetiring(KeyOf(op.Service), netip.AddrPortFrom(op.Dest.Address, op.Dest.Port))
			}
		}
		if d.log != nil {
			d.log.trim(d.gen)
		}
		// The grace and the first count run from when the kernel
		// took the weight 0.
		applied := r.now()
		for _, e := range quiescing {
			e.quiesced(applied, r.opts.RemoveGrace)
		}
		if stale {
			r.cache, r.synced = nil, false
		}
	}
	res.Retiring, res.Recheck = r.retiringDue(r.now())
	res.Duration = r.now().Sub(start)

	level := slog.LevelDebug
	if res.Ops.Total() > 0 {
		level = slog.LevelInfo
	}
	r.log.Log(ctx, level, "reconciled IPVS", "index", res.Index, "resynced", res.Resynced, "incremental", res.Incremental,
		"ops", res.Ops.Total(), "failed", res.Failed.Total(), "services", res.Services, "dests", res.Dests,
		"retiring", res.Retiring, "duration", res.Duration)
	if err != nil {
		return res, fmt.Errorf("reconcile IPVS to index %d: %w", d.Index, err)
	}
	return res, nil
}

// changedSince returns the services that may differ between the cache and
// d, when d descends (by Patch) from the last table reconciled with
// success.
func (r *Reconciler) changedSince(d *Desired) ([]ServiceKey, bool) {
	p := r.prev
	if !r.synced || r.cache == nil || p == nil || p.log == nil || p.log != d.log || d.gen < p.gen {
		return nil, false
	}
	if d.gen == p.gen {
		return nil, true
	}
	return d.log.since(p.gen, d.gen)
}

// ReadService reads the service key straight from the backend, with its
// destinations' active and inactive connection counters; the cache is
// neither used nor changed, since the counters are what the caller wants
// and they are never cached. An absent service gives an error wrapping
// ErrServiceNotFound.
func (r *Reconciler) ReadService(ctx context.Context, key ServiceKey) (*Service, error) {
	svc, err := r.backend.ListService(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read IPVS service %s: %w", key, err)
	}
	return svc, nil
}

// Invalidate drops the cached view, so the next Reconcile reads the kernel
// table.
func (r *Reconciler) Invalidate() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cache, r.synced = nil, false
}

// Report reads the kernel table and compares it with d, flagging each
// service and destination with this reconciler's managed rule. The fresh
// read becomes the cache, and the next Reconcile compares it whole, so
// drift Report saw is repaired at once.
func (r *Reconciler) Report(ctx context.Context, d *Desired) (Report, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, err := r.backend.List(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("read the IPVS table: %w", err)
	}
	rep := Diff(d, t, r.managed(d))
	for i := range rep.Services {
		sd := &rep.Services[i]
		for j := range sd.Dests {
			if dd := &sd.Dests[j]; dd.State == Extra && dd.Actual.Weight == 0 && r.isRetiring(sd.Key, dd.Addr) {
				dd.State = Retiring
			}
		}
	}
	rep.settle()
	r.cache, r.readAt, r.synced = t, r.now(), false
	r.pruneRecord(t)
	return rep, nil
}

// managed returns the rule that says whether a kernel service is
// Directorate's; r.mu must be held while it is used.
func (r *Reconciler) managed(d *Desired) func(ServiceKey) bool {
	return func(k ServiceKey) bool {
		if d.Claims(k) {
			return true
		}
		if r.prev != nil {
			if _, ok := r.prev.Services[k]; ok {
				return true
			}
		}
		if _, ok := r.record[k]; ok {
			return true
		}
		if k.FWMark != 0 {
			for _, m := range r.opts.OwnedFWMarks {
				if k.FWMark >= m.First && k.FWMark <= m.Last {
					return true
				}
			}
			return false
		}
		for _, p := range r.opts.OwnedPrefixes {
			if p.Contains(k.Addr) {
				return true
			}
		}
		return false
	}
}

// pruneRecord forgets created services the kernel no longer has.
func (r *Reconciler) pruneRecord(kernel Table) {
	for k := range r.record {
		if _, ok := kernel[k]; !ok {
			delete(r.record, k)
		}
	}
}

// retiree is one destination being retired.
type retiree struct {
	// removed is when the removal was first planned; quiescedAt when
	// the kernel was made (or first seen) to hold it at weight 0, zero
	// while that is pending.
	removed, quiescedAt time.Time
	// next is the earliest next count of its connections, and wait the
	// interval that led to it.
	next time.Time
	wait time.Duration
}

// quiesced records that the kernel took weight 0 at at: the first count
// is due RetireRecheck later, or at the end of a shorter grace.
func (e *retiree) quiesced(at time.Time, grace time.Duration) {
	e.quiescedAt, e.wait, e.next = at, RetireRecheck, at.Add(min(RetireRecheck, grace))
}

// retire turns the deletion of a destination from a service that stays
// into a quiesce (weight 0), and lets it through only once the
// destination has been at weight 0 for RetireRecheck with no active
// connection left, or for RemoveGrace (see Options.RemoveGrace).
// Connection counters are read from the backend, one service at a time,
// only for destinations due a count. It returns the ops to send, the
// retirees whose quiesce is among them, and whether the cached table
// proved wrong.
func (r *Reconciler) retire(ctx context.Context, actual Table, ops []Op, now time.Time) (out []Op, quiescing []*retiree, stale bool) {
	if r.opts.RemoveGrace < 0 {
		return ops, nil, false
	}
	grace := r.opts.RemoveGrace
	read := map[ServiceKey]*Service{}
	// gone holds services the backend no longer has: their retirees are
	// forgotten and their ops dropped.
	gone := map[ServiceKey]bool{}
	out = ops[:0]
	for _, op := range ops {
		if op.Kind != DeleteDest {
			out = append(out, op)
			continue
		}
		key := KeyOf(op.Service)
		if gone[key] {
			continue
		}
		addr := netip.AddrPortFrom(op.Dest.Address, op.Dest.Port)
		var got *Destination
		if svc := actual[key]; svc != nil {
			got = svc.Dest(addr)
		}
		if got == nil {
			out = append(out, op)
			continue
		}
		log := r.log.With("service", key.String(), "dest", addr.String())
		e := r.retiring[key][addr]
		if e == nil {
			e = &retiree{removed: now}
			m := r.retiring[key]
			if m == nil {
				m = make(map[netip.AddrPort]*retiree)
				r.retiring[key] = m
			}
			m[addr] = e
			log.InfoContext(ctx, "quiescing a removed destination before deleting it", "weight", got.Weight, "grace", grace)
		}
		if got.Weight != 0 {
			if now.Sub(e.removed) >= grace {
				// Whatever keeps restoring its weight (a
				// failing quiesce, another tool), removal wins.
				log.WarnContext(ctx, "deleting a removed destination that could not be held at weight 0 for its grace period", "weight", got.Weight, "grace", grace)
				out = append(out, op)
				continue
			}
			// Quiesce it, or again if something raised the weight
			// since: its grace starts over once the kernel takes it.
			q := got.Destination
			q.Weight = 0
			e.quiescedAt = time.Time{}
			quiescing = append(quiescing, e)
			out = append(out, Op{Kind: UpdateDest, Service: op.Service, Dest: q})
			continue
		}
		if e.quiescedAt.IsZero() {
			// Already at weight 0 (drained, or a quiesce whose
			// batch failed but took effect).
			e.quiesced(now, grace)
		}
		if now.Before(e.next) {
			continue
		}
		held := now.Sub(e.quiescedAt)
		svc, seen := read[key]
		if !seen {
			var err error
			svc, err = r.backend.ListService(ctx, key)
			if errors.Is(err, ErrServiceNotFound) {
				// Deleted behind our back, service and all.
				delete(r.retiring, key)
				gone[key], stale = true, true
				continue
			}
			if err != nil {
				log.WarnContext(ctx, "count the connections of a retiring destination", "err", err)
				svc = nil
			}
			read[key] = svc
		}
		var conns uint32
		if svc != nil {
			kd := svc.Dest(addr)
			if kd == nil {
				// Deleted behind our back: nothing left to retire,
				// and the cached table is wrong.
				r.forgetRetiring(key, addr)
				stale = true
				continue
			}
			conns = kd.ActiveConns
			if key.Protocol == ipvs.UDP || key.FWMark != 0 {
				conns += kd.InactiveConns
			}
			if kd.Weight != 0 {
				// Raised behind the cache: read the table again so
				// the next look quiesces it again.
				stale = true
			}
		}
		switch {
		case svc != nil && conns == 0:
			log.InfoContext(ctx, "deleting a removed destination: no connection left", "held_at_weight_0", held.Round(time.Millisecond))
			out = append(out, op)
		case held >= grace:
			log.WarnContext(ctx, "deleting a removed destination at the end of its grace period", "connections", conns, "grace", grace)
			out = append(out, op)
		default:
			e.wait = min(2*e.wait, RetireRecheckMax)
			e.next = now.Add(e.wait)
			if end := e.quiescedAt.Add(grace); e.next.After(end) {
				e.next = end
			}
		}
	}
	return out, quiescing, stale
}

// retiringDue counts the retiring destinations and says how soon the next
// is due a look: a pending quiesce after RetireRecheck, the others at
// their next count.
func (r *Reconciler) retiringDue(now time.Time) (int, time.Duration) {
	n, due := 0, time.Duration(-1)
	for _, m := range r.retiring {
		for _, e := range m {
			n++
			d := RetireRecheck
			if !e.quiescedAt.IsZero() {
				d = max(e.next.Sub(now), 10*time.Millisecond)
			}
			if due < 0 || d < due {
				due = d
			}
		}
	}
	return n, max(due, 0)
}

// pruneRetiring forgets retiring destinations that are gone from the
// kernel table or desired again (an undo restores their weight), and those
// of services held back.
func (r *Reconciler) pruneRetiring(d *Desired, actual Table) {
	for key, m := range r.retiring {
		svc := actual[key]
		_, held := d.Held[key]
		if svc == nil || held {
			delete(r.retiring, key)
			continue
		}
		want := d.Services[key]
		for addr := range m {
			if svc.Dest(addr) == nil || (want != nil && want.Dest(addr) != nil) {
				delete(m, addr)
			}
		}
		if len(m) == 0 {
			delete(r.retiring, key)
		}
	}
}

func (r *Reconciler) forgetRetiring(key ServiceKey, addr netip.AddrPort) {
	if m := r.retiring[key]; m != nil {
		delete(m, addr)
		if len(m) == 0 {
			delete(r.retiring, key)
		}
	}
}

func (r *Reconciler) isRetiring(key ServiceKey, addr netip.AddrPort) bool {
	_, ok := r.retiring[key][addr]
	return ok
}
