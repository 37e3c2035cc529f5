// Package netns runs Directorate's high-availability scenarios against the
// host kernel: three clusterd processes, each in a network namespace of its
// own, on a bridge that lives in a fourth ("switch") namespace, and a client
// namespace that probes the VIP with TCP and ARP. The IPVS backend is the
// dry run (the build machines' kernels have no IPVS); the VIP backend is the
// real one: addresses with a finite valid_lft, announced by gratuitous ARP.
//
// Every address and link lives in a namespace the test creates and deletes;
// nothing touches the host's root namespace. The tests need root, iproute2
// and the built binaries (-bin, as `make netns` passes it), and skip
// otherwise.
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	e2elab "github.com/directorate/directorate/e2e/lab"
)

var binDir = flag.String("bin", "", "directory holding the clusterd and clusterctl binaries")

// The lab's addresses, all in TEST-NET-1 and only inside its namespaces.
var (
	subnet = netip.MustParsePrefix("192.0.2.0/24")
	// clientIP is the client namespace's own address; the client's kernel
	// resolves the VIP and keeps it in its neighbour table.
	clientIP = netip.MustParseAddr("192.0.2.200")
	// proberIP and proberMAC are the ARP sampler's identity. They belong to
	// no interface: replies to them reach the sampler's packet socket but
	// never the client's kernel, so sampling cannot disturb the neighbour
	// table that the TCP probes depend on.
	proberIP  = netip.MustParseAddr("192.0.2.250")
	proberMAC = net.HardwareAddr{0x02, 0xee, 0x00, 0x00, 0x00, 0xfa}
)

// host is one namespace on the lab's bridge, with its end of a veth pair
// named eth0.
type host struct {
	name   string // role: d1, d2, d3, client
	ns     string // the named network namespace
	handle netns.NsHandle
	nl     *netlink.Handle
	ip     netip.Addr
	mac    net.HardwareAddr
	eth0   int    // eth0's ifindex, inside ns
	port   string // the veth's other end, a bridge port in the switch namespace
}

// lab is a switch namespace holding a bridge, and hosts attached to it.
type lab struct {
	tb     testing.TB
	prefix string
	sw     *host
	hosts  []*host
}

// skipUnlessLab skips tb where the lab cannot be built.
func skipUnlessLab(tb testing.TB) {
	tb.Helper()
	if *binDir == "" {
		tb.Skip("-bin not given: run through `make netns`")
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs iproute2's ip to run processes in named network namespaces")
	}
}

// newLab builds a switch namespace with a bridge, and one namespace per name
// attached to it with the address the same index has in addrs.
func newLab(tb testing.TB, names []string, addrs []netip.Addr) *lab {
	tb.Helper()
	skipUnlessLab(tb)
	suffix := make([]byte, 3)
	if _, err := rand.Read(suffix); err != nil {
		tb.Fatalf("random namespace suffix: %v", err)
	}
	// The pid and a random suffix keep concurrent runs, and a benchmark's
	// repeated runs, apart.
	l := &lab{tb: tb, prefix: fmt.Sprintf("dirnt-%d-%s-", os.Getpid(), hex.EncodeToString(suffix))}
	l.sw = l.namespace("switch")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := l.sw.nl.LinkAdd(br); err != nil {
		tb.Skipf("cannot create a bridge in a network namespace: %v", err)
	}
	if err := l.sw.nl.LinkSetUp(br); err != nil {
		tb.Fatalf("set br0 up: %v", err)
	}
	for i, name := range names {
		h := l.namespace(name)
		h.ip = addrs[i]
		a4 := h.ip.As4()
		h.mac = net.HardwareAddr{0x02, 0x00, a4[0], a4[1], a4[2], a4[3]}
		h.port = "v-" + name
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: h.port},
			PeerName:         "eth0",
			PeerHardwareAddr: h.mac,
			PeerNamespace:    netlink.NsFd(int(h.handle)),
		}
		if err := l.sw.nl.LinkAdd(veth); err != nil {
			tb.Skipf("cannot create a veth pair between namespaces: %v", err)
		}
		port, err := l.sw.nl.LinkByName(h.port)
		if err != nil {
			tb.Fatalf("find %s: %v", h.port, err)
		}
		if err := l.sw.nl.LinkSetMasterByIndex(port, br.Attrs().Index); err != nil {
			tb.Fatalf("attach %s to br0: %v", h.port, err)
		}
		if err := l.sw.nl.LinkSetUp(port); err != nil {
			tb.Fatalf("set %s up: %v", h.port, err)
		}
		lo, err := h.nl.LinkByName("lo")
		if err != nil {
			tb.Fatalf("%s: find lo: %v", name, err)
		}
		if err := h.nl.LinkSetUp(lo); err != nil {
			tb.Fatalf("%s: set lo up: %v", name, err)
		}
		eth0, err := h.nl.LinkByName("eth0")
		if err != nil {
			tb.Fatalf("%s: find eth0: %v", name, err)
		}
		h.eth0 = eth0.Attrs().Index
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: h.ip.AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}}
		if err := h.nl.AddrAdd(eth0, addr); err != nil {
			tb.Fatalf("%s: add %s to eth0: %v", name, h.ip, err)
		}
		if err := h.nl.LinkSetUp(eth0); err != nil {
			tb.Fatalf("%s: set eth0 up: %v", name, err)
		}
		l.hosts = append(l.hosts, h)
	}
	return l
}

// namespace creates a named network namespace (lab.Namespace), skipping tb
// where namespaces cannot be made.
func (l *lab) namespace(name string) *host {
	l.tb.Helper()
	h := &host{name: name, ns: l.prefix + name}
	var err error
	if h.handle, h.nl, err = e2elab.Namespace(l.tb, h.ns); err != nil {
		l.tb.Skipf("cannot create a network namespace: %v", err)
	}
	return h
}

// setPort sets h's bridge port up or down: down cuts h off from every other
// host while its own eth0 keeps its addresses.
func (l *lab) setPort(h *host, up bool) error {
	port, err := l.sw.nl.LinkByName(h.port)
	if err != nil {
		return fmt.Errorf("find bridge port %s: %w", h.port, err)
	}
	if up {
		err = l.sw.nl.LinkSetUp(port)
	} else {
		err = l.sw.nl.LinkSetDown(port)
	}
	if err != nil {
		return fmt.Errorf("set bridge port %s up=%t: %w", h.port, up, err)
	}
	return nil
}

// addr returns ip as it sits on h's eth0, if it does.
func (h *host) addr(ip netip.Addr) (netlink.Addr, bool, error) {
	addrs, err := h.nl.AddrList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: h.eth0}}, netlink.FAMILY_V4)
	if err != nil {
		return netlink.Addr{}, false, fmt.Errorf("%s: list addresses: %w", h.name, err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return a, true, nil
		}
	}
	return netlink.Addr{}, false, nil
}

// neighbour returns the MAC h's kernel has for ip, if it has a usable entry.
func (h *host) neighbour(ip netip.Addr) (net.HardwareAddr, bool, error) {
	ns, err := h.nl.NeighList(h.eth0, netlink.FAMILY_V4)
	if err != nil {
		return nil, false, fmt.Errorf("%s: list neighbours: %w", h.name, err)
	}
	for _, n := range ns {
		got, ok := netip.AddrFromSlice(n.IP)
		if !ok || got.Unmap() != ip {
			continue
		}
		if n.State&(unix.NUD_INCOMPLETE|unix.NUD_FAILED|unix.NUD_NONE) != 0 || len(n.HardwareAddr) == 0 {
			return nil, false, nil
		}
		return n.HardwareAddr, true, nil
	}
	return nil, false, nil
}

// inNetns runs fn on a fresh OS thread switched into ns. The thread stays
// locked until its goroutine ends, so the runtime discards it rather than
// hand it, still in ns, to another goroutine; sockets fn opens stay in ns
// wherever they are used afterwards.
func inNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// errExited says a process ended while a test still needed it.
var errExited = errors.New("process exited")
