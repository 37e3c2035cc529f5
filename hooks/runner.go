package hooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxPending is how many events RunAsync queues behind the one
// running before it drops the oldest.
const DefaultMaxPending = 16

// Options configure a Runner. Zero fields take the defaults.
type Options struct {
	// Executor runs the commands; default ShellExecutor{}.
	Executor Executor
	// Logger defaults to discarding.
	Logger *slog.Logger
	// MaxPending bounds RunAsync's queue; default DefaultMaxPending.
	MaxPending int
	// Environ is the environment commands inherit; default os.Environ.
	Environ func() []string
}

// Stats are the Runner's counters since it was made.
type Stats struct {
	// Runs counts commands started (or attempted).
	Runs uint64
	// Failures counts commands that exited non-zero, could not start or
	// were cancelled by the caller's context; timeouts are not included.
	Failures uint64
	// Timeouts counts commands killed at the hook timeout.
	Timeouts uint64
	// Dropped counts events whose commands never ran: pushed out of a full
	// RunAsync queue, queued after Close, with an unknown role, or given up
	// by Run when its context ended first.
	Dropped uint64
}

// Runner runs the hooks of role changes. Events run one at a time, in the
// order they were submitted: an on_follower never overtakes the on_leader
// before it.
type Runner struct {
	cfg     Config
	timeout time.Duration
	exec    Executor
	log     *slog.Logger
	environ func() []string
	max     int

	runs, failures, timeouts, dropped atomic.Uint64

	// turn is held while one event's commands run, by the async worker or
	// by Run.
	turn chan struct{}

	ctx    context.Context // ends at Close, killing async hooks
	cancel context.CancelFunc

	mu      sync.Mutex
	pending []Event
	idle    chan struct{} // closed when the worker exits; nil while none runs
	closed  bool
}

// NewRunner validates cfg and returns a Runner.
func NewRunner(cfg Config, o Options) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.MaxPending < 0 {
		return nil, fmt.Errorf("hooks: max pending events %d must not be negative", o.MaxPending)
	}
	if o.Executor == nil {
		o.Executor = ShellExecutor{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxPending == 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.Environ == nil {
		o.Environ = os.Environ
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{
		cfg:     cfg,
		timeout: cfg.EffectiveTimeout(),
		exec:    o.Executor,
		log:     o.Logger.With("component", "hooks"),
		environ: o.Environ,
		max:     o.MaxPending,
		turn:    make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
	}, nil
}

// Stats returns the counters.
func (r *Runner) Stats() Stats {
	return Stats{
		Runs:     r.runs.Load(),
		Failures: r.failures.Load(),
		Timeouts: r.timeouts.Load(),
		Dropped:  r.dropped.Load(),
	}
}

// Run runs ev's commands in the calling goroutine, after every event queued
// by RunAsync before it, and returns when they are done. ctx bounds the
// whole call, waiting included; failures are logged and counted, not
// returned. It works after Close too, for on_stop at shutdown.
func (r *Runner) Run(ctx context.Context, ev Event) {
	if err := r.Drain(ctx); err != nil {
		r.drop(ev, "earlier events still running: "+err.Error())
		return
	}
	select {
	case r.turn <- struct{}{}:
	case <-ctx.Done():
		r.drop(ev, "waiting for the running event: "+ctx.Err().Error())
		return
	}
	defer func() { <-r.turn }()
	r.runEvent(ctx, ev)
}

// RunAsync queues ev and returns at once; a single worker runs queued events
// in order. When MaxPending events already wait, the oldest of them is
// dropped (and logged): with hooks lagging that far behind, the latest
// transitions matter most.
func (r *Runner) RunAsync(ev Event) {
	var (
		dropped   Event
		didDrop   bool
		closedNow bool
	)
	r.mu.Lock()
	switch {
	case r.closed:
		closedNow = true
	default:
		if len(r.pending) >= r.max {
			dropped, didDrop = r.pending[0], true
			r.pending = slices.Delete(r.pending, 0, 1)
		}
		r.pending = append(r.pending, ev)
		if r.idle == nil {
			r.idle = make(chan struct{})
			go r.work(r.idle)
		}
	}
	r.mu.Unlock()
	// Logging waits for the handler, so it happens outside the lock.
	if closedNow {
		r.drop(ev, "runner closed")
	}
	if didDrop {
		r.drop(dropped, fmt.Sprintf("more than %d events pending", r.max))
	}
}

// work runs queued events until the queue is empty, then closes idle.
func (r *Runner) work(idle chan struct{}) {
	for {
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.idle = nil
			close(idle)
			r.mu.Unlock()
			return
		}
		ev := r.pending[0]
		r.pending = slices.Delete(r.pending, 0, 1)
		r.mu.Unlock()

		select {
		case r.turn <- struct{}{}:
		case <-r.ctx.Done():
			r.drop(ev, "runner closed")
			continue
		}
		r.runEvent(r.ctx, ev)
		<-r.turn
	}
}

// Drain waits until every event queued by RunAsync has run, or ctx ends.
func (r *Runner) Drain(ctx context.Context) error {
	r.mu.Lock()
	idle := r.idle
	r.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain hooks: %w", ctx.Err())
	}
}

// Close kills the commands RunAsync is running, drops the events still
// queued and waits for the worker to exit. Later RunAsync calls drop their
// events; Run still works.
func (r *Runner) Close() {
	r.mu.Lock()
	r.closed = true
	pending := r.pending
	r.pending = nil
	idle := r.idle
	r.mu.Unlock()
	r.cancel()
	for _, ev := range pending {
		r.drop(ev, "runner closed")
	}
	if idle != nil {
		<-idle
	}
}

func (r *Runner) drop(ev Event, why string) {
	r.dropped.Add(1)
	r.log.Warn("hooks dropped: their commands will not run", eventAttrs(ev, "reason", why)...)
}

func eventAttrs(ev Event, more ...any) []any {
	return append([]any{
		"role", ev.Role, "previous_role", ev.Previous,
		"node", ev.Node, "term", ev.Term, "index", ev.Index,
	}, more...)
}

func (r *Runner) runEvent(ctx context.Context, ev Event) {
	if !ev.Role.Valid() {
		r.dropped.Add(1)
		r.log.Error("hooks: unknown role, nothing run", eventAttrs(ev)...)
		return
	}
	cmds := r.cfg.Commands(ev.Role)
	if len(cmds) == 0 {
		return
	}
	// Ours come last: exec keeps the last of duplicate keys.
	env := slices.Concat(r.environ(), ev.Env())
	for i, command := range cmds {
		if err := ctx.Err(); err != nil {
			r.log.Warn("hooks: remaining commands skipped", eventAttrs(ev, "skipped", len(cmds)-i, "err", err)...)
			return
		}
		r.runOne(ctx, ev, i, command, env)
	}
}

func (r *Runner) runOne(ctx context.Context, ev Event, i int, command string, env []string) {
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	res := r.exec.Exec(cctx, command, env)
	elapsed := time.Since(start)
	r.runs.Add(1)

	attrs := eventAttrs(ev, "hook", command, "hook_index", i, "duration", elapsed, "exit_code", res.ExitCode)
	if res.Lingered {
		attrs = append(attrs, "lingered", true)
	}
	switch {
	case res.Err == nil:
		r.log.Info("hook done", attrs...)
	case ctx.Err() == nil && errors.Is(cctx.Err(), context.DeadlineExceeded):
		r.timeouts.Add(1)
		r.log.Warn("hook timed out: killed with its process group",
			append(attrs, "timeout", r.timeout, "stderr", res.Stderr)...)
	case ctx.Err() != nil:
		r.failures.Add(1)
		r.log.Warn("hook cancelled", append(attrs, "err", ctx.Err(), "stderr", res.Stderr)...)
	default:
		r.failures.Add(1)
		r.log.Warn("hook failed", append(attrs, "err", res.Err, "stderr", res.Stderr)...)
	}
}
