//go:build linux

package lvs

import (
	"fmt"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// socketBuffer is the receive and send buffer the Kernel backend asks for.
// A batch's acknowledgements wait in the receive buffer until Apply reads
// them; each costs the kernel an skb (hundreds of bytes of accounting), so
// the default 208 KiB would overflow with a few hundred outstanding and
// the kernel would drop replies.
const socketBuffer = 8 << 20

// dialIPVS opens a generic netlink socket in netns (0: the caller's) and
// resolves the IPVS family on it. recvBuffer is the read buffer (0: the
// library peeks at each datagram's size first).
func dialIPVS(netns, recvBuffer int) (nlConn, uint16, error) {
	c, err := netlink.Dial(genetlink.Protocol, &netlink.Config{
		NetNS:             netns,
		MessageBufferSize: recvBuffer,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("open a generic netlink socket: %w", err)
	}
	fam, err := resolveFamily(c)
	if err != nil {
		_ = c.Close()
		return nil, 0, err
	}
	if err := tuneSocket(c); err != nil {
		_ = c.Close()
		return nil, 0, err
	}
	return c, fam, nil
}

func tuneSocket(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	var forceErr error
	err = rc.Control(func(fd uintptr) {
		// The FORCE variants pass the sysctl limits (rmem_max) and need
		// CAP_NET_ADMIN, which programming IPVS needs anyway.
		forceErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer)
		if forceErr == nil {
			forceErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer)
		}
	})
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	if forceErr != nil {
		// Unprivileged (say, in a test): take what the limits allow.
		if err := c.SetReadBuffer(socketBuffer); err != nil {
			return fmt.Errorf("set netlink receive buffer: %w", err)
		}
		if err := c.SetWriteBuffer(socketBuffer); err != nil {
			return fmt.Errorf("set netlink send buffer: %w", err)
		}
	}
	// Error replies need not echo the request: it is matched by sequence
	// number. Extended acks carry the kernel's reason when it gives one.
	// Old kernels lack both; that only costs detail.
	_ = c.SetOption(netlink.CapAcknowledge, true)
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	return nil
}
