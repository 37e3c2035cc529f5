package vip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// VIP is a virtual address to claim. It mirrors fsm.VIP, which this package
// may not import.
type VIP struct {
	Name string
	// Prefix is the address with its prefix length, as `ip addr add`
	// takes it.
	Prefix netip.Prefix
	// Interface names the link to add the VIP to. Empty picks the link
	// with the longest prefix containing the address among its own
	// addresses.
	Interface string
}

// Held describes a VIP the Manager holds.
type Held struct {
	VIP VIP
	// Interface is the link the VIP was added to.
	Interface string
	// Renewed is when its lifetime was last restarted; the kernel deletes
	// it at Expires unless renewed again.
	Renewed time.Time
	Expires time.Time
}

// Manager claims, renews and releases this director's VIPs. Its methods are
// safe for concurrent use; kernel calls are serialised. A Manager holds VIPs
// only between Claim (or Sync) and Release: the caller decides leadership.
type Manager struct {
	nl   Netlink
	ann  Announcer
	log  *slog.Logger
	opts Options

	mu   sync.Mutex
	held map[string]*claim
	seq  uint64
}

// claim is a held VIP. Pointer identity marks one claim: a burst stops
// announcing a VIP once its claim is no longer the held one.
type claim struct {
	vip       VIP
	link      Link
	seq       uint64 // claim order; Release goes in reverse
	renewed   time.Time
	announced time.Time // last successful announcement; zero if none
}

// NewManager returns a Manager that holds nothing. A nil logger discards.
func NewManager(nl Netlink, ann Announcer, log *slog.Logger, opts Options) (*Manager, error) {
	if nl == nil {
		return nil, errors.New("vip manager: netlink: must not be nil")
	}
	if ann == nil {
		return nil, errors.New("vip manager: announcer: must not be nil")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Manager{nl: nl, ann: ann, log: log, opts: o, held: make(map[string]*claim)}, nil
}

// Options returns the options in force, defaults filled in.
func (m *Manager) Options() Options { return m.opts }

// FenceWait is how long a new leader must wait before claiming under fence
// f: FenceWait(Lifetime) for FenceLease, zero for FenceNone. The caller
// sleeps, honouring its context, since it alone knows when leadership began.
func (m *Manager) FenceWait(f Fence) time.Duration {
	if f == FenceLease {
		return FenceWait(m.opts.Lifetime)
	}
	return 0
}

// Held lists the VIPs held, in claim order.
func (m *Manager) Held() []Held {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Held, 0, len(m.held))
	for _, c := range m.ordered() {
		out = append(out, Held{VIP: c.vip, Interface: c.link.Name, Renewed: c.renewed, Expires: c.renewed.Add(m.opts.Lifetime)})
	}
	return out
}

// Claim adds each VIP to its link with the finite lifetime, then announces
// them: immediately, then BurstCount-1 more times BurstInterval apart, so
// Claim returns after the burst. A VIP that cannot be claimed does not stop
// the others; the error joins every failure and names each VIP. Claiming a
// VIP already held renews it, or moves it if its prefix or interface
// changed. Call Claim only as leader, after Barrier and after FenceWait,
// with a ctx that is cancelled the moment leadership is lost and before
// Release is called: ctx is checked under the Manager's lock before every
// add, so a Claim racing a step-down never adds a VIP after Release.
// Cancelling ctx stops claiming and the burst; VIPs already added stay held
// until Release.
func (m *Manager) Claim(ctx context.Context, vips []VIP) error {
	if err := validateVIPs(vips); err != nil {
		return err
	}
	batch, errs := m.claimAll(ctx, vips)
	if err := m.burst(ctx, batch); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// claimAll adds the VIPs and sends the first announcement round.
func (m *Manager) claimAll(ctx context.Context, vips []VIP) ([]*claim, []error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, []error{fmt.Errorf("claim VIPs: %w", err)}
	}
	links, err := m.nl.Links()
	if err != nil {
		return nil, []error{fmt.Errorf("claim VIPs: %w", err)}
	}
	var (
		batch []*claim
		errs  []error
	)
	for _, v := range vips {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("claim vip %q: %w", v.Name, err))
			break
		}
		// A moved VIP whose old address would not go is still claimed
		// on its new link: c and err may both be set.
		c, err := m.claimOne(ctx, links, v)
		if err != nil {
			errs = append(errs, err)
		}
		if c != nil {
			batch = append(batch, c)
		}
	}
	if ctx.Err() != nil {
		return batch, errs
	}
	for _, c := range batch {
		if err := m.announce(ctx, c, 1); err != nil {
			errs = append(errs, err)
		}
	}
	return batch, errs
}

func (m *Manager) claimOne(ctx context.Context, links []Link, v VIP) (*claim, error) {
	for _, c := range m.held {
		if c.vip.Name != v.Name && c.vip.Prefix.Addr() == v.Prefix.Addr() {
			return nil, fmt.Errorf("claim vip %q: address %s is already held as vip %q", v.Name, v.Prefix.Addr(), c.vip.Name)
		}
	}
	link, err := resolveLink(links, v)
	if err != nil {
		return nil, err
	}
	var errs []error
	if old, ok := m.held[v.Name]; ok && (old.vip.Prefix != v.Prefix || old.link.Index != link.Index) {
		// The VIP moved: take the old address away first, so the director
		// never answers for one VIP on two links.
		delete(m.held, v.Name)
		if err := m.remove(ctx, old, "VIP moved"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := m.nl.AddrReplace(link.Index, m.address(v.Prefix)); err != nil {
		errs = append(errs, fmt.Errorf("claim vip %q (%s) on %s: %w", v.Name, v.Prefix, link.Name, err))
		return nil, errors.Join(errs...)
	}
	m.seq++
	c := &claim{vip: v, link: link, seq: m.seq, renewed: m.opts.Clock.Now()}
	if old, ok := m.held[v.Name]; ok {
		c.seq, c.announced = old.seq, old.announced
	}
	m.held[v.Name] = c
	m.log.InfoContext(ctx, "VIP claimed", "vip", v.Name, "address", v.Prefix.String(), "interface", link.Name, "lifetime", m.opts.Lifetime)
	return c, errors.Join(errs...)
}

// burst sends announcement rounds 2..BurstCount for the claims still held.
// The lock is dropped while waiting, so Renew and Release are never held up.
func (m *Manager) burst(ctx context.Context, batch []*claim) error {
	var errs []error
	for round := 2; round <= m.opts.BurstCount && len(batch) > 0; round++ {
		select {
		case <-ctx.Done():
			return errors.Join(append(errs, fmt.Errorf("announcement burst: %w", ctx.Err()))...)
		case <-m.opts.Clock.After(m.opts.BurstInterval):
		}
		// A leader that was stopped mid-burst may wake here before it
		// learns it was deposed: confirm the lease before announcing again.
		if m.opts.ConfirmLease != nil {
			if err := m.opts.ConfirmLease(ctx); err != nil {
				return errors.Join(append(errs, fmt.Errorf("announcement burst stopped: lease not confirmed: %w", err))...)
			}
		}
		m.mu.Lock()
		if err := ctx.Err(); err != nil {
			m.mu.Unlock()
			return errors.Join(append(errs, fmt.Errorf("announcement burst: %w", err))...)
		}
		live := batch[:0]
		for _, c := range batch {
			// Sent under the lock: once Release returns, no announcement
			// for a released VIP can follow.
			if m.held[c.vip.Name] != c {
				continue
			}
			live = append(live, c)
			if err := m.announce(ctx, c, round); err != nil {
				errs = append(errs, err)
			}
		}
		batch = live
		m.mu.Unlock()
	}
	return errors.Join(errs...)
}

// announce sends one announcement for c. Links without an Ethernet address
// (loopback, tun, ipip) have no neighbour caches to update.
func (m *Manager) announce(ctx context.Context, c *claim, round int) error {
	log := m.log.With("vip", c.vip.Name, "address", c.vip.Prefix.Addr().String(), "interface", c.link.Name)
	if !c.link.HasEthernet() {
		log.DebugContext(ctx, "VIP not announced: link has no Ethernet address")
		return nil
	}
	ip := c.vip.Prefix.Addr()
	var err error
	if ip.Is4() {
		err = m.ann.GratuitousARP(c.link, ip)
	} else {
		err = m.ann.UnsolicitedNA(c.link, ip)
	}
	if err != nil {
		return fmt.Errorf("announce vip %q (%s) on %s: %w", c.vip.Name, ip, c.link.Name, err)
	}
	c.announced = m.opts.Clock.Now()
	log.DebugContext(ctx, "VIP announced", "round", round)
	return nil
}

// Renew restarts the lifetime of every held VIP and re-announces those last
// announced RepeatInterval or more ago (or never, after a failed send). The
// leader calls it every RenewInterval, and only after confirming it still
// holds the raft lease: a leader that resumes from a stop must not extend a
// VIP a new leader may already hold. ctx is checked under the lock before
// each VIP, so cancelling it on step-down stops renewing at once.
func (m *Manager) Renew(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, c := range m.ordered() {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("renew VIPs: %w", err))
			break
		}
		if err := m.nl.AddrReplace(c.link.Index, m.address(c.vip.Prefix)); err != nil {
			errs = append(errs, fmt.Errorf("renew vip %q (%s) on %s: %w", c.vip.Name, c.vip.Prefix, c.link.Name, err))
			continue
		}
		now := m.opts.Clock.Now()
		c.renewed = now
		m.log.DebugContext(ctx, "VIP renewed", "vip", c.vip.Name, "address", c.vip.Prefix.String(), "interface", c.link.Name)
		if m.opts.RepeatInterval > 0 && (c.announced.IsZero() || now.Sub(c.announced) >= m.opts.RepeatInterval) {
			if err := m.announce(ctx, c, 0); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Release deletes every held VIP, newest first (an IPv4 VIP that became a
// primary address takes its same-subnet secondaries with it unless
// promote_secondaries is set; deleting newest first removes those first).
// It carries on past failures and returns them joined; a VIP already gone
// counts as released. Afterwards the Manager holds nothing, even for a VIP
// whose delete failed, so it is never renewed again: its lifetime, and
// CleanupStale, remove it. Release ignores ctx cancellation, since a VIP
// left behind is the worse failure; ctx only carries log values.
func (m *Manager) Release(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cs := m.ordered()
	slices.Reverse(cs)
	var errs []error
	for _, c := range cs {
		delete(m.held, c.vip.Name)
		if err := m.remove(ctx, c, "VIP released"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Sync makes the held set equal vips: it releases held VIPs that are gone or
// changed, newest first, then claims the new and changed ones (with their
// burst). Call it as leader when the replicated VIP set changes.
func (m *Manager) Sync(ctx context.Context, vips []VIP) error {
	if err := validateVIPs(vips); err != nil {
		return err
	}
	want := make(map[string]VIP, len(vips))
	for _, v := range vips {
		want[v.Name] = v
	}
	var errs []error
	m.mu.Lock()
	cs := m.ordered()
	slices.Reverse(cs)
	for _, c := range cs {
		if w, ok := want[c.vip.Name]; ok && w == c.vip {
			continue
		}
		delete(m.held, c.vip.Name)
		if err := m.remove(ctx, c, "VIP released by sync"); err != nil {
			errs = append(errs, err)
		}
	}
	var add []VIP
	for _, v := range vips {
		if _, ok := m.held[v.Name]; !ok {
			add = append(add, v)
		}
	}
	m.mu.Unlock()
	if len(add) > 0 {
		if err := m.Claim(ctx, add); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CleanupStale deletes the addresses of vips from every link, whatever
// their prefix length or lifetime, except those this Manager holds. A
// director calls it on start and whenever it is not the leader: after a
// crash, or a hang it survived, it may still hold VIPs that now belong to
// another director. It carries on past failures and returns them joined.
func (m *Manager) CleanupStale(ctx context.Context, vips []VIP) error {
	if err := validateVIPs(vips); err != nil {
		return err
	}
	names := make(map[netip.Addr]string, len(vips))
	for _, v := range vips {
		names[v.Prefix.Addr()] = v.Name
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	links, err := m.nl.Links()
	if err != nil {
		return fmt.Errorf("clean up stale VIPs: %w", err)
	}
	var errs []error
	for _, l := range links {
		for _, a := range l.Addrs {
			name, ok := names[a.Prefix.Addr()]
			if !ok || m.holds(l.Index, a.Prefix) {
				continue
			}
			err := m.nl.AddrDel(l.Index, a.Prefix)
			switch {
			case errors.Is(err, ErrAddressNotFound):
				continue
			case err != nil:
				errs = append(errs, fmt.Errorf("remove stale vip %q (%s) from %s: %w", name, a.Prefix, l.Name, err))
				continue
			}
			m.log.WarnContext(ctx, "stale VIP removed", "vip", name, "address", a.Prefix.String(), "interface", l.Name,
				"permanent", a.Permanent, "valid_lft", a.ValidLft)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) holds(ifindex int, p netip.Prefix) bool {
	for _, c := range m.held {
		if c.link.Index == ifindex && c.vip.Prefix == p {
			return true
		}
	}
	return false
}

// remove deletes a claim's address; one already gone counts as removed.
func (m *Manager) remove(ctx context.Context, c *claim, msg string) error {
	err := m.nl.AddrDel(c.link.Index, c.vip.Prefix)
	log := m.log.With("vip", c.vip.Name, "address", c.vip.Prefix.String(), "interface", c.link.Name)
	switch {
	case errors.Is(err, ErrAddressNotFound):
		log.InfoContext(ctx, msg, "already_gone", true)
		return nil
	case err != nil:
		return fmt.Errorf("release vip %q (%s) from %s: %w", c.vip.Name, c.vip.Prefix, c.link.Name, err)
	}
	log.InfoContext(ctx, msg)
	return nil
}

// address is what a VIP is added (and renewed) with: equal valid and
// preferred lifetimes, so it never lingers deprecated; no DAD for IPv6,
// which would keep it unusable for a second and, on a collision with the
// old leader, disable it altogether.
func (m *Manager) address(p netip.Prefix) Address {
	return Address{
		Prefix:        p,
		ValidLft:      m.opts.Lifetime,
		PreferredLft:  m.opts.Lifetime,
		NoDAD:         p.Addr().Is6(),
		NoPrefixRoute: !m.opts.PrefixRoute,
	}
}

// ordered returns the held claims in claim order. Callers hold mu.
func (m *Manager) ordered() []*claim {
	cs := make([]*claim, 0, len(m.held))
	for _, c := range m.held {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b *claim) int { return cmp.Compare(a.seq, b.seq) })
	return cs
}

// resolveLink finds the link for v: by name, or else the link whose own
// addresses have the longest prefix containing the VIP (the VIP's own
// address, held here or stale, does not count).
func resolveLink(links []Link, v VIP) (Link, error) {
	if v.Interface != "" {
		for _, l := range links {
			if l.Name == v.Interface {
				return l, nil
			}
		}
		return Link{}, fmt.Errorf("vip %q: interface %q: no such link", v.Name, v.Interface)
	}
	ip := v.Prefix.Addr()
	best := -1
	var matches []Link
	for _, l := range links {
		bits := -1
		for _, a := range l.Addrs {
			if a.Prefix.Addr() != ip && a.Prefix.Contains(ip) {
				bits = max(bits, a.Prefix.Bits())
			}
		}
		switch {
		case bits < 0 || bits < best:
		case bits > best:
			best, matches = bits, []Link{l}
		default:
			matches = append(matches, l)
		}
	}
	switch len(matches) {
	case 0:
		return Link{}, fmt.Errorf("vip %q: interface: no link has an address whose subnet contains %s; set interface", v.Name, ip)
	case 1:
		return matches[0], nil
	}
	names := make([]string, len(matches))
	for i, l := range matches {
		names[i] = l.Name
	}
	return Link{}, fmt.Errorf("vip %q: interface: %s is in a /%d on several links (%s); set interface", v.Name, ip, best, strings.Join(names, ", "))
}

// validateVIPs rejects what the kernel would refuse or misuse, naming the
// VIP and the field.
func validateVIPs(vips []VIP) error {
	var errs []error
	names := make(map[string]bool, len(vips))
	addrs := make(map[netip.Addr]string, len(vips))
	for i, v := range vips {
		if v.Name == "" {
			errs = append(errs, fmt.Errorf("vip #%d: name: must not be empty", i))
			continue
		}
		if names[v.Name] {
			errs = append(errs, fmt.Errorf("vip %q: name: given twice", v.Name))
			continue
		}
		names[v.Name] = true
		ip := v.Prefix.Addr()
		switch {
		case !v.Prefix.IsValid():
			errs = append(errs, fmt.Errorf("vip %q: prefix: must be a valid address/length", v.Name))
			continue
		case ip.Is4In6():
			errs = append(errs, fmt.Errorf("vip %q: prefix: %s is an IPv4-mapped IPv6 address; give the IPv4 address", v.Name, ip))
			continue
		case ip.IsUnspecified(), ip.IsMulticast(), ip.IsLoopback():
			errs = append(errs, fmt.Errorf("vip %q: prefix: %s is not a unicast address a director can own", v.Name, ip))
			continue
		}
		if other, ok := addrs[ip]; ok {
			errs = append(errs, fmt.Errorf("vip %q: prefix: address %s is also vip %q", v.Name, ip, other))
			continue
		}
		addrs[ip] = v.Name
	}
	return errors.Join(errs...)
}
