package vip

// Integration tests against the host kernel: each test builds two network
// namespaces of its own joined by a veth pair ("va" in a, "vb" in b), so all
// traffic stays inside them. They need root and skip without it.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/directorate/directorate/internal/testpoll"
)

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func kernelTestLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// nsPair is two namespaces joined by a veth pair.
type nsPair struct {
	a, b   netns.NsHandle
	ha, hb *netlink.Handle
	va, vb netlink.Link
}

// inNetns runs f on a locked thread switched into ns and switches back. If
// switching back fails the thread stays locked, so the runtime discards it
// with the goroutine instead of reusing it in the wrong namespace.
func inNetns(ns netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// newNetns creates an anonymous namespace, which the kernel frees once the
// handle closes.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Skipf("cannot read the current network namespace: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New() // unshares: this thread is now in ns
	if err != nil {
		runtime.UnlockOSThread()
		t.Skipf("cannot create a network namespace: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("cannot return to the original network namespace: %v", err) // the thread stays locked and dies
	}
	runtime.UnlockOSThread()
	t.Cleanup(func() { ns.Close() })
	return ns
}

func newNSPair(t *testing.T) *nsPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	p := &nsPair{a: newNetns(t), b: newNetns(t)}
	var err error
	if p.ha, err = netlink.NewHandleAt(p.a); err != nil {
		t.Fatalf("netlink handle in a: %v", err)
	}
	t.Cleanup(p.ha.Close)
	if p.hb, err = netlink.NewHandleAt(p.b); err != nil {
		t.Fatalf("netlink handle in b: %v", err)
	}
	t.Cleanup(p.hb.Close)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "va"}, PeerName: "vb", PeerNamespace: netlink.NsFd(int(p.b))}
	if err := p.ha.LinkAdd(veth); err != nil {
		t.Skipf("cannot create a veth pair: %v", err)
	}
	if p.va, err = p.ha.LinkByName("va"); err != nil {
		t.Fatalf("va: %v", err)
	}
	if p.vb, err = p.hb.LinkByName("vb"); err != nil {
		t.Fatalf("vb: %v", err)
	}
	for _, x := range []struct {
		h *netlink.Handle
		l netlink.Link
	}{{p.ha, p.va}, {p.hb, p.vb}} {
		if err := x.h.LinkSetUp(x.l); err != nil {
			t.Fatalf("set %s up: %v", x.l.Attrs().Name, err)
		}
	}
	return p
}

func addAddr(t *testing.T, h *netlink.Handle, l netlink.Link, prefix string, flags int) {
	t.Helper()
	a, err := netlink.ParseAddr(prefix)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = flags
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %s: %v", prefix, l.Attrs().Name, err)
	}
}

// kernelIn returns the real Netlink for ns.
func kernelIn(t *testing.T, ns netns.NsHandle) *Kernel {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	k, err := newKernel(h)
	if err != nil {
		t.Fatalf("newKernel: %v", err)
	}
	t.Cleanup(k.Close)
	return k
}

// announcerIn returns the real announcer sending from ns.
func announcerIn(ns netns.NsHandle) *PacketAnnouncer {
	return &PacketAnnouncer{
		openSocket: func() (fd int, err error) {
			err = inNetns(ns, func() error {
				fd, err = openPacketSocket()
				return err
			})
			return fd, err
		},
		forwarding: func(string) bool { return false },
	}
}

// kernelAddr finds the address on link as the kernel lists it.
func kernelAddr(t *testing.T, h *netlink.Handle, l netlink.Link, ip netip.Addr) (netlink.Addr, bool) {
	t.Helper()
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("list addresses: %v", err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return a, true
		}
	}
	return netlink.Addr{}, false
}

// pollUntil polls cond every 20 ms until it holds or the deadline passes.
func pollUntil(t *testing.T, deadline time.Time, what string, cond func() bool) {
	t.Helper()
	testpoll.Until(t, time.Until(deadline), 20*time.Millisecond, what, cond)
}

func TestKernelVIPLifetimeRenewAndExpiry(t *testing.T) {
	t.Parallel()
	p := newNSPair(t)
	addAddr(t, p.ha, p.va, "192.0.2.1/24", 0)
	const lifetime = 2 * time.Second
	m, err := NewManager(kernelIn(t, p.a), announcerIn(p.a), kernelTestLogger(t), Options{Lifetime: lifetime, BurstCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	web := VIP{Name: "web", Prefix: netip.MustParsePrefix("192.0.2.10/24")} // resolved by subnet
	pub := VIP{Name: "pub", Prefix: netip.MustParsePrefix("198.51.100.10/24"), Interface: "va"}
	if err := m.Claim(ctx, []VIP{web, pub}); err != nil {
		t.Fatalf("Claim: %v", err)
	}

	a, ok := kernelAddr(t, p.ha, p.va, web.Prefix.Addr())
	if !ok {
		t.Fatal("VIP web is not on va")
	}
	if ones, _ := a.Mask.Size(); ones != 24 || a.Flags&unix.IFA_F_PERMANENT != 0 || a.ValidLft > 2 || a.ValidLft < 1 || a.PreferedLft > 2 {
		t.Fatalf("VIP web as listed: /%d flags %#x valid %d preferred %d; want /24, finite lifetimes of at most 2 s", ones, a.Flags, a.ValidLft, a.PreferedLft)
	}
	if a.Flags&unix.IFA_F_NOPREFIXROUTE == 0 {
		t.Fatalf("VIP web flags %#x lack NOPREFIXROUTE", a.Flags)
	}
	// pub's own subnet got no connected route, yet the kernel treats the
	// VIP as local.
	if _, err := p.ha.RouteGet(net.ParseIP("198.51.100.20")); err == nil {
		t.Fatal("a route to pub's subnet exists: the VIP installed a prefix route")
	}
	routes, err := p.ha.RouteGet(net.ParseIP("198.51.100.10"))
	if err != nil || len(routes) == 0 || routes[0].Type != unix.RTN_LOCAL {
		t.Fatalf("route to pub = %+v, %v; want a local route", routes, err)
	}

	// Renew past twice the lifetime: the VIP must stay.
	ticker := time.NewTicker(m.Options().RenewInterval)
	defer ticker.Stop()
	var lastRenew time.Time
	for end := time.Now().Add(2 * lifetime); time.Now().Before(end); <-ticker.C {
		lastRenew = time.Now()
		if err := m.Renew(ctx); err != nil {
			t.Fatalf("Renew: %v", err)
		}
		if _, ok := kernelAddr(t, p.ha, p.va, web.Prefix.Addr()); !ok {
			t.Fatal("VIP web vanished while renewed")
		}
	}
	ticker.Stop()

	// Stop renewing, as a crashed clusterd would: the kernel removes both.
	deadline := lastRenew.Add(lifetime + 2*time.Second)
	pollUntil(t, deadline, "the kernel to expire the VIPs", func() bool {
		_, ok1 := kernelAddr(t, p.ha, p.va, web.Prefix.Addr())
		_, ok2 := kernelAddr(t, p.ha, p.va, pub.Prefix.Addr())
		return !ok1 && !ok2
	})
	gone := time.Since(lastRenew)
	t.Logf("VIPs with a %s lifetime gone %s after the last renewal (FenceWait %s)", lifetime, gone.Round(time.Millisecond), FenceWait(lifetime))
	if gone < lifetime-100*time.Millisecond {
		t.Fatalf("VIP gone %s after renewal, before its %s lifetime", gone, lifetime)
	}
	if err := m.Release(ctx); err != nil {
		t.Fatalf("Release of expired VIPs: %v", err)
	}
	// The host's own address is untouched.
	if _, ok := kernelAddr(t, p.ha, p.va, netip.MustParseAddr("192.0.2.1")); !ok {
		t.Fatal("va lost its own address")
	}
}

func TestKernelIPv6ReleaseAndStaleCleanup(t *testing.T) {
	t.Parallel()
	p := newNSPair(t)
	addAddr(t, p.ha, p.va, "2001:db8::1/64", unix.IFA_F_NODAD)
	k := kernelIn(t, p.a)
	m, err := NewManager(k, announcerIn(p.a), kernelTestLogger(t), Options{BurstCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v6 := VIP{Name: "v6", Prefix: netip.MustParsePrefix("2001:db8::10/64")}
	web := VIP{Name: "web", Prefix: netip.MustParsePrefix("192.0.2.10/32"), Interface: "va"}
	if err := m.Claim(ctx, []VIP{v6, web}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	a, ok := kernelAddr(t, p.ha, p.va, v6.Prefix.Addr())
	if !ok {
		t.Fatal("IPv6 VIP is not on va")
	}
	if a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_TENTATIVE != 0 || a.Flags&unix.IFA_F_PERMANENT != 0 {
		t.Fatalf("IPv6 VIP flags %#x: want NODAD, not tentative, not permanent", a.Flags)
	}

	// Kernel.Links sees what the Manager added.
	links, err := k.Links()
	if err != nil {
		t.Fatalf("Links: %v", err)
	}
	i := slices.IndexFunc(links, func(l Link) bool { return l.Name == "va" })
	if i < 0 || !links[i].HasEthernet() || links[i].HardwareAddr.String() != p.va.Attrs().HardwareAddr.String() {
		t.Fatalf("Links: va missing or without its MAC: %+v", links)
	}
	j := slices.IndexFunc(links[i].Addrs, func(a Address) bool { return a.Prefix == v6.Prefix })
	if j < 0 || !links[i].Addrs[j].NoDAD || !links[i].Addrs[j].NoPrefixRoute || links[i].Addrs[j].Permanent || links[i].Addrs[j].ValidLft > 3*time.Second {
		t.Fatalf("Links: VIP as listed: %+v", links[i].Addrs)
	}

	if err := m.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	for _, v := range []VIP{v6, web} {
		if _, ok := kernelAddr(t, p.ha, p.va, v.Prefix.Addr()); ok {
			t.Fatalf("VIP %s still on va after Release", v.Name)
		}
	}
	if err := k.AddrDel(p.va.Attrs().Index, v6.Prefix); !errors.Is(err, ErrAddressNotFound) {
		t.Fatalf("deleting an absent address = %v, want ErrAddressNotFound", err)
	}
	if err := k.AddrReplace(9999, Address{Prefix: web.Prefix}); !errors.Is(err, ErrLinkNotFound) {
		t.Fatalf("adding to an absent link = %v, want ErrLinkNotFound", err)
	}

	// A crashed director's leftovers: permanent copies with other prefix
	// lengths, one on lo.
	lo, err := p.ha.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addAddr(t, p.ha, p.va, "192.0.2.10/24", 0)
	addAddr(t, p.ha, lo, "2001:db8::10/128", unix.IFA_F_NODAD)
	if err := m.CleanupStale(ctx, []VIP{v6, web}); err != nil {
		t.Fatalf("CleanupStale: %v", err)
	}
	if _, ok := kernelAddr(t, p.ha, p.va, web.Prefix.Addr()); ok {
		t.Fatal("stale IPv4 VIP survived CleanupStale")
	}
	if _, ok := kernelAddr(t, p.ha, lo, v6.Prefix.Addr()); ok {
		t.Fatal("stale IPv6 VIP on lo survived CleanupStale")
	}
	if _, ok := kernelAddr(t, p.ha, p.va, netip.MustParseAddr("2001:db8::1")); !ok {
		t.Fatal("CleanupStale removed va's own address")
	}
}

// capture is an AF_PACKET socket on vb in namespace b.
type capture struct {
	fd int
}

func newCapture(t *testing.T, p *nsPair) *capture {
	t.Helper()
	var fd int
	err := inNetns(p.b, func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		t.Fatalf("capture socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: p.vb.Attrs().Index}); err != nil {
		t.Fatalf("bind capture: %v", err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatalf("capture timeout: %v", err)
	}
	return &capture{fd: fd}
}

// next returns frames until match accepts one or the deadline passes.
func (c *capture) next(t *testing.T, deadline time.Time, match func([]byte) bool) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		if f := slices.Clone(buf[:n]); match(f) {
			return f
		}
	}
	t.Fatal("timed out waiting for a matching frame")
	return nil
}

func TestKernelGratuitousARPOnTheWire(t *testing.T) {
	t.Parallel()
	p := newNSPair(t)
	addAddr(t, p.ha, p.va, "192.0.2.1/24", 0)
	addAddr(t, p.hb, p.vb, "192.0.2.2/24", 0)
	vipIP := netip.MustParseAddr("192.0.2.10")
	vaMAC := p.va.Attrs().HardwareAddr
	// b believes the VIP is at the old leader's MAC.
	oldMAC := net.HardwareAddr{0x02, 0xde, 0xad, 0, 0, 1}
	if err := p.hb.NeighSet(&netlink.Neigh{LinkIndex: p.vb.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_STALE,
		IP: vipIP.AsSlice(), HardwareAddr: oldMAC}); err != nil {
		t.Fatalf("seed b's ARP cache: %v", err)
	}

	capt := newCapture(t, p)
	m, err := NewManager(kernelIn(t, p.a), announcerIn(p.a), kernelTestLogger(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Claim(context.Background(), []VIP{{Name: "web", Prefix: netip.MustParsePrefix("192.0.2.10/24")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	seen := map[ARPOp]int{}
	for seen[ARPRequest] < DefaultBurstCount || seen[ARPReply] < DefaultBurstCount {
		f := capt.next(t, deadline, func(f []byte) bool {
			a, err := ParseARP(f)
			return err == nil && a.SenderIP == vipIP
		})
		a, _ := ParseARP(f)
		if !a.Gratuitous() || a.SenderMAC.String() != vaMAC.String() || a.EthSrc.String() != vaMAC.String() || a.EthDst.String() != broadcastMAC.String() {
			t.Fatalf("captured ARP %+v: want gratuitous, from %s, broadcast", a, vaMAC)
		}
		want, err := BuildGratuitousARP(a.Op, vaMAC, vipIP)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(f, want) {
			t.Fatalf("captured frame differs from the built one:\n got  % x\n want % x", f, want)
		}
		seen[a.Op]++
	}

	// b's kernel took the announcement: its cache now points at va.
	pollUntil(t, deadline, "b's ARP cache to follow the VIP", func() bool {
		return neighMAC(t, p, netlink.FAMILY_V4, vipIP) == vaMAC.String()
	})

	// And a's kernel answers ARP for the VIP: b resolves it afresh.
	if err := p.hb.NeighDel(&netlink.Neigh{LinkIndex: p.vb.Attrs().Index, IP: vipIP.AsSlice()}); err != nil {
		t.Fatalf("flush b's entry: %v", err)
	}
	sendUDP(t, p.b, "192.0.2.10:9")
	f := capt.next(t, time.Now().Add(5*time.Second), func(f []byte) bool {
		a, err := ParseARP(f)
		return err == nil && a.Op == ARPReply && a.SenderIP == vipIP && !a.Gratuitous()
	})
	if a, _ := ParseARP(f); a.SenderMAC.String() != vaMAC.String() || a.TargetIP != netip.MustParseAddr("192.0.2.2") {
		t.Fatalf("ARP reply for the VIP: %+v", a)
	}
}

func TestKernelUnsolicitedNAOnTheWire(t *testing.T) {
	t.Parallel()
	p := newNSPair(t)
	addAddr(t, p.ha, p.va, "2001:db8::1/64", unix.IFA_F_NODAD)
	addAddr(t, p.hb, p.vb, "2001:db8::2/64", unix.IFA_F_NODAD)
	vipIP := netip.MustParseAddr("2001:db8::10")
	vaMAC := p.va.Attrs().HardwareAddr
	oldMAC := net.HardwareAddr{0x02, 0xde, 0xad, 0, 0, 1}
	if err := p.hb.NeighSet(&netlink.Neigh{LinkIndex: p.vb.Attrs().Index, Family: netlink.FAMILY_V6, State: netlink.NUD_STALE,
		IP: vipIP.AsSlice(), HardwareAddr: oldMAC}); err != nil {
		t.Fatalf("seed b's neighbour cache: %v", err)
	}

	capt := newCapture(t, p)
	m, err := NewManager(kernelIn(t, p.a), announcerIn(p.a), kernelTestLogger(t), Options{BurstCount: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Claim(context.Background(), []VIP{{Name: "v6", Prefix: netip.MustParsePrefix("2001:db8::10/64")}}); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for range 2 {
		f := capt.next(t, deadline, func(f []byte) bool {
			na, err := ParseNA(f)
			return err == nil && na.Target == vipIP && na.Src == vipIP
		})
		na, _ := ParseNA(f)
		if na.Dst != allNodes || na.HopLimit != 255 || !na.Override || na.Solicited || na.Router ||
			na.TargetMAC.String() != vaMAC.String() || na.EthSrc.String() != vaMAC.String() {
			t.Fatalf("captured NA %+v", na)
		}
		want, err := BuildUnsolicitedNA(vaMAC, vipIP, false)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(f, want) {
			t.Fatalf("captured frame differs from the built one:\n got  % x\n want % x", f, want)
		}
	}
	pollUntil(t, deadline, "b's neighbour cache to follow the VIP", func() bool {
		return neighMAC(t, p, netlink.FAMILY_V6, vipIP) == vaMAC.String()
	})
}

// neighMAC is b's cached MAC for ip on vb, or "".
func neighMAC(t *testing.T, p *nsPair, family int, ip netip.Addr) string {
	t.Helper()
	ns, err := p.hb.NeighList(p.vb.Attrs().Index, family)
	if err != nil {
		t.Fatalf("list b's neighbours: %v", err)
	}
	for _, n := range ns {
		if got, ok := netip.AddrFromSlice(n.IP); ok && got.Unmap() == ip {
			return n.HardwareAddr.String()
		}
	}
	return ""
}

// sendUDP sends one datagram from namespace ns, which makes its kernel
// resolve the destination with ARP.
func sendUDP(t *testing.T, ns netns.NsHandle, dst string) {
	t.Helper()
	to := netip.MustParseAddrPort(dst)
	err := inNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, []byte("x"), 0, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()})
	})
	if err != nil {
		t.Fatalf("send UDP to %s: %v", dst, err)
	}
}
