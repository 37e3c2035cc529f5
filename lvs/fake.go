package lvs

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// Fake is an in-memory Backend for tests, here and in other packages. It
// behaves as the kernel does (the same errors for missing and duplicate
// objects, the hashed flag on every service), records every op, counts
// calls, can fail chosen ops, and can drift behind the reconciler's back.
// It is safe for concurrent use.
type Fake struct {
	mu        sync.Mutex
	table     Table
	ops       []Op
	counts    OpCounts
	lists     int
	applies   int
	failOp    func(Op) error
	failList  error
	closed    bool
	noJournal bool
}

// NewFake returns an empty Fake.
func NewFake() *Fake { return &Fake{table: make(Table)} }

// Name implements Backend.
func (f *Fake) Name() string { return "fake" }

// List implements Backend.
func (f *Fake) List(ctx context.Context) (Table, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.closed {
		return nil, fmt.Errorf("fake backend: %w", ErrClosed)
	}
	if f.failList != nil {
		return nil, f.failList
	}
	return f.table.Clone(), nil
}

// ListService implements Backend. It counts as a List call.
func (f *Fake) ListService(ctx context.Context, key ServiceKey) (*Service, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.closed {
		return nil, fmt.Errorf("fake backend: %w", ErrClosed)
	}
	if f.failList != nil {
		return nil, f.failList
	}
	return listService(f.table, key)
}

// SetConns sets the connection counters of the destination addr of the
// service key, as traffic through the kernel would. Like the kernel, the
// Fake keeps them when the destination is edited.
func (f *Fake) SetConns(key ServiceKey, addr netip.AddrPort, active, inactive uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	svc := f.table[key]
	if svc == nil {
		return fmt.Errorf("set connections of %s: %w", key, ErrServiceNotFound)
	}
	d := svc.Dest(addr)
	if d == nil {
		return fmt.Errorf("set connections of %s in %s: no such destination", addr, key)
	}
	d.ActiveConns, d.InactiveConns = active, inactive
	return nil
}

// Apply implements Backend.
func (f *Fake) Apply(ctx context.Context, ops []Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	if f.closed {
		return fmt.Errorf("fake backend: %w", ErrClosed)
	}
	var errs []error
	for i, op := range ops {
		if !f.noJournal {
			f.ops = append(f.ops, op)
		}
		f.counts.Count(op.Kind)
		var err error
		if f.failOp != nil {
			err = f.failOp(op)
		}
		if err == nil {
			err = applyOp(f.table, op)
		}
		if err != nil {
			errs = append(errs, &OpError{Op: op, Index: i, Err: err})
		}
	}
	return errors.Join(errs...)
}

// Close implements Backend. Later calls fail.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// FailOps makes every later op for which fn returns an error fail with
// it, without changing the table. nil restores normal behaviour.
func (f *Fake) FailOps(fn func(Op) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failOp = fn
}

// FailList makes List return err; nil restores normal behaviour.
func (f *Fake) FailList(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failList = err
}

// Flush empties the table, as `ipvsadm -C` does. It is drift: it is not
// recorded as an op.
func (f *Fake) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.table)
}

// Put adds or replaces a service (say, a foreign one) behind the
// reconciler's back.
func (f *Fake) Put(s *Service) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table.Add(s.Clone())
}

// Mutate lets fn change the table directly, to simulate any drift. fn
// must keep each service's Dests sorted (Service.SortDests).
func (f *Fake) Mutate(fn func(Table)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.table)
}

// Table returns a copy of the current table.
func (f *Fake) Table() Table {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.table.Clone()
}

// Ops returns every op applied since the last Reset, failed ones included.
func (f *Fake) Ops() []Op {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

// Counts returns the ops applied since the last Reset, by kind.
func (f *Fake) Counts() OpCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts
}

// Calls returns how many times List and Apply were called since the last
// Reset.
func (f *Fake) Calls() (list, apply int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists, f.applies
}

// Reset clears the op journal and the counters; the table stays.
func (f *Fake) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops, f.counts, f.lists, f.applies = nil, OpCounts{}, 0, 0
}

// DisableJournal stops Ops from recording, for benchmarks that apply
// hundreds of thousands of ops; the counters still count.
func (f *Fake) DisableJournal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noJournal = true
}

// String summarises the table, for test failures.
func (f *Fake) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, d := f.table.Count()
	return fmt.Sprintf("fake backend: %d services, %d destinations", s, d)
}
