package lvs

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// DefaultResyncInterval is how long a Reconciler trusts its cached view of
// the kernel table when Options.ResyncInterval is zero. It bounds how long
// drift, such as someone running `ipvsadm -C`, survives, provided the
// caller reconciles at least this often.
const DefaultResyncInterval = 30 * time.Second

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
	Duration        time.Duration
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
}

// NewReconciler returns a Reconciler that programs b and logs to log.
func NewReconciler(b Backend, log *slog.Logger, opts Options) *Reconciler {
	if opts.ResyncInterval == 0 {
		opts.ResyncInterval = DefaultResyncInterval
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Reconciler{
		backend: b,
		log:     log.With("backend", b.Name()),
		opts:    opts,
		now:     now,
		record:  make(map[ServiceKey]struct{}),
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

	managed := r.managed(d)
	var ops []Op
	if keys, ok := r.changedSince(d); ok && !res.Resynced {
		ops = planKeys(d, actual, managed, keys)
		res.Incremental = true
	} else {
		ops = planAll(d, actual, managed)
	}
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
			if op.Kind == DeleteService {
				delete(r.record, KeyOf(op.Service))
			}
		}
		if d.log != nil {
			d.log.trim(d.gen)
		}
	}
	res.Duration = r.now().Sub(start)

	level := slog.LevelDebug
	if res.Ops.Total() > 0 {
		level = slog.LevelInfo
	}
	r.log.Log(ctx, level, "reconciled IPVS", "index", res.Index, "resynced", res.Resynced, "incremental", res.Incremental,
		"ops", res.Ops.Total(), "failed", res.Failed.Total(), "services", res.Services, "dests", res.Dests,
		"duration", res.Duration)
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
