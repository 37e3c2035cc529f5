package viptest

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/directorate/directorate/vip"
)

// Call is one recorded Netlink call.
type Call struct {
	// Op is "links", "replace" or "del".
	Op      string
	Ifindex int
	// Address is what "replace" was given; Prefix what "del" was.
	Address vip.Address
	Prefix  netip.Prefix
	Err     error
}

// Netlink is an in-memory vip.Netlink. Addresses with a lifetime vanish
// once the clock passes it, as the kernel deletes them; listings report the
// remaining lifetime, as the kernel does.
type Netlink struct {
	mu       sync.Mutex
	clock    vip.Clock
	journal  *Journal
	links    []*fakeLink
	calls    []Call
	fail     map[failKey]error
	failList error
}

type fakeLink struct {
	link  vip.Link
	addrs []fakeAddr
}

type fakeAddr struct {
	addr    vip.Address
	expires time.Time // zero: permanent
}

type failKey struct {
	op   string
	addr netip.Addr
}

var _ vip.Netlink = (*Netlink)(nil)

// NewNetlink returns a fake with no links. journal may be nil.
func NewNetlink(clock vip.Clock, journal *Journal) *Netlink {
	return &Netlink{clock: clock, journal: journal, fail: make(map[failKey]error)}
}

// AddLink adds a link with its addresses; zero lifetimes make an address
// permanent.
func (n *Netlink) AddLink(l vip.Link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fl := &fakeLink{link: vip.Link{Index: l.Index, Name: l.Name, HardwareAddr: slices.Clone(l.HardwareAddr)}}
	for _, a := range l.Addrs {
		fl.addrs = append(fl.addrs, n.newAddr(a))
	}
	n.links = append(n.links, fl)
}

// Fail makes every later op ("replace" or "del") on addr fail with err; a
// nil err clears the failure.
func (n *Netlink) Fail(op string, addr netip.Addr, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil {
		delete(n.fail, failKey{op, addr})
		return
	}
	n.fail[failKey{op, addr}] = err
}

// FailLinks makes Links fail with err; nil clears it.
func (n *Netlink) FailLinks(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.failList = err
}

// Calls returns every call so far.
func (n *Netlink) Calls() []Call {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.calls)
}

// Addrs returns the live addresses of the named link, with their remaining
// lifetimes, or nil if there is no such link.
func (n *Netlink) Addrs(ifname string) []vip.Address {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.expire()
	for _, fl := range n.links {
		if fl.link.Name == ifname {
			return n.list(fl)
		}
	}
	return nil
}

// Has reports whether the named link has the address with that prefix.
func (n *Netlink) Has(ifname string, p netip.Prefix) bool {
	return slices.ContainsFunc(n.Addrs(ifname), func(a vip.Address) bool { return a.Prefix == p })
}

// Links lists the links and their live addresses.
func (n *Netlink) Links() ([]vip.Link, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.record(Call{Op: "links", Err: n.failList})
	if n.failList != nil {
		return nil, fmt.Errorf("fake links: %w", n.failList)
	}
	n.expire()
	out := make([]vip.Link, 0, len(n.links))
	for _, fl := range n.links {
		l := fl.link
		l.HardwareAddr = slices.Clone(l.HardwareAddr)
		l.Addrs = n.list(fl)
		out = append(out, l)
	}
	return out, nil
}

// AddrReplace adds the address or restarts its lifetimes and flags.
func (n *Netlink) AddrReplace(ifindex int, a vip.Address) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	err := n.replace(ifindex, a)
	n.record(Call{Op: "replace", Ifindex: ifindex, Address: a, Err: err})
	if err != nil {
		return err
	}
	n.journal.add("replace %s %s valid=%s preferred=%s nodad=%t noprefixroute=%t",
		n.name(ifindex), a.Prefix, a.ValidLft, a.PreferredLft, a.NoDAD, a.NoPrefixRoute)
	return nil
}

func (n *Netlink) replace(ifindex int, a vip.Address) error {
	if err := n.fail[failKey{"replace", a.Prefix.Addr()}]; err != nil {
		return fmt.Errorf("fake replace %s: %w", a.Prefix, err)
	}
	if !a.Prefix.IsValid() {
		return fmt.Errorf("fake replace: invalid prefix %v", a.Prefix)
	}
	if a.ValidLft == 0 && a.PreferredLft != 0 || a.PreferredLft > a.ValidLft && a.ValidLft != 0 {
		return fmt.Errorf("fake replace %s: preferred lifetime %s exceeds valid %s", a.Prefix, a.PreferredLft, a.ValidLft)
	}
	fl := n.link(ifindex)
	if fl == nil {
		return fmt.Errorf("fake replace %s on link %d: %w", a.Prefix, ifindex, vip.ErrLinkNotFound)
	}
	n.expire()
	for i := range fl.addrs {
		if fl.addrs[i].addr.Prefix == a.Prefix {
			fl.addrs[i] = n.newAddr(a)
			return nil
		}
	}
	fl.addrs = append(fl.addrs, n.newAddr(a))
	return nil
}

// AddrDel deletes the address with exactly that prefix.
func (n *Netlink) AddrDel(ifindex int, p netip.Prefix) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	err := n.del(ifindex, p)
	n.record(Call{Op: "del", Ifindex: ifindex, Prefix: p, Err: err})
	if err != nil {
		return err
	}
	n.journal.add("del %s %s", n.name(ifindex), p)
	return nil
}

func (n *Netlink) del(ifindex int, p netip.Prefix) error {
	if err := n.fail[failKey{"del", p.Addr()}]; err != nil {
		return fmt.Errorf("fake del %s: %w", p, err)
	}
	fl := n.link(ifindex)
	if fl == nil {
		return fmt.Errorf("fake del %s on link %d: %w", p, ifindex, vip.ErrLinkNotFound)
	}
	n.expire()
	for i := range fl.addrs {
		if fl.addrs[i].addr.Prefix == p {
			fl.addrs = slices.Delete(fl.addrs, i, i+1)
			return nil
		}
	}
	return fmt.Errorf("fake del %s on link %d: %w", p, ifindex, vip.ErrAddressNotFound)
}

func (n *Netlink) newAddr(a vip.Address) fakeAddr {
	fa := fakeAddr{addr: a}
	fa.addr.Permanent = a.ValidLft == 0
	if !fa.addr.Permanent {
		fa.expires = n.clock.Now().Add(a.ValidLft)
	}
	return fa
}

// expire drops addresses whose lifetime has run out.
func (n *Netlink) expire() {
	now := n.clock.Now()
	for _, fl := range n.links {
		fl.addrs = slices.DeleteFunc(fl.addrs, func(a fakeAddr) bool {
			return !a.expires.IsZero() && !now.Before(a.expires)
		})
	}
}

func (n *Netlink) list(fl *fakeLink) []vip.Address {
	now := n.clock.Now()
	out := make([]vip.Address, 0, len(fl.addrs))
	for _, fa := range fl.addrs {
		a := fa.addr
		if !a.Permanent {
			left := fa.expires.Sub(now)
			a.ValidLft = left
			a.PreferredLft = min(a.PreferredLft, left)
		}
		out = append(out, a)
	}
	return out
}

func (n *Netlink) link(ifindex int) *fakeLink {
	for _, fl := range n.links {
		if fl.link.Index == ifindex {
			return fl
		}
	}
	return nil
}

func (n *Netlink) name(ifindex int) string {
	if fl := n.link(ifindex); fl != nil {
		return fl.link.Name
	}
	return fmt.Sprintf("#%d", ifindex)
}

func (n *Netlink) record(c Call) { n.calls = append(n.calls, c) }
