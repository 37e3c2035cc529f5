package vip

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelTimeout bounds each netlink request, so a wedged kernel call
// surfaces as an error the leader's health check sees instead of a goroutine
// that never returns. It is well above the few milliseconds an address
// change takes even on a loaded machine.
const kernelTimeout = 2 * time.Second

// dumpRetries is how often Links retries a dump the kernel interrupted
// because addresses changed underneath it.
const dumpRetries = 3

// Kernel is the Netlink implementation for the running kernel, bound to the
// network namespace that was current when it was created.
type Kernel struct {
	h *netlink.Handle
}

var _ Netlink = (*Kernel)(nil)

// NewKernel opens a rtnetlink socket in the calling thread's network
// namespace. Close releases it.
func NewKernel() (*Kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	return newKernel(h)
}

// newKernel wraps a handle, which tests open in a namespace of their own
// with netlink.NewHandleAt.
func newKernel(h *netlink.Handle) (*Kernel, error) {
	if err := h.SetSocketTimeout(kernelTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("set rtnetlink timeout: %w", err)
	}
	return &Kernel{h: h}, nil
}

// Close releases the netlink socket.
func (k *Kernel) Close() { k.h.Close() }

// Links lists every link and its addresses with two dumps, retrying when the
// kernel reports that a dump was interrupted by a concurrent change.
func (k *Kernel) Links() ([]Link, error) {
	var err error
	for range dumpRetries {
		var links []Link
		links, err = k.links()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
	}
	return nil, err
}

func (k *Kernel) links() ([]Link, error) {
	nls, err := k.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	addrs, err := k.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	byIndex := make(map[int][]Address, len(nls))
	for _, a := range addrs {
		addr, ok := fromNetlinkAddr(a)
		if !ok {
			continue
		}
		byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], addr)
	}
	out := make([]Link, 0, len(nls))
	for _, l := range nls {
		attrs := l.Attrs()
		out = append(out, Link{
			Index:        attrs.Index,
			Name:         attrs.Name,
			HardwareAddr: attrs.HardwareAddr,
			Addrs:        byIndex[attrs.Index],
		})
	}
	return out, nil
}

// fromNetlinkAddr converts a listed address; ok is false for an address
// without a usable IP, which the kernel does not produce for IPv4 or IPv6.
func fromNetlinkAddr(a netlink.Addr) (Address, bool) {
	if a.IPNet == nil {
		return Address{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return Address{}, false
	}
	bits, _ := a.Mask.Size()
	out := Address{
		Prefix:        netip.PrefixFrom(ip.Unmap(), bits),
		Permanent:     a.Flags&unix.IFA_F_PERMANENT != 0,
		NoDAD:         a.Flags&unix.IFA_F_NODAD != 0,
		NoPrefixRoute: a.Flags&unix.IFA_F_NOPREFIXROUTE != 0,
	}
	// The kernel reports the remaining lifetime, with all ones for forever.
	if uint32(a.ValidLft) != math.MaxUint32 {
		out.ValidLft = time.Duration(a.ValidLft) * time.Second
	}
	if uint32(a.PreferedLft) != math.MaxUint32 {
		out.PreferredLft = time.Duration(a.PreferedLft) * time.Second
	}
	return out, true
}

// AddrReplace adds the address or renews it (RTM_NEWADDR with NLM_F_REPLACE).
func (k *Kernel) AddrReplace(ifindex int, a Address) error {
	na, err := toNetlinkAddr(a)
	if err != nil {
		return err
	}
	if err := k.h.AddrReplace(linkRef(ifindex), na); err != nil {
		return fmt.Errorf("replace address %s on link %d: %w", a.Prefix, ifindex, kernelErr(err))
	}
	return nil
}

// AddrDel deletes the address; the kernel matches address and prefix length.
func (k *Kernel) AddrDel(ifindex int, p netip.Prefix) error {
	na, err := toNetlinkAddr(Address{Prefix: p})
	if err != nil {
		return err
	}
	if err := k.h.AddrDel(linkRef(ifindex), na); err != nil {
		return fmt.Errorf("delete address %s from link %d: %w", p, ifindex, kernelErr(err))
	}
	return nil
}

// linkRef names a link by index alone; netlink only reads the index.
func linkRef(ifindex int) netlink.Link {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
}

func toNetlinkAddr(a Address) (*netlink.Addr, error) {
	if !a.Prefix.IsValid() {
		return nil, fmt.Errorf("address prefix: invalid %q", a.Prefix)
	}
	ip := a.Prefix.Addr()
	na := &netlink.Addr{IPNet: &net.IPNet{
		IP:   ip.AsSlice(),
		Mask: net.CIDRMask(a.Prefix.Bits(), ip.BitLen()),
	}}
	if a.NoDAD {
		na.Flags |= unix.IFA_F_NODAD
	}
	if a.NoPrefixRoute {
		na.Flags |= unix.IFA_F_NOPREFIXROUTE
	}
	na.ValidLft = lifetimeSeconds(a.ValidLft)
	na.PreferedLft = lifetimeSeconds(a.PreferredLft)
	return na, nil
}

// kernelErr adds this package's sentinels to the kernel's errno, keeping the
// errno itself reachable with errors.Is.
func kernelErr(err error) error {
	switch {
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return fmt.Errorf("%w: %w", ErrAddressNotFound, err)
	case errors.Is(err, unix.ENODEV):
		return fmt.Errorf("%w: %w", ErrLinkNotFound, err)
	}
	return err
}
