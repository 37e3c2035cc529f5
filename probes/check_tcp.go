package probes

import (
	"context"
	"fmt"
	"net"
)

// TCPChecker is the checker of CheckTCP: an attempt succeeds when a TCP
// connection to the target opens, and the connection is then closed with
// a reset.
//
// A refused connection fails with an error that matches
// syscall.ECONNREFUSED under errors.Is; one that got no answer by the
// context's deadline fails with an error that matches
// os.ErrDeadlineExceeded, so callers can tell a server that is down from
// one that is unreachable or too busy. A cancelled context ends the
// attempt at once with the context's error.
type TCPChecker struct{}

// NewTCPChecker returns the real TCP checker.
func NewTCPChecker() *TCPChecker { return &TCPChecker{} }

// Check implements Checker.
func (c *TCPChecker) Check(ctx context.Context, spec CheckSpec) error {
	if err := connectAbortive(ctx, spec.Target); err != nil {
		return fmt.Errorf("tcp connect %s: %w", spec.Target, err)
	}
	return nil
}

// checkDialer dials without TCP keep-alive: a check's connection lives
// for one exchange, and turning keep-alive on would cost three system
// calls per check for nothing.
func checkDialer() net.Dialer { return net.Dialer{KeepAlive: -1} }

// closeAbortive closes a check's connection with a reset rather than a
// FIN. A director checking thousands of servers every second would
// otherwise hold a TIME_WAIT socket per check for a minute; HAProxy's
// checks close the same way for the same reason.
func closeAbortive(conn *net.TCPConn) {
	_ = conn.SetLinger(0) // best effort: a failure only leaves a TIME_WAIT behind
	_ = conn.Close()      // the check already has its answer
}
