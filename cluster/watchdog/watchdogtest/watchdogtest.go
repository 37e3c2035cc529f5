// Package watchdogtest provides fakes for package watchdog: a Device that
// records every operation and judges, by a Clock the test drives, whether
// the kernel would have fired.
package watchdogtest

import (
	"errors"
	"fmt"
	"github.com/directorate/directorate/internal/fakeclock"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/directorate/directorate/cluster/watchdog"
)

// Clock is a fake watchdog.Clock driven by the test with Advance; see
// fakeclock.Clock for Waiters and AfterCalls.
type Clock = fakeclock.Clock

var _ watchdog.Clock = (*Clock)(nil)

// NewClock returns a clock at start.
func NewClock(start time.Time) *Clock { return fakeclock.New(start) }

// Op is one kind of device operation.
type Op string

// The operations a Device records.
const (
	OpOpen       Op = "open"
	OpSetTimeout Op = "set-timeout"
	OpPet        Op = "pet"
	OpMagicClose Op = "magic-close"
	OpClose      Op = "close"
)

// Event is one successful device operation.
type Event struct {
	Op Op
	At time.Time
	// Timeout is the device timeout after the operation.
	Timeout time.Duration
}

// DefaultTimeout is the fake's timeout until SetTimeout: softdog's default
// soft_margin.
const DefaultTimeout = 60 * time.Second

// Device is a fake watchdog.Device with the kernel's semantics: opening
// arms it and counts as a pet, only one handle may be open (EBUSY), a magic
// close disarms, a plain close leaves it armed, and it fires once it has
// been armed without a pet for longer than its timeout. Firing latches, as
// a reboot would.
type Device struct {
	clock watchdog.Clock

	mu             sync.Mutex
	events         []Event
	paths          []string
	open           *handle
	armed          bool
	lastPet        time.Time
	timeout        time.Duration
	fired          bool
	firedAt        time.Time
	noTimeoutIoctl bool
	openErr        error
	petErr         error
	timeoutErr     error
	magicErr       error
}

var _ watchdog.Device = (*Device)(nil)

// NewDevice returns a disarmed device judged by clock.
func NewDevice(clock watchdog.Clock) *Device {
	return &Device{clock: clock, timeout: DefaultTimeout}
}

// NoTimeoutIoctl makes SetTimeout fail with ENOTTY, as a plain file or FIFO
// standing in for the device does.
func (d *Device) NoTimeoutIoctl() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noTimeoutIoctl = true
}

// FailOpen makes every later Open fail with err (nil to stop).
func (d *Device) FailOpen(err error) { d.setErr(&d.openErr, err) }

// FailPet makes every later Pet fail with err (nil to stop).
func (d *Device) FailPet(err error) { d.setErr(&d.petErr, err) }

// FailSetTimeout makes every later SetTimeout fail with err (nil to stop).
func (d *Device) FailSetTimeout(err error) { d.setErr(&d.timeoutErr, err) }

// FailMagicClose makes every later MagicClose fail with err before
// anything is written (nil to stop).
func (d *Device) FailMagicClose(err error) { d.setErr(&d.magicErr, err) }

func (d *Device) setErr(p *error, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	*p = err
}

// judgeLocked latches a firing that happened by now. It is called on every
// operation and query, so firing is decided by the clock, not by when the
// test looks.
func (d *Device) judgeLocked(now time.Time) {
	if d.armed && !d.fired && now.Sub(d.lastPet) > d.timeout {
		d.fired, d.firedAt = true, d.lastPet.Add(d.timeout)
	}
}

func (d *Device) recordLocked(op Op, now time.Time) {
	d.events = append(d.events, Event{Op: op, At: now, Timeout: d.timeout})
}

// Open arms the device.
func (d *Device) Open(path string) (watchdog.Handle, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock.Now()
	d.judgeLocked(now)
	if d.openErr != nil {
		return nil, fmt.Errorf("open %s: %w", path, d.openErr)
	}
	if d.open != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.EBUSY}
	}
	d.open = &handle{d: d}
	d.armed, d.lastPet = true, now
	d.paths = append(d.paths, path)
	d.recordLocked(OpOpen, now)
	return d.open, nil
}

// Events returns every successful operation in order.
func (d *Device) Events() []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.events)
}

// Ops returns the operations in order, without times.
func (d *Device) Ops() []Op {
	d.mu.Lock()
	defer d.mu.Unlock()
	ops := make([]Op, len(d.events))
	for i, e := range d.events {
		ops[i] = e.Op
	}
	return ops
}

// Count counts successful operations of kind op.
func (d *Device) Count(op Op) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, e := range d.events {
		if e.Op == op {
			n++
		}
	}
	return n
}

// Paths lists the paths opened, in order.
func (d *Device) Paths() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.paths)
}

// Armed reports whether the device is counting down.
func (d *Device) Armed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.armed
}

// IsOpen reports whether a handle is open.
func (d *Device) IsOpen() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.open != nil
}

// Timeout returns the device's current timeout.
func (d *Device) Timeout() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.timeout
}

// Fired reports whether the device has fired by the clock's current time,
// and when.
func (d *Device) Fired() (bool, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.judgeLocked(d.clock.Now())
	return d.fired, d.firedAt
}

type handle struct {
	d      *Device
	closed bool
}

var errClosed = errors.New("watchdogtest: handle closed")

// op runs f under the device lock after judging the clock. On a closed
// handle, closing again succeeds without effect, as it does for the real
// device, and anything else fails.
func (h *handle) op(closing bool, f func(now time.Time) error) error {
	d := h.d
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock.Now()
	d.judgeLocked(now)
	if h.closed {
		if closing {
			return nil
		}
		return errClosed
	}
	return f(now)
}

func (h *handle) Pet() error {
	return h.op(false, func(now time.Time) error {
		if h.d.petErr != nil {
			return h.d.petErr
		}
		h.d.lastPet = now
		h.d.recordLocked(OpPet, now)
		return nil
	})
}

func (h *handle) SetTimeout(t time.Duration) (time.Duration, error) {
	var got time.Duration
	err := h.op(false, func(now time.Time) error {
		d := h.d
		switch {
		case d.noTimeoutIoctl:
			return fmt.Errorf("%w (%w)", watchdog.ErrTimeoutUnsupported, syscall.ENOTTY)
		case d.timeoutErr != nil:
			return d.timeoutErr
		}
		// Like the kernel: whole seconds, rounded up, and setting the
		// timeout pets the device.
		d.timeout = (t + time.Second - 1) / time.Second * time.Second
		d.lastPet = now
		d.recordLocked(OpSetTimeout, now)
		got = d.timeout
		return nil
	})
	return got, err
}

func (h *handle) MagicClose() error {
	return h.op(true, func(now time.Time) error {
		d := h.d
		if d.magicErr != nil {
			return d.magicErr
		}
		h.closed, d.open = true, nil
		// A fired device has rebooted the machine; the magic character
		// comes too late to undo that.
		if !d.fired {
			d.armed = false
		}
		d.recordLocked(OpMagicClose, now)
		return nil
	})
}

func (h *handle) Close() error {
	return h.op(true, func(now time.Time) error {
		h.closed, h.d.open = true, nil
		h.d.recordLocked(OpClose, now)
		return nil
	})
}
