package vip

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Defaults for Options. See the package documentation for how they relate to
// the raft timers.
const (
	// DefaultLifetime is the kernel lifetime each VIP is added with. Three
	// seconds survives two missed renewals (a GC pause, a starved CPU) on a
	// healthy leader, yet a crashed or hung clusterd loses its VIPs within
	// FenceWait(DefaultLifetime) = 4.25 s.
	DefaultLifetime = 3 * time.Second
	// DefaultBurstCount announcements follow a claim: one at once, so
	// failover is not delayed, and two more for a frame lost to a busy
	// link or a switch port still learning.
	DefaultBurstCount = 3
	// DefaultBurstInterval spaces the burst.
	DefaultBurstInterval = 100 * time.Millisecond
	// DefaultRepeatInterval re-announces held VIPs. It repairs a neighbour
	// that missed the burst, or that cached the old director's MAC while,
	// with fence none, both directors answered ARP for the VIP (at most
	// FenceWait(Lifetime)); one small broadcast per VIP every five seconds
	// costs nothing.
	DefaultRepeatInterval = 5 * time.Second
)

// KernelExpirySlack is how much later than its lifetime the kernel may
// delete an expired address. Linux checks lifetimes from one delayed work
// item that, after each run, sleeps at least a second (ADDRCONF_TIMER_FUZZ_MAX)
// and rounds its wake-up to a whole second when that is within a quarter
// second, for IPv4 (check_lifetime) and IPv6 (addrconf_verify) alike: so an
// address outlives its lifetime by up to one second, plus a quarter second
// here for workqueue latency on a loaded host.
const KernelExpirySlack = 1250 * time.Millisecond

// Clock is the time source; tests use viptest.Clock.
type Clock interface {
	Now() time.Time
	// After fires once d has passed.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Options tune a Manager. Zero fields take the defaults.
type Options struct {
	// Lifetime is each VIP's kernel valid and preferred lifetime: how long
	// a VIP outlives a clusterd that crashed or hung. The kernel counts
	// whole seconds, so it must be a whole number of seconds, at least one.
	Lifetime time.Duration
	// RenewInterval is how often the leader should call Renew. It must be
	// at most half of Lifetime so that one late renewal never drops a VIP.
	// Default Lifetime/3.
	RenewInterval time.Duration
	// BurstCount is how many announcements follow a claim (at least 1).
	BurstCount int
	// BurstInterval spaces them; Claim returns after
	// (BurstCount-1)×BurstInterval.
	BurstInterval time.Duration
	// RepeatInterval is how often Renew re-announces each held VIP.
	// Negative disables repeats.
	RepeatInterval time.Duration
	// PrefixRoute lets the kernel install a connected route for each VIP's
	// prefix. Off by default: the route would exist only on the leader, so
	// a route the director relies on (to real servers, for example) would
	// appear and vanish with leadership and with the VIP's lifetime, and a
	// follower's hot-standby IPVS table would lack it until failover. A
	// director gets its routes from its own permanent addresses; a VIP
	// only adds the local address (and the local route that accepts its
	// traffic).
	PrefixRoute bool
	// Clock defaults to the system clock.
	Clock Clock
	// ConfirmLease, when set, is called before every announcement after the
	// first of a burst; an error stops the burst. The leader passes a fresh
	// lease check, so a leader stopped mid-burst and deposed meanwhile does
	// not steer neighbours back to itself when it wakes.
	ConfirmLease func(ctx context.Context) error
}

// withDefaults fills zero fields and validates the result, naming the field
// at fault.
// Resolve returns o with the defaults filled in, or an error naming each
// invalid field: what NewManager would accept or refuse.
func (o Options) Resolve() (Options, error) { return o.withDefaults() }

func (o Options) withDefaults() (Options, error) {
	if o.Lifetime == 0 {
		o.Lifetime = DefaultLifetime
	}
	if o.RenewInterval == 0 {
		o.RenewInterval = o.Lifetime / 3
	}
	if o.BurstCount == 0 {
		o.BurstCount = DefaultBurstCount
	}
	if o.BurstInterval == 0 {
		o.BurstInterval = DefaultBurstInterval
	}
	if o.RepeatInterval == 0 {
		o.RepeatInterval = DefaultRepeatInterval
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	var errs []error
	switch {
	case o.Lifetime < time.Second:
		errs = append(errs, fmt.Errorf("lifetime: %s is below the kernel's one-second granularity", o.Lifetime))
	case o.Lifetime%time.Second != 0:
		errs = append(errs, fmt.Errorf("lifetime: %s is not a whole number of seconds (the kernel counts address lifetimes in seconds)", o.Lifetime))
	case o.Lifetime > time.Hour:
		errs = append(errs, fmt.Errorf("lifetime: %s exceeds 1h; a crashed director would keep its VIPs that long", o.Lifetime))
	}
	if o.RenewInterval < 0 || o.RenewInterval > o.Lifetime/2 {
		errs = append(errs, fmt.Errorf("renew_interval: %s must be positive and at most half the lifetime (%s), so one late renewal never drops a VIP", o.RenewInterval, o.Lifetime))
	}
	if o.BurstCount < 1 || o.BurstCount > 100 {
		errs = append(errs, fmt.Errorf("burst_count: %d must be between 1 and 100", o.BurstCount))
	}
	if o.BurstInterval < 0 {
		errs = append(errs, fmt.Errorf("burst_interval: %s must not be negative", o.BurstInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return Options{}, fmt.Errorf("vip options: %w", err)
	}
	return o, nil
}

// Fence is how a new leader protects against the old leader's VIPs.
type Fence string

// Fencing modes.
const (
	// FenceNone claims at once. Failover takes an election; if the old
	// director's host is alive but its clusterd crashed or hung, both hold
	// the VIP for at most FenceWait(Lifetime) after the old leader's last
	// renewal, and gratuitous ARP decides where traffic goes.
	FenceNone Fence = "none"
	// FenceLease waits FenceWait(Lifetime) after winning before claiming,
	// so the old leader's VIP has expired and the two never overlap, at the
	// price of that much longer failover.
	FenceLease Fence = "lease"
)

// ParseFence checks a configured fencing mode.
func ParseFence(s string) (Fence, error) {
	switch f := Fence(s); f {
	case FenceNone, FenceLease:
		return f, nil
	}
	return "", fmt.Errorf("fence: %q is neither %q nor %q", s, FenceLease, FenceNone)
}

// FenceWait is the longest an old leader's VIP, added with lifetime and
// renewed for the last time no later than the new leader's election, can
// remain in the old leader's kernel: the lifetime the kernel was given
// (rounded up to whole seconds) plus KernelExpirySlack. A new leader with
// fence lease sleeps this long after winning before it claims. lifetime
// must be the largest any director uses.
func FenceWait(lifetime time.Duration) time.Duration {
	return time.Duration(lifetimeSeconds(lifetime))*time.Second + KernelExpirySlack
}

// lifetimeSeconds rounds up, so an address never lives shorter than asked.
func lifetimeSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}
