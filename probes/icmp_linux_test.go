package probes_test

// The real ICMPPinger against the kernel. Loopback is pinged in the test's
// own namespace; everything else happens in network namespaces the test
// creates (see newLab): the pinger lives in one, a second answers, a third
// ignores echo requests. Namespaces need root; the tests skip
// without it, and skip when no ICMP socket can be opened.

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/directorate/directorate/probes"
)

// Addresses inside the lab namespaces only.
var (
	peer4, peer6     = addr("192.0.2.2"), addr("2001:db8::2")      // on b, answers
	silent4, silent6 = addr("198.51.100.2"), addr("2001:db8:1::2") // routed to a dummy
	noRoute4         = addr("203.0.113.1")                         // no route in a
)

func newICMPPinger(t *testing.T, kind probes.SocketKind) *probes.ICMPPinger {
	t.Helper()
	p, err := probes.NewICMPPinger(probes.ICMPOptions{Kind: kind, Logger: testLogger(t)})
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("no ICMP socket allowed here: %v", err)
	}
	if err != nil {
		t.Fatalf("NewICMPPinger(%s): %v", kind, err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func hasLoopback6() bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(net.IPv6loopback) {
			return true
		}
	}
	return false
}

func TestICMPLoopback(t *testing.T) {
	t.Parallel()
	p := newICMPPinger(t, probes.SocketAuto)
	for _, a := range []netip.Addr{addr("127.0.0.1"), addr("::1")} {
		if _, err := p.Kind(a.Is6()); err != nil {
			t.Logf("skip %s: %v", a, err)
			continue
		}
		if a.Is6() && !hasLoopback6() {
			t.Logf("skip %s: not configured", a)
			continue
		}
		rtt, err := p.Ping(t.Context(), a, 2*time.Second)
		if err != nil {
			t.Fatalf("ping %s: %v", a, err)
		}
		if rtt <= 0 {
			t.Fatalf("ping %s: rtt %s", a, rtt)
		}
		k, _ := p.Kind(a.Is6())
		t.Logf("%s answered in %s over a %s socket", a, rtt, k)
	}
}

// inNetns runs f on a locked thread switched into ns, so sockets f opens
// belong to ns. If switching back fails the thread stays locked and the
// runtime discards it rather than reuse it in the wrong namespace.
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

func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Skipf("cannot read the network namespace: %v", err)
	}
	defer orig.Close()
	ns, err := netns.New() // this thread is now in ns
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

type lab struct {
	a  netns.NsHandle
	v6 bool
}

// newLab builds three namespaces: a, where the pinger runs; b, joined to
// a by veth va-vb, which answers pings; and c, joined by veth vc-vd,
// which has echo replies turned off, so its addresses are silent.
func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	l := &lab{a: newNetns(t)}
	b, c := newNetns(t), newNetns(t)
	handle := func(ns netns.NsHandle) *netlink.Handle {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatalf("netlink handle: %v", err)
		}
		t.Cleanup(h.Close)
		return h
	}
	ha, hb, hc := handle(l.a), handle(b), handle(c)
	for _, v := range []*netlink.Veth{
		{LinkAttrs: netlink.LinkAttrs{Name: "va"}, PeerName: "vb", PeerNamespace: netlink.NsFd(int(b))},
		{LinkAttrs: netlink.LinkAttrs{Name: "vc"}, PeerName: "vd", PeerNamespace: netlink.NsFd(int(c))},
	} {
		if err := ha.LinkAdd(v); err != nil {
			t.Skipf("cannot create a veth pair: %v", err)
		}
	}
	err := inNetns(c, func() error {
		return errors.Join(
			os.WriteFile("/proc/sys/net/ipv4/icmp_echo_ignore_all", []byte("1"), 0),
			os.WriteFile("/proc/sys/net/ipv6/icmp/echo_ignore_all", []byte("1"), 0))
	})
	if err != nil {
		t.Fatalf("silence c: %v", err)
	}
	type addrOn struct {
		h      *netlink.Handle
		link   string
		prefix string
	}
	up := func(h *netlink.Handle, name string) netlink.Link {
		link, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
		return link
	}
	add := func(x addrOn) error {
		a, err := netlink.ParseAddr(x.prefix)
		if err != nil {
			t.Fatal(err)
		}
		a.Flags = unix.IFA_F_NODAD // usable at once
		return x.h.AddrAdd(up(x.h, x.link), a)
	}
	for _, h := range []*netlink.Handle{ha, hb, hc} {
		up(h, "lo")
	}
	for _, x := range []addrOn{{ha, "va", "192.0.2.1/24"}, {hb, "vb", "192.0.2.2/24"}, {ha, "vc", "198.51.100.1/24"}, {hc, "vd", "198.51.100.2/24"}} {
		if err := add(x); err != nil {
			t.Fatalf("add %s: %v", x.prefix, err)
		}
	}
	l.v6 = true
	for _, x := range []addrOn{{ha, "va", "2001:db8::1/64"}, {hb, "vb", "2001:db8::2/64"}, {ha, "vc", "2001:db8:1::1/64"}, {hc, "vd", "2001:db8:1::2/64"}} {
		if err := add(x); err != nil {
			t.Logf("no IPv6 in the lab: add %s: %v", x.prefix, err)
			l.v6 = false
			break
		}
	}
	return l
}

// allowPingSockets lets every group open ICMP datagram sockets in a.
func (l *lab) allowPingSockets(t *testing.T) {
	t.Helper()
	err := inNetns(l.a, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0)
	})
	if err != nil {
		t.Fatalf("set ping_group_range: %v", err)
	}
}

func (l *lab) pinger(t *testing.T, kind probes.SocketKind) *probes.ICMPPinger {
	t.Helper()
	var p *probes.ICMPPinger
	if err := inNetns(l.a, func() error {
		p = newICMPPinger(t, kind)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestICMPInNamespace(t *testing.T) {
	for _, kind := range []probes.SocketKind{probes.SocketDatagram, probes.SocketRaw} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			l := newLab(t)
			if kind == probes.SocketDatagram {
				l.allowPingSockets(t)
			}
			p := l.pinger(t, kind)
			ctx := t.Context()

			reachable := []netip.Addr{addr("127.0.0.1"), peer4}
			silent := []netip.Addr{silent4}
			if l.v6 {
				reachable = append(reachable, addr("::1"), peer6)
				silent = append(silent, silent6)
			}
			for _, a := range reachable {
				if k, err := p.Kind(a.Is6()); k != kind || err != nil {
					t.Fatalf("socket for %s: %s, %v; want %s", a, k, err, kind)
				}
				rtt, err := p.Ping(ctx, a, 2*time.Second)
				if err != nil {
					t.Fatalf("ping %s: %v", a, err)
				}
				t.Logf("%s answered in %s", a, rtt)
			}
			for _, a := range silent {
				if _, err := p.Ping(ctx, a, 200*time.Millisecond); !errors.Is(err, probes.ErrTimeout) {
					t.Fatalf("ping %s (nothing answers): %v, want ErrTimeout", a, err)
				}
			}
			if _, err := p.Ping(ctx, noRoute4, time.Second); err == nil || errors.Is(err, probes.ErrTimeout) {
				t.Fatalf("ping %s (no route): %v, want a send error", noRoute4, err)
			}

			// Many pings share the socket at once, to answering and
			// silent targets alike; each gets its own answer.
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for i := range 32 {
				a, want := reachable[i%len(reachable)], error(nil)
				timeout := 2 * time.Second
				if i%4 == 3 {
					a, want, timeout = silent[i%len(silent)], probes.ErrTimeout, 200*time.Millisecond
				}
				wg.Go(func() {
					_, err := p.Ping(ctx, a, timeout)
					if (want == nil && err != nil) || (want != nil && !errors.Is(err, want)) {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("concurrent ping: %v", err)
			}

			// A silent target's pending ping does not hold up another
			// target's: the answer arrives while it still waits.
			sctx, cancel := context.WithCancel(ctx)
			pending := make(chan error, 1)
			go func() {
				_, err := p.Ping(sctx, silent4, time.Minute)
				pending <- err
			}()
			if _, err := p.Ping(ctx, peer4, 2*time.Second); err != nil {
				t.Fatalf("ping %s while %s is pending: %v", peer4, silent4, err)
			}
			cancel()
			if err := <-pending; !errors.Is(err, context.Canceled) {
				t.Fatalf("pending ping to %s: %v, want it still waiting until canceled", silent4, err)
			}
		})
	}
}

func TestICMPAutoPrefersDatagram(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	p := l.pinger(t, probes.SocketAuto)
	if k, err := p.Kind(false); k != probes.SocketRaw || err != nil {
		t.Fatalf("auto, ping sockets not allowed, as root: %s, %v; want raw", k, err)
	}
	l.allowPingSockets(t)
	p = l.pinger(t, probes.SocketAuto)
	if k, err := p.Kind(false); k != probes.SocketDatagram || err != nil {
		t.Fatalf("auto, ping sockets allowed: %s, %v; want datagram", k, err)
	}
	if _, err := p.Ping(t.Context(), peer4, 2*time.Second); err != nil {
		t.Fatalf("ping %s: %v", peer4, err)
	}
}

func TestPingMonitorWithICMP(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	p := l.pinger(t, probes.SocketAuto)
	cfg := probes.PingConfig{
		Nodes:  []string{"127.0.0.1", silent4.String()},
		Groups: map[string][]string{"peers": {silent4.Next().String(), peer4.String()}},
	}
	m, err := probes.NewPingMonitor(cfg, p, probes.PingOptions{
		Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var s probes.Score
	waitFor(t, "a ready score", func() bool {
		s = m.Score()
		return s.Ready
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s.Value != 2 || s.Max != 3 {
		t.Fatalf("score %d/%d, want 2/3 (loopback and the peers group; the silent node is down): %+v", s.Value, s.Max, s)
	}
	if n := s.Nodes[1]; n.State != probes.Unreachable || !strings.Contains(n.LastError, probes.ErrTimeout.Error()) {
		t.Fatalf("silent node: %+v", s.Nodes[1])
	}
}
