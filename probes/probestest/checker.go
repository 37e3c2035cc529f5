package probestest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/directorate/directorate/probes"
)

// ErrDown is what a target set down fails its checks with.
var ErrDown = errors.New("fake check: target down")

// CheckCall is one recorded Check.
type CheckCall struct {
	Spec probes.CheckSpec
	// At is the wall time when Check was called.
	At time.Time
	// Deadline is the context's deadline (zero if none).
	Deadline time.Time
}

// Checker is a fake probes.Checker for every kind. A target passes its
// checks until set down; a hung target holds its checks until their
// context ends, as a server that never answers does.
type Checker struct {
	mu    sync.Mutex
	down  map[netip.AddrPort]bool
	hung  map[netip.AddrPort]bool
	calls []CheckCall
}

var _ probes.Checker = (*Checker)(nil)

// NewChecker returns a Checker on which every target is up.
func NewChecker() *Checker {
	return &Checker{down: make(map[netip.AddrPort]bool), hung: make(map[netip.AddrPort]bool)}
}

// SetUp makes target's checks pass (true) or fail with ErrDown (false).
func (c *Checker) SetUp(target netip.AddrPort, up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down[target] = !up
}

// SetHung makes target's checks wait for their context to end and fail
// with its error.
func (c *Checker) SetHung(target netip.AddrPort, hung bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hung[target] = hung
}

// Calls returns every Check so far, in call order.
func (c *Checker) Calls() []CheckCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]CheckCall(nil), c.calls...)
}

// CallsOf counts the checks of spec so far.
func (c *Checker) CallsOf(spec probes.CheckSpec) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, call := range c.calls {
		if call.Spec == spec {
			n++
		}
	}
	return n
}

// Check implements probes.Checker.
func (c *Checker) Check(ctx context.Context, spec probes.CheckSpec) error {
	call := CheckCall{Spec: spec, At: time.Now()}
	call.Deadline, _ = ctx.Deadline()
	c.mu.Lock()
	c.calls = append(c.calls, call)
	hung, down := c.hung[spec.Target], c.down[spec.Target]
	c.mu.Unlock()
	if hung {
		<-ctx.Done()
		return fmt.Errorf("fake check %s: %w", spec.Target, ctx.Err())
	}
	if down {
		return fmt.Errorf("fake check %s: %w", spec.Target, ErrDown)
	}
	return nil
}

// Checkers returns c as the checker of every kind, for
// probes.SchedulerOptions.Checkers.
func (c *Checker) Checkers() map[probes.CheckKind]probes.Checker {
	m := make(map[probes.CheckKind]probes.Checker)
	for _, k := range []probes.CheckKind{probes.CheckNone, probes.CheckTCP, probes.CheckHTTP, probes.CheckHTTPS, probes.CheckDNS, probes.CheckExec} {
		m[k] = c
	}
	return m
}
