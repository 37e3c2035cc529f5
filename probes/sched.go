package probes

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// DefaultMaxInFlight bounds the attempts a Scheduler runs at once unless
// SchedulerOptions.MaxInFlight says otherwise. Each holds at most a
// socket or a process; the bound is high enough that 10,000 servers
// checked every second can all be waiting out a timeout together.
const DefaultMaxInFlight = 16384

// wakeSlack is how long after the earliest due attempt the scheduler
// wakes, so that one wake-up starts every attempt of the next few
// milliseconds. With 10,000 checks a second due 100 µs apart, a wake-up
// per attempt (a timer, a futex wake, an idle thread spinning up) cost
// more CPU than the scheduling itself; BenchmarkChecks10k measured it.
// Each attempt starts up to this much later than its slot, which adds to
// the lateness and the detection bounds but never accumulates.
const wakeSlack = 5 * time.Millisecond

// SchedulerOptions configures a Scheduler.
type SchedulerOptions struct {
	// Checkers overrides the checker of a kind; a kind missing or nil
	// here gets the real one.
	Checkers map[CheckKind]Checker
	// Logger receives health transitions and rejected specs; required.
	Logger *slog.Logger
	// OnChange is called on every Health transition, including the first
	// one out of unknown, in order for any one check. It runs on the
	// check's own goroutine, which it holds up, so it should hand off
	// rather than block. Optional.
	OnChange func(CheckStatus)
	// Now stamps CheckStatus times; default time.Now. Scheduling itself
	// always runs on the monotonic clock.
	Now func() time.Time
	// MaxInFlight bounds the attempts running at once; default
	// DefaultMaxInFlight.
	MaxInFlight int
}

// Scheduler runs a changing set of checks, each on its own fixed
// schedule, and keeps each one's health with rise/fall hysteresis.
//
// One goroutine keeps every waiting check in a heap ordered by due time,
// sleeps until shortly after the earliest (wakeSlack), and hands each
// attempt due by then to a worker goroutine, up to MaxInFlight at once. Run k of a check is due at
// slot₀ + k×Interval plus a fresh random jitter, so neither jitter nor a
// slow check accumulates into drift; a run that ends after its next slot
// has passed entirely skips the missed slots instead of firing them back
// to back. New checks added together are spread evenly across one
// interval, so a cold start of thousands of checks does not burst.
type Scheduler struct {
	checkers    map[CheckKind]Checker
	log         *slog.Logger
	onChange    func(CheckStatus)
	now         func() time.Time
	maxInFlight int
	// observe, when set (by tests and benchmarks), sees each attempt's
	// due time and actual start: the scheduling delay.
	observe func(spec CheckSpec, due, started time.Time)

	wake chan struct{}

	mu      sync.Mutex
	entries map[CheckSpec]*entry
	queue   entryQueue
	rng     *rand.Rand
	started bool
}

// entry is one check: queued (index >= 0), running, or invalid (never
// scheduled).
type entry struct {
	spec    CheckSpec
	st      CheckStatus
	slot    time.Time // the unjittered slot of the next or current run
	due     time.Time // slot plus this run's jitter
	index   int       // position in the queue, -1 when not queued
	removed bool
	invalid bool
}

// NewScheduler returns a Scheduler with no checks; give it some with Set
// and start it with Run.
func NewScheduler(opts SchedulerOptions) (*Scheduler, error) {
	if opts.Logger == nil {
		return nil, errors.New("scheduler: logger: nil")
	}
	if opts.MaxInFlight < 0 {
		return nil, fmt.Errorf("scheduler: max in flight: must be >= 0, got %d", opts.MaxInFlight)
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	checkers := map[CheckKind]Checker{
		CheckNone:  NoneChecker{},
		CheckTCP:   NewTCPChecker(),
		CheckHTTP:  NewHTTPChecker(),
		CheckHTTPS: NewHTTPChecker(),
		CheckDNS:   NewDNSChecker(),
		CheckExec:  NewExecChecker(),
	}
	for k, c := range opts.Checkers {
		if c != nil {
			checkers[k] = c
		}
	}
	return &Scheduler{
		checkers:    checkers,
		log:         opts.Logger,
		onChange:    opts.OnChange,
		now:         opts.Now,
		maxInFlight: opts.MaxInFlight,
		wake:        make(chan struct{}, 1),
		entries:     make(map[CheckSpec]*entry),
		rng:         rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}, nil
}

// Set makes specs the set of checks to run. Equal specs collapse into one
// check. A spec already scheduled keeps its state and its schedule; a
// spec no longer in the set stops (an attempt in flight finishes, but its
// result is dropped). A spec that fails Validate is never run: it is
// logged once and shows in Statuses as unknown, with the reason in
// LastError.
func (s *Scheduler) Set(specs []CheckSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := make(map[CheckSpec]struct{}, len(specs))
	var fresh []*entry
	for _, spec := range specs {
		if _, dup := want[spec]; dup {
			continue
		}
		want[spec] = struct{}{}
		if _, ok := s.entries[spec]; ok {
			continue
		}
		e := &entry{spec: spec, index: -1, st: CheckStatus{Spec: spec, Health: HealthUnknown}}
		s.entries[spec] = e
		if err := spec.Validate(); err != nil {
			e.invalid = true
			e.st.LastError = "invalid check: " + err.Error()
			s.log.Error("health check not run: invalid", "check", spec.String(), "err", err)
			continue
		}
		fresh = append(fresh, e)
	}
	for spec, e := range s.entries {
		if _, ok := want[spec]; ok {
			continue
		}
		e.removed = true
		if e.index >= 0 {
			heap.Remove(&s.queue, e.index)
		}
		delete(s.entries, spec)
	}
	// Spread the new checks evenly over their interval, in the order
	// given, so a cold start of thousands of checks runs smoothly.
	now := time.Now()
	for i, e := range fresh {
		offset := e.spec.Interval * time.Duration(i) / time.Duration(len(fresh))
		e.slot = now.Add(offset)
		e.due = e.slot.Add(s.jitterLocked(e.spec.Jitter))
		heap.Push(&s.queue, e)
	}
	s.signal()
}

// Statuses returns the state of every check in the set, ordered by kind
// and target.
func (s *Scheduler) Statuses() []CheckStatus {
	s.mu.Lock()
	out := make([]CheckStatus, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e.st)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b CheckStatus) int {
		return compareSpecs(a.Spec, b.Spec)
	})
	return out
}

// compareSpecs orders specs by target and kind, then by their other
// fields so that the order is total.
func compareSpecs(a, b CheckSpec) int {
	return cmp.Or(
		a.Target.Compare(b.Target),
		cmp.Compare(a.Kind, b.Kind),
		cmp.Compare(a.Interval, b.Interval),
		cmp.Compare(a.Timeout, b.Timeout),
		cmp.Compare(a.Jitter, b.Jitter),
		cmp.Compare(a.Rise, b.Rise),
		cmp.Compare(a.Fall, b.Fall),
		cmp.Compare(a.Path, b.Path),
		cmp.Compare(a.Host, b.Host),
		cmp.Compare(a.ExpectStatus, b.ExpectStatus),
		cmp.Compare(a.BodyRegex, b.BodyRegex),
		boolCompare(a.TLSVerify, b.TLSVerify),
		cmp.Compare(a.ServerName, b.ServerName),
		cmp.Compare(a.DNSName, b.DNSName),
		cmp.Compare(a.DNSType, b.DNSType),
		cmp.Compare(a.DNSExpect, b.DNSExpect),
		cmp.Compare(a.Command, b.Command),
	)
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// Run runs the checks until ctx ends, then waits for the attempts in
// flight and returns nil. A Scheduler runs once.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("scheduler: Run called twice")
	}
	s.started = true
	s.mu.Unlock()

	var wg sync.WaitGroup
	defer wg.Wait()
	// Workers outlive their attempts and take the next one from work, so
	// that the goroutines and the stacks a dial grows are reused rather
	// than made again ten thousand times a second. A new worker starts
	// only when every existing one is busy, up to MaxInFlight.
	work := make(chan *entry)
	workers := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due []*entry
	for {
		due = due[:0]
		s.mu.Lock()
		now := time.Now()
		for len(s.queue) > 0 && !s.queue[0].due.After(now) {
			due = append(due, heap.Pop(&s.queue).(*entry))
		}
		wait := time.Hour
		if len(s.queue) > 0 {
			wait = s.queue[0].due.Sub(now)
		}
		s.mu.Unlock()

		for _, e := range due {
			select {
			case work <- e:
				continue
			default:
			}
			if workers < s.maxInFlight {
				workers++
				wg.Go(func() { s.work(ctx, e, work) })
				continue
			}
			select {
			case work <- e:
			case <-ctx.Done():
				return nil
			}
		}
		if len(due) > 0 {
			continue // starting them took time: look again before sleeping
		}
		timer.Reset(wait + wakeSlack)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.wake:
		}
	}
}

// work runs first, then every attempt handed to it, until ctx ends.
func (s *Scheduler) work(ctx context.Context, first *entry, work <-chan *entry) {
	s.attempt(ctx, first)
	for {
		select {
		case e := <-work:
			s.attempt(ctx, e)
		case <-ctx.Done():
			return
		}
	}
}

// attempt runs one attempt of e, records it and queues e's next run.
func (s *Scheduler) attempt(ctx context.Context, e *entry) {
	started := time.Now()
	if s.observe != nil {
		s.observe(e.spec, e.due, started)
	}
	cctx, cancel := context.WithTimeout(ctx, e.spec.Timeout)
	err := s.checkers[e.spec.Kind].Check(cctx, e.spec)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: not the target's fault
	}
	latency := time.Since(started)

	s.mu.Lock()
	if e.removed {
		s.mu.Unlock()
		return
	}
	prev, st := s.recordLocked(e, err, latency)
	s.mu.Unlock()

	if st.Health != prev {
		s.logChange(prev, st)
		if s.onChange != nil {
			s.onChange(st)
		}
	} else if err != nil {
		s.log.Debug("health check failed", "check", e.spec.String(), "health", string(st.Health),
			"failures", st.Failures, "err", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if e.removed {
		return
	}
	e.slot = nextSlot(e.slot, time.Now(), e.spec.Interval)
	e.due = e.slot.Add(s.jitterLocked(e.spec.Jitter))
	heap.Push(&s.queue, e)
	if s.queue[0] == e {
		s.signal()
	}
}

// nextSlot is the slot after slot, skipping any slot that passed whole
// before now: a run that ends late starts its next one at once, but never
// fires the runs it missed back to back.
func nextSlot(slot, now time.Time, interval time.Duration) time.Time {
	next := slot.Add(interval)
	if behind := now.Sub(next); behind >= interval {
		next = next.Add(behind / interval * interval)
	}
	return next
}

// recordLocked applies one result to e's state and returns the health
// before it and the status after it.
func (s *Scheduler) recordLocked(e *entry, err error, latency time.Duration) (Health, CheckStatus) {
	st := &e.st
	now := s.now()
	st.LastRun, st.Latency = now, latency
	if err == nil {
		st.Successes++
		st.Failures = 0
		st.LastError = ""
	} else {
		st.Failures++
		st.Successes = 0
		st.LastError = err.Error()
	}
	prev := st.Health
	switch {
	case prev != HealthUp && st.Successes >= e.spec.Rise:
		st.Health = HealthUp
	case prev != HealthDown && st.Failures >= e.spec.Fall:
		st.Health = HealthDown
	}
	if st.Health != prev {
		st.Since = now
	}
	return prev, *st
}

func (s *Scheduler) logChange(prev Health, st CheckStatus) {
	attrs := []any{"check", st.Spec.String(), "was", string(prev), "latency", st.Latency}
	if st.Health == HealthDown {
		s.log.Warn("health check down", append(attrs, "failures", st.Failures, "err", st.LastError)...)
		return
	}
	s.log.Info("health check up", append(attrs, "successes", st.Successes)...)
}

func (s *Scheduler) jitterLocked(j time.Duration) time.Duration {
	if j <= 0 {
		return 0
	}
	return time.Duration(s.rng.Int64N(int64(j)))
}

// signal wakes Run to look at the queue again; it never blocks.
func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// entryQueue is a min-heap of entries by due time.
type entryQueue []*entry

func (q entryQueue) Len() int           { return len(q) }
func (q entryQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q entryQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}

func (q *entryQueue) Push(x any) {
	e := x.(*entry)
	e.index = len(*q)
	*q = append(*q, e)
}

func (q *entryQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*q = old[:len(old)-1]
	return e
}
