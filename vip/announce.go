package vip

import "net/netip"

// Announcer tells the link's neighbours that an address now lives at the
// link's hardware address, so traffic follows a VIP to its new director
// without waiting for caches to expire. PacketAnnouncer is the real
// implementation; viptest.Announcer is the fake.
type Announcer interface {
	// GratuitousARP broadcasts gratuitous ARP for the IPv4 address ip on
	// link.
	GratuitousARP(link Link, ip netip.Addr) error
	// UnsolicitedNA sends an unsolicited neighbour advertisement for the
	// IPv6 address ip on link to all nodes.
	UnsolicitedNA(link Link, ip netip.Addr) error
}
