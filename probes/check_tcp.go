package probes

import (
	"context"
	"fmt"
	"net"
)

// TCPChecker is the checker of CheckTCP: an attempt succeeds when a TCP
// connection to the target opens.
type TCPChecker struct {
	dialer net.Dialer
}

// NewTCPChecker returns the real TCP checker.
func NewTCPChecker() *TCPChecker { return &TCPChecker{dialer: checkDialer()} }

// checkDialer dials without TCP keep-alive: a check's connection lives
// for one exchange, and turning keep-alive on would cost three system
// calls per check for nothing.
func checkDialer() net.Dialer { return net.Dialer{KeepAlive: -1} }

// Check implements Checker.
func (c *TCPChecker) Check(ctx context.Context, spec CheckSpec) error {
	// Not Dialer.DialTCP with a zero local address: that binds to port 0
	// before connecting, and a bound ephemeral port cannot be shared
	// between destinations, which ran a director out of ports and into
	// second-long stalls at 10,000 checks a second.
	conn, err := c.dialer.DialContext(ctx, "tcp", spec.Target.String())
	if err != nil {
		return fmt.Errorf("tcp connect %s: %w", spec.Target, err)
	}
	closeAbortive(conn.(*net.TCPConn))
	return nil
}

// closeAbortive closes a check's connection with a reset rather than a
// FIN. A director checking thousands of servers every second would
// otherwise hold a TIME_WAIT socket per check for a minute; HAProxy's
// checks close the same way for the same reason.
func closeAbortive(conn *net.TCPConn) {
	_ = conn.SetLinger(0) // best effort: a failure only leaves a TIME_WAIT behind
	_ = conn.Close()      // the check already has its answer
}
