package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// PacketAnnouncer sends announcements as whole Ethernet frames on raw
// AF_PACKET sockets (CAP_NET_RAW). It opens one socket per announcement:
// announcements are rare (a burst on failover, then one every few seconds),
// and a fresh socket can never be left bound to a link that has since gone.
type PacketAnnouncer struct {
	// openSocket returns a raw packet socket; tests open it in a network
	// namespace of their own.
	openSocket func() (int, error)
	// forwarding reports whether the link forwards IPv6, which sets the
	// advertisement's router flag exactly as the kernel's own
	// advertisements do.
	forwarding func(ifname string) bool
}

var _ Announcer = (*PacketAnnouncer)(nil)

// NewPacketAnnouncer returns an announcer for the calling process's network
// namespace.
func NewPacketAnnouncer() *PacketAnnouncer {
	return &PacketAnnouncer{openSocket: openPacketSocket, forwarding: ipv6Forwarding}
}

// openPacketSocket opens a send-only raw socket: protocol 0 makes the kernel
// queue no received frames on it.
func openPacketSocket() (int, error) {
	return unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
}

// ipv6Forwarding reads the link's IPv6 forwarding sysctl. An unreadable one
// (IPv6 disabled, odd interface name) reports false: a host that cannot
// read it is not routing IPv6 through that link.
func ipv6Forwarding(ifname string) bool {
	if ifname == "" || ifname == "." || ifname == ".." || strings.Contains(ifname, "/") {
		return false
	}
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + ifname + "/forwarding")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// GratuitousARP broadcasts an ARP request and an ARP reply announcing ip:
// some hosts and routers update their cache only from one of the two.
func (a *PacketAnnouncer) GratuitousARP(link Link, ip netip.Addr) error {
	var errs []error
	for _, op := range []ARPOp{ARPRequest, ARPReply} {
		frame, err := BuildGratuitousARP(op, link.HardwareAddr, ip)
		if err != nil {
			return fmt.Errorf("gratuitous ARP for %s on %s: %w", ip, link.Name, err)
		}
		if err := a.send(link, etherTypeARP, broadcastMAC, frame); err != nil {
			errs = append(errs, fmt.Errorf("gratuitous ARP (op %d) for %s on %s: %w", op, ip, link.Name, err))
		}
	}
	return errors.Join(errs...)
}

// UnsolicitedNA sends an unsolicited neighbour advertisement for ip.
func (a *PacketAnnouncer) UnsolicitedNA(link Link, ip netip.Addr) error {
	frame, err := BuildUnsolicitedNA(link.HardwareAddr, ip, a.forwarding(link.Name))
	if err != nil {
		return fmt.Errorf("neighbour advertisement for %s on %s: %w", ip, link.Name, err)
	}
	if err := a.send(link, etherTypeIPv6, allNodesMAC, frame); err != nil {
		return fmt.Errorf("neighbour advertisement for %s on %s: %w", ip, link.Name, err)
	}
	return nil
}

func (a *PacketAnnouncer) send(link Link, proto uint16, dst net.HardwareAddr, frame []byte) error {
	fd, err := a.openSocket()
	if err != nil {
		return fmt.Errorf("open packet socket: %w", err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Ifindex: link.Index, Protocol: htons(proto), Halen: 6}
	copy(sa.Addr[:], dst)
	if err := unix.Sendto(fd, frame, 0, sa); err != nil {
		return fmt.Errorf("send on link %d: %w", link.Index, err)
	}
	return nil
}

// htons converts to network byte order, as sockaddr_ll's protocol wants.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}
