package probes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// connectAbortive opens a TCP connection to target and closes it with a
// reset, returning nil if the connection opened.
//
// It does with system calls what net.Dialer would, less what a check does
// not need: no resolver, no getsockname or getpeername, no TCP_NODELAY,
// and SO_LINGER 0 set once before connecting so that every way out closes
// with a reset. At 10,000 checks a second those calls and net.Conn's
// allocations cost about a third of the checker's CPU. The connect waits
// for writability in Go's netpoller through an os.File, so an attempt
// that hangs holds a goroutine, not a thread.
func connectAbortive(ctx context.Context, target netip.AddrPort) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sa, family, err := sockaddrOf(target)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		_ = unix.Close(fd) // nothing was sent on it
		return os.NewSyscallError("setsockopt SO_LINGER", err)
	}
	switch err := connectAgain(fd, sa); {
	case err == nil:
		return closeFD(fd) // connected at once, as loopback can
	case !errors.Is(err, unix.EINPROGRESS):
		_ = unix.Close(fd) // the connect's error is the answer
		return os.NewSyscallError("connect", err)
	}

	// Only now is the socket handed to the netpoller: registered before
	// connect, an unconnected socket reads as writable and would cost a
	// wasted wake-up per check. os.NewFile polls it because it is
	// non-blocking, and owns it from here on.
	f := os.NewFile(uintptr(fd), "tcp check")
	defer f.Close()
	if d, ok := ctx.Deadline(); ok {
		if err := f.SetWriteDeadline(d); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
	}
	if ctx.Done() != nil {
		// A cancelled context (shutdown) ends the wait as the deadline
		// would.
		stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw conn: %w", err)
	}
	var connErr error
	err = rc.Write(func(fd uintptr) bool {
		// A second connect reports the outcome in one call: nil or
		// EISCONN once open, EALREADY while the handshake is under way
		// (a spurious wake-up), the failure otherwise. SO_ERROR alone
		// cannot tell "still connecting" from "connected".
		connErr = connectAgain(int(fd), sa)
		return !errors.Is(connErr, unix.EALREADY) && !errors.Is(connErr, unix.EINPROGRESS)
	})
	switch {
	case err != nil:
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(ctxErr, context.DeadlineExceeded) {
			return ctxErr
		}
		return err // os.ErrDeadlineExceeded: no answer in time
	case connErr == nil, errors.Is(connErr, unix.EISCONN):
		return nil
	}
	return os.NewSyscallError("connect", connErr)
}

// connectAgain is connect(2), retried on EINTR.
func connectAgain(fd int, sa unix.Sockaddr) error {
	for {
		err := unix.Connect(fd, sa)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// closeFD closes a connected socket, which SO_LINGER 0 turns into a reset.
func closeFD(fd int) error {
	if err := unix.Close(fd); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// sockaddrOf is target as a socket address and its address family. An
// IPv4-mapped IPv6 address is dialled as IPv4, as net.Dial does.
func sockaddrOf(target netip.AddrPort) (unix.Sockaddr, int, error) {
	a, port := target.Addr(), int(target.Port())
	if a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Port: port, Addr: a.Unmap().As4()}, unix.AF_INET, nil
	}
	if !a.Is6() {
		return nil, 0, fmt.Errorf("address %q: not IPv4 or IPv6", a)
	}
	sa := &unix.SockaddrInet6{Port: port, Addr: a.As16()}
	if zone := a.Zone(); zone != "" {
		id, err := zoneIndex(zone)
		if err != nil {
			return nil, 0, err
		}
		sa.ZoneId = id
	}
	return sa, unix.AF_INET6, nil
}

// zoneIndex is the interface index of an IPv6 zone, given as an index or
// an interface name.
func zoneIndex(zone string) (uint32, error) {
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, fmt.Errorf("zone %q: %w", zone, err)
	}
	return uint32(ifi.Index), nil
}
