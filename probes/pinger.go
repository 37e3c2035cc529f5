package probes

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// ErrTimeout is returned (wrapped) by a Pinger when no echo reply arrived
// within the timeout.
var ErrTimeout = errors.New("no echo reply")

// ErrClosed is returned (wrapped) by Ping on a Pinger that has been closed.
var ErrClosed = errors.New("pinger closed")

// Pinger sends ICMP echo requests. It is the kernel side of ping-node
// reachability; ICMPPinger is the real one and probestest.Pinger the fake.
type Pinger interface {
	// Ping sends one echo request to addr and waits at most timeout for the
	// matching reply. It returns the round-trip time, or an error: one
	// wrapping ErrTimeout when nothing came back in time, the context's
	// error when ctx ended first, or why the request could not be sent
	// (no route, no socket for addr's family). Ping is safe for concurrent
	// use, and a slow or silent addr never delays a Ping to another.
	Ping(ctx context.Context, addr netip.Addr, timeout time.Duration) (time.Duration, error)
}

// Clock is the time source of the probers; tests drive probestest.Clock.
type Clock interface {
	Now() time.Time
	// After fires once d has passed.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
