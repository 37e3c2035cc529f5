package cluster

import (
	"context"
	"sync"
)

// dutyRunner runs the leader's background duties for as long as a
// leadership period lasts. The leadership loop starts them once the
// period's barrier completed and stops them when leadership is lost;
// Shutdown closes the runner, after which nothing starts again.
type dutyRunner struct {
	parent context.Context
	loops  []func(ctx context.Context, term uint64)

	mu     sync.Mutex
	closed bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newDutyRunner(parent context.Context, loops ...func(ctx context.Context, term uint64)) *dutyRunner {
	return &dutyRunner{parent: parent, loops: loops}
}

// start runs every loop for the leadership of term, stopping those of an
// earlier period first. Loops of a stopped period may still be finishing
// an operation, which then fails: this node no longer leads.
func (d *dutyRunner) start(term uint64) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if d.cancel != nil {
		d.cancel()
	}
	ctx, cancel := context.WithCancel(d.parent)
	d.cancel = cancel
	for _, loop := range d.loops {
		d.wg.Go(func() { loop(ctx, term) })
	}
}

// stop ends the current period's loops without waiting for them.
func (d *dutyRunner) stop() {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancel != nil {
		d.cancel()
		d.cancel = nil
	}
}

// close stops the loops for good and waits until they returned.
func (d *dutyRunner) close() {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.closed = true
	if d.cancel != nil {
		d.cancel()
		d.cancel = nil
	}
	d.mu.Unlock()
	d.wg.Wait()
}
