package viptest

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/directorate/directorate/vip"
)

// Announcement is one recorded send.
type Announcement struct {
	// Kind is "arp" or "na".
	Kind         string
	Interface    string
	Ifindex      int
	HardwareAddr net.HardwareAddr
	Addr         netip.Addr
	At           time.Time
}

// Announcer is a vip.Announcer that records what it is asked to send. Like
// the real one, it refuses an address of the wrong family and a link without
// an Ethernet address.
type Announcer struct {
	mu      sync.Mutex
	clock   vip.Clock
	journal *Journal
	sent    []Announcement
	fail    map[netip.Addr]error
}

var _ vip.Announcer = (*Announcer)(nil)

// NewAnnouncer returns an announcer that stamps sends with clock. journal
// may be nil.
func NewAnnouncer(clock vip.Clock, journal *Journal) *Announcer {
	return &Announcer{clock: clock, journal: journal, fail: make(map[netip.Addr]error)}
}

// Fail makes later announcements of addr fail with err; nil clears it.
func (a *Announcer) Fail(addr netip.Addr, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		delete(a.fail, addr)
		return
	}
	a.fail[addr] = err
}

// Sent returns every successful announcement so far.
func (a *Announcer) Sent() []Announcement {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.sent)
}

// GratuitousARP records an IPv4 announcement.
func (a *Announcer) GratuitousARP(link vip.Link, ip netip.Addr) error {
	if !ip.Is4() {
		return fmt.Errorf("fake gratuitous ARP: %s is not IPv4", ip)
	}
	return a.send("arp", link, ip)
}

// UnsolicitedNA records an IPv6 announcement.
func (a *Announcer) UnsolicitedNA(link vip.Link, ip netip.Addr) error {
	if !ip.Is6() || ip.Is4In6() {
		return fmt.Errorf("fake neighbour advertisement: %s is not IPv6", ip)
	}
	return a.send("na", link, ip)
}

func (a *Announcer) send(kind string, link vip.Link, ip netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !link.HasEthernet() {
		return fmt.Errorf("fake %s on %s: no Ethernet address", kind, link.Name)
	}
	if err := a.fail[ip]; err != nil {
		return fmt.Errorf("fake %s for %s on %s: %w", kind, ip, link.Name, err)
	}
	a.sent = append(a.sent, Announcement{
		Kind: kind, Interface: link.Name, Ifindex: link.Index,
		HardwareAddr: slices.Clone(link.HardwareAddr), Addr: ip, At: a.clock.Now(),
	})
	a.journal.add("%s %s %s", kind, link.Name, ip)
	return nil
}
