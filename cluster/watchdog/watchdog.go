package watchdog

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Device opens a watchdog device. Opening arms it: from then on the kernel
// reboots the machine unless the handle is petted within the timeout or
// closed with the magic character.
type Device interface {
	Open(path string) (Handle, error)
}

// Handle is an open, armed watchdog device.
type Handle interface {
	// Pet restarts the device's countdown.
	Pet() error
	// SetTimeout asks for timeout d and returns the timeout the device
	// actually uses, which a driver may round. Devices that take no timeout
	// ioctl (plain files, FIFOs) return an error wrapping
	// ErrTimeoutUnsupported.
	SetTimeout(d time.Duration) (time.Duration, error)
	// MagicClose writes the magic character 'V' and closes: the device is
	// disarmed. If the write fails the handle stays open, so the caller may
	// retry.
	MagicClose() error
	// Close closes without the magic character: the device stays armed and
	// the kernel reboots unless the device is opened and petted again.
	Close() error
}

// Clock is the time source. It has the same shape as vip.Clock, so one clock
// may serve both.
type Clock interface {
	Now() time.Time
	// After fires once d has passed.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// SystemClock returns the wall clock.
func SystemClock() Clock { return systemClock{} }

// ErrTimeoutUnsupported reports a device that takes no timeout ioctl: a
// plain file or a FIFO standing in for /dev/watchdog. Its "timeout" is
// whatever its supervisor enforces.
var ErrTimeoutUnsupported = errors.New("device takes no watchdog timeout ioctl")

// ErrNotArmed is returned by Pet when the watchdog is not armed, for example
// after Disarm raced with the control loop.
var ErrNotArmed = errors.New("watchdog not armed")

const (
	// DefaultTimeout is the watchdog timeout when the configuration names
	// none.
	DefaultTimeout = 10 * time.Second
	// MinLoopFactor is how many control-loop periods the timeout must span
	// at least, so that one slow iteration never reboots a healthy leader.
	MinLoopFactor = 3
	// MaxTimeout is the largest timeout accepted: softdog's maximum, and
	// beyond what hardware watchdogs offer.
	MaxTimeout = 65535 * time.Second
)

// Config is the `watchdog:` section of clusterd's configuration. An empty
// Device disables the watchdog.
type Config struct {
	// Device is the watchdog device path, normally /dev/watchdog. A plain
	// file or a FIFO read by a supervisor may stand in for it in tests.
	Device string `yaml:"device"`
	// Timeout is the device timeout in whole seconds; zero means
	// DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// Enabled reports whether a device is configured.
func (c Config) Enabled() bool { return c.Device != "" }

// EffectiveTimeout is Timeout, or DefaultTimeout when Timeout is zero.
func (c Config) EffectiveTimeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Validate checks an enabled configuration against the control-loop period
// of the leader that will pet the device.
func (c Config) Validate(loopPeriod time.Duration) error {
	if !c.Enabled() {
		if c.Timeout != 0 {
			return errors.New("watchdog.device: required when watchdog.timeout is set")
		}
		return nil
	}
	if c.Device[0] != '/' {
		return fmt.Errorf("watchdog.device: %q is not an absolute path", c.Device)
	}
	return Validate(c.EffectiveTimeout(), loopPeriod)
}

// Validate checks a watchdog timeout: a positive whole number of seconds up
// to MaxTimeout, and at least MinLoopFactor control-loop periods.
func Validate(timeout, loopPeriod time.Duration) error {
	if err := validTimeout(timeout); err != nil {
		return err
	}
	if loopPeriod <= 0 {
		return fmt.Errorf("watchdog.timeout: control-loop period %s must be positive", loopPeriod)
	}
	if timeout < MinLoopFactor*loopPeriod {
		return fmt.Errorf("watchdog.timeout: %s is less than %d× the control-loop period %s (at least %s): one slow iteration would reboot a healthy leader",
			timeout, MinLoopFactor, loopPeriod, MinLoopFactor*loopPeriod)
	}
	return nil
}

func validTimeout(timeout time.Duration) error {
	switch {
	case timeout <= 0:
		return fmt.Errorf("watchdog.timeout: %s must be positive", timeout)
	case timeout%time.Second != 0:
		return fmt.Errorf("watchdog.timeout: %s is not a whole number of seconds (the kernel counts seconds)", timeout)
	case timeout > MaxTimeout:
		return fmt.Errorf("watchdog.timeout: %s exceeds the maximum %s", timeout, MaxTimeout)
	}
	return nil
}

// Status is a snapshot of a Watchdog for status output and metrics.
type Status struct {
	Armed bool
	// Timeout is the timeout the device reported when armed, or the
	// configured one when the device takes no timeout ioctl.
	Timeout time.Duration
	ArmedAt time.Time
	LastPet time.Time
}

// Watchdog is the leader's handle on the watchdog device. Its methods are
// idempotent and safe for concurrent use.
type Watchdog struct {
	dev     Device
	path    string
	timeout time.Duration
	log     *slog.Logger
	clock   Clock

	mu        sync.Mutex
	h         Handle // nil while disarmed
	effective time.Duration
	armedAt   time.Time
	lastPet   time.Time
	unhealthy string // why the last PetIfHealthy skipped; "" when it petted
}

// New returns a disarmed Watchdog for the device at path. A nil clock means
// the system clock, a nil logger discards.
func New(dev Device, path string, timeout time.Duration, log *slog.Logger, clock Clock) (*Watchdog, error) {
	if dev == nil {
		return nil, errors.New("watchdog: nil device")
	}
	if path == "" {
		return nil, errors.New("watchdog.device: required")
	}
	if err := validTimeout(timeout); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		clock = systemClock{}
	}
	return &Watchdog{
		dev:     dev,
		path:    path,
		timeout: timeout,
		log:     log.With("component", "watchdog", "device", path),
		clock:   clock,
	}, nil
}

// Arm opens the device and sets its timeout; call it when taking
// leadership. Arming an armed Watchdog does nothing. If the device rejects
// the timeout it is disarmed again and Arm fails, because a device left at
// an unknown timeout may reboot a healthy leader.
func (w *Watchdog) Arm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.h != nil {
		return nil
	}
	h, err := w.dev.Open(w.path)
	if err != nil {
		return fmt.Errorf("arm watchdog %s: %w", w.path, err)
	}
	effective, err := h.SetTimeout(w.timeout)
	switch {
	case errors.Is(err, ErrTimeoutUnsupported):
		// A file or FIFO standing in for the device: the writes are the
		// contract and the supervisor owns the timeout.
		w.log.Warn("watchdog device takes no timeout ioctl; its supervisor's timeout applies",
			"timeout", w.timeout, "err", err)
		effective = w.timeout
	case err != nil:
		if cerr := h.MagicClose(); cerr != nil {
			return fmt.Errorf("arm watchdog %s: %w (and disarming failed, the device stays armed at its own timeout: %v)", w.path, err, cerr)
		}
		return fmt.Errorf("arm watchdog %s: %w", w.path, err)
	case effective != w.timeout:
		w.log.Warn("watchdog device rounded the timeout", "requested", w.timeout, "effective", effective)
	}
	now := w.clock.Now()
	w.h, w.effective, w.armedAt, w.lastPet, w.unhealthy = h, effective, now, now, ""
	w.log.Info("watchdog armed", "timeout", effective)
	return nil
}

// Pet restarts the device's countdown. It returns ErrNotArmed when the
// watchdog is disarmed.
func (w *Watchdog) Pet() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.petLocked()
}

func (w *Watchdog) petLocked() error {
	if w.h == nil {
		return ErrNotArmed
	}
	if err := w.h.Pet(); err != nil {
		return fmt.Errorf("pet watchdog %s: %w", w.path, err)
	}
	w.lastPet = w.clock.Now()
	return nil
}

// PetIfHealthy pets the device only when h is OK within b, and reports
// whether it did. It logs when petting stops (with the reason) and when it
// resumes, not on every skipped pet, so a sick leader does not flood the
// log while it waits for the kernel.
func (w *Watchdog) PetIfHealthy(h Health, b Bounds) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.h == nil {
		return false, ErrNotArmed
	}
	now := w.clock.Now()
	ok, reason := h.OK(now, b)
	if !ok {
		if w.unhealthy == "" {
			w.log.Warn("watchdog: not petting, the kernel reboots this director unless health returns",
				"reason", reason, "last_pet", w.lastPet, "reboot_after", w.lastPet.Add(w.effective).Sub(now))
		} else {
			w.log.Debug("watchdog: still not petting", "reason", reason)
		}
		w.unhealthy = reason
		return false, nil
	}
	if err := w.petLocked(); err != nil {
		return false, err
	}
	if w.unhealthy != "" {
		w.log.Info("watchdog: healthy again, petting resumed", "was", w.unhealthy)
		w.unhealthy = ""
	}
	return true, nil
}

// Disarm closes the device with the magic character; call it on a clean
// step-down, after the VIPs are released. Disarming a disarmed Watchdog
// does nothing. If it fails the Watchdog stays armed, so the caller may
// retry or keep petting.
func (w *Watchdog) Disarm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.h == nil {
		return nil
	}
	if err := w.h.MagicClose(); err != nil {
		return fmt.Errorf("disarm watchdog %s: %w", w.path, err)
	}
	w.h = nil
	w.log.Info("watchdog disarmed", "armed_for", w.clock.Now().Sub(w.armedAt))
	return nil
}

// Status returns a snapshot.
func (w *Watchdog) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.h == nil {
		return Status{Timeout: w.timeout}
	}
	return Status{Armed: true, Timeout: w.effective, ArmedAt: w.armedAt, LastPet: w.lastPet}
}
