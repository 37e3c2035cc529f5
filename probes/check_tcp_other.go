//go:build !linux

package probes

import (
	"context"
	"net"
	"net/netip"
)

// connectAbortive opens a TCP connection to target with net.Dialer and
// closes it with a reset. Directors run on Linux, whose version skips
// what a check does not need; this one keeps the package building
// elsewhere for development.
func connectAbortive(ctx context.Context, target netip.AddrPort) error {
	d := checkDialer()
	conn, err := d.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return err
	}
	closeAbortive(conn.(*net.TCPConn))
	return nil
}
