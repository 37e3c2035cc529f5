package vip

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// ErrAddressNotFound reports that the address to delete is not on the link.
// Release treats it as success: the kernel's lifetime timer or an operator
// got there first.
var ErrAddressNotFound = errors.New("address not found")

// ErrLinkNotFound reports that no link has the given index.
var ErrLinkNotFound = errors.New("link not found")

// Netlink is the kernel side of VIP ownership: the links and their addresses
// in this director's network namespace. Kernel is the real implementation;
// viptest.Netlink is the fake.
type Netlink interface {
	// Links lists every link with all of its addresses.
	Links() ([]Link, error)
	// AddrReplace adds a to the link, or, when the link already has the
	// address with the same prefix length, replaces its flags and restarts
	// its lifetimes. That one call both claims and renews a VIP.
	AddrReplace(ifindex int, a Address) error
	// AddrDel deletes the address from the link. An absent address yields
	// an error wrapping ErrAddressNotFound.
	AddrDel(ifindex int, p netip.Prefix) error
}

// Link is a network interface.
type Link struct {
	Index int
	Name  string
	// HardwareAddr is the link-layer address announcements carry; links
	// without a 6-byte Ethernet address are not announced on.
	HardwareAddr net.HardwareAddr
	Addrs        []Address
}

// Address is an interface address.
type Address struct {
	Prefix netip.Prefix
	// ValidLft is how long the kernel keeps the address; PreferredLft how
	// long it stays usable as a source for new connections. The kernel
	// counts whole seconds. Zero for both means forever (Permanent, when
	// listed); when adding, the kernel refuses a zero ValidLft paired with
	// a non-zero PreferredLft.
	ValidLft     time.Duration
	PreferredLft time.Duration
	// Permanent is set in listings for addresses without a lifetime.
	Permanent bool
	// NoDAD skips IPv6 duplicate address detection, which would otherwise
	// keep a new VIP tentative (unusable) for about a second.
	NoDAD bool
	// NoPrefixRoute stops the kernel from installing (and, on expiry or
	// deletion, removing) a connected route for the prefix.
	NoPrefixRoute bool
}

// HasEthernet reports whether the link has a 6-byte hardware address, the
// only kind gratuitous ARP and neighbour advertisements are built for.
func (l Link) HasEthernet() bool { return len(l.HardwareAddr) == 6 }
