//go:build linux

// Package lab builds Directorate's end-to-end topology inside the e2e VM:
// nodes that are containers (a network namespace each, with their own mount,
// PID and UTS namespaces for the processes they run), wired by veth pairs to
// bridges that live in a switch namespace of their own. The outside network
// (10.0.0.0/24) carries the client, the gateway (the ping node), the
// directors and the DR/TUN real servers; the inside network (10.1.0.0/24)
// carries the directors' second leg and the NAT real servers.
//
// The package needs root and a kernel with IPVS, veth and bridges: the
// Debian kernel that e2e/vm boots. It uses only the built binaries of the
// project (clusterd, clusterctl, realserver), never its packages, so what it
// tests is what ships.
//
// Everything takes a T, which *testing.T satisfies; e2e/cmd/demo passes its
// own. Fatal errors stop the caller through T.Fatalf.
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// T is what the lab needs from its caller: *testing.T, or the demo's
// stand-in.
type T interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
	Failed() bool
}

// Net names one of the lab's bridges.
type Net string

// The lab's two networks.
const (
	// Outside is the client's network: 10.0.0.0/24.
	Outside Net = "out"
	// Inside is the NAT real servers' network: 10.1.0.0/24.
	Inside Net = "in"
)

// Prefixes of the two networks.
var (
	OutsideNet = netip.MustParsePrefix("10.0.0.0/24")
	InsideNet  = netip.MustParsePrefix("10.1.0.0/24")
)

// ifName is the interface name a node's leg on n has inside the node.
func ifName(n Net) string {
	if n == Inside {
		return "eth1"
	}
	return "eth0"
}

// Link is a node's leg on one of the lab's networks.
type Link struct {
	Net  Net
	Addr netip.Prefix
}

// Node is one container of the lab.
type Node struct {
	Name string
	// NS is the named network namespace (`ip netns exec NS ...`).
	NS     string
	Handle netns.NsHandle
	NL     *netlink.Handle
	Links  []Link
	// Dir is the node's own directory for logs and state.
	Dir string
	lab *Lab
}

// IP is the node's first address.
func (n *Node) IP() netip.Addr { return n.Links[0].Addr.Addr() }

// IPOn is the node's address on net, if it has a leg there.
func (n *Node) IPOn(net Net) (netip.Addr, bool) {
	for _, l := range n.Links {
		if l.Net == net {
			return l.Addr.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// Lab is a switch namespace with the bridges, and the nodes attached.
type Lab struct {
	t      T
	prefix string
	dir    string
	sw     *Node
	mu     sync.Mutex
	nodes  []*Node
	spawns chan func()
}

// New builds an empty lab whose files live under dir; it is torn down when
// t ends.
func New(t T, dir string) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("lab: needs root")
	}
	suffix := make([]byte, 3)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatalf("lab: random suffix: %v", err)
	}
	l := &Lab{t: t, prefix: "e2e" + hex.EncodeToString(suffix) + "-", dir: dir, spawns: make(chan func())}
	// Processes die with the thread that forked them (Pdeathsig), so every
	// fork happens on one locked thread that outlives them all.
	spawned := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(spawned)
		for fn := range l.spawns {
			fn()
		}
	}()
	t.Cleanup(func() {
		close(l.spawns)
		<-spawned
	})
	l.sw = l.namespace("sw")
	for _, n := range []Net{Outside, Inside} {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-" + string(n)}}
		if err := l.sw.NL.LinkAdd(br); err != nil {
			t.Fatalf("lab: add bridge %s: %v", br.Name, err)
		}
		if err := l.sw.NL.LinkSetUp(br); err != nil {
			t.Fatalf("lab: set %s up: %v", br.Name, err)
		}
	}
	return l
}

// namespace creates a named network namespace and deletes it when the lab
// ends.
func (l *Lab) namespace(name string) *Node {
	l.t.Helper()
	n := &Node{Name: name, NS: l.prefix + name, lab: l, Dir: fmt.Sprintf("%s/%s", l.dir, name)}
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	var err error
	if n.Handle, n.NL, err = Namespace(l.t, n.NS); err != nil {
		l.t.Fatalf("lab: %v", err)
	}
	return n
}

// Namespace creates the named network namespace, so that `ip netns exec`
// can run processes in it, and opens it and a netlink handle in it; t's
// cleanups close them and delete the name. Deleting the name frees the
// namespace once the last process and socket in it are gone, and cleanups
// registered later (processes, listeners) run first. It returns an error
// only when the namespace cannot be created, which a caller may skip on;
// a failure after that fails t.
func Namespace(t T, name string) (netns.NsHandle, *netlink.Handle, error) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return 0, nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(nl.Close)
	return h, nl, nil
}

// portName is the bridge port of node's leg on net, in the switch
// namespace. Interface names are at most 15 bytes.
func portName(node string, n Net) string {
	p := string(n[0]) + "-" + node
	if len(p) > 15 {
		p = p[:15]
	}
	return p
}

// macFor derives a stable, locally administered MAC from an address, so
// logs and ARP samples name nodes recognisably.
func macFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x00, b[0], b[1], b[2], b[3]}
}

// AddNode creates a container attached to the given networks, with lo up
// and the addresses on eth0 (outside) and eth1 (inside). Forwarding is on
// everywhere: directors route for NAT, and nothing else minds.
func (l *Lab) AddNode(name string, links ...Link) *Node {
	l.t.Helper()
	n := l.namespace(name)
	n.Links = links
	for _, lk := range links {
		port := portName(name, lk.Net)
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: port},
			PeerName:         ifName(lk.Net),
			PeerHardwareAddr: macFor(lk.Addr.Addr()),
			PeerNamespace:    netlink.NsFd(int(n.Handle)),
		}
		if err := l.sw.NL.LinkAdd(veth); err != nil {
			l.t.Fatalf("lab: %s: add veth: %v", name, err)
		}
		p, err := l.sw.NL.LinkByName(port)
		if err != nil {
			l.t.Fatalf("lab: find %s: %v", port, err)
		}
		br, err := l.sw.NL.LinkByName("br-" + string(lk.Net))
		if err != nil {
			l.t.Fatalf("lab: find bridge: %v", err)
		}
		if err := l.sw.NL.LinkSetMaster(p, br); err != nil {
			l.t.Fatalf("lab: attach %s: %v", port, err)
		}
		if err := l.sw.NL.LinkSetUp(p); err != nil {
			l.t.Fatalf("lab: set %s up: %v", port, err)
		}
		eth, err := n.NL.LinkByName(ifName(lk.Net))
		if err != nil {
			l.t.Fatalf("lab: %s: find %s: %v", name, ifName(lk.Net), err)
		}
		if err := n.NL.AddrAdd(eth, &netlink.Addr{IPNet: prefixNet(lk.Addr)}); err != nil {
			l.t.Fatalf("lab: %s: add %s: %v", name, lk.Addr, err)
		}
		if err := n.NL.LinkSetUp(eth); err != nil {
			l.t.Fatalf("lab: %s: set %s up: %v", name, ifName(lk.Net), err)
		}
	}
	lo, err := n.NL.LinkByName("lo")
	if err != nil {
		l.t.Fatalf("lab: %s: find lo: %v", name, err)
	}
	if err := n.NL.LinkSetUp(lo); err != nil {
		l.t.Fatalf("lab: %s: set lo up: %v", name, err)
	}
	n.Sysctl("net.ipv4.ip_forward", "1")
	l.mu.Lock()
	l.nodes = append(l.nodes, n)
	l.mu.Unlock()
	return n
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Sysctl sets a sysctl inside n (net.* sysctls are per namespace).
func (n *Node) Sysctl(key, value string) {
	n.lab.t.Helper()
	n.MustRun("sysctl", "-q", "-w", key+"="+value)
}

// Run runs argv inside n's network namespace and returns its combined
// output.
func (n *Node) Run(argv ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.NS}, argv...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %w: %s", n.Name, argv, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the lab's T on error.
func (n *Node) MustRun(argv ...string) string {
	n.lab.t.Helper()
	out, err := n.Run(argv...)
	if err != nil {
		n.lab.t.Fatalf("lab: %v", err)
	}
	return out
}

// SetLink sets n's bridge port on net up or down: down cuts n off that
// network while its own interface, and its addresses, stay as they are.
func (n *Node) SetLink(net Net, up bool) error {
	p, err := n.lab.sw.NL.LinkByName(portName(n.Name, net))
	if err != nil {
		return fmt.Errorf("find %s's port on %s: %w", n.Name, net, err)
	}
	if up {
		err = n.lab.sw.NL.LinkSetUp(p)
	} else {
		err = n.lab.sw.NL.LinkSetDown(p)
	}
	if err != nil {
		return fmt.Errorf("set %s's port on %s up=%t: %w", n.Name, net, up, err)
	}
	return nil
}

// SetLinks sets every leg of n up or down: down is a director whose cables
// were pulled.
func (n *Node) SetLinks(up bool) {
	n.lab.t.Helper()
	for _, lk := range n.Links {
		if err := n.SetLink(lk.Net, up); err != nil {
			n.lab.t.Fatalf("lab: %v", err)
		}
	}
}

// Blackhole makes n drop everything it would send to dst, or stop doing so:
// a one-way cut of one path that leaves every other path alone.
func (n *Node) Blackhole(dst netip.Addr, on bool) error {
	r := &netlink.Route{Dst: prefixNet(netip.PrefixFrom(dst, dst.BitLen())), Type: unix.RTN_BLACKHOLE}
	var err error
	if on {
		err = n.NL.RouteAdd(r)
	} else {
		err = n.NL.RouteDel(r)
	}
	if err != nil {
		return fmt.Errorf("%s: blackhole %s on=%t: %w", n.Name, dst, on, err)
	}
	return nil
}

// HasAddr reports whether ip sits on any of n's interfaces.
func (n *Node) HasAddr(ip netip.Addr) (bool, error) {
	addrs, err := n.NL.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return false, fmt.Errorf("%s: list addresses: %w", n.Name, err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true, nil
		}
	}
	return false, nil
}

// DelAddr removes ip from n's interfaces wherever it is, as a reboot would.
func (n *Node) DelAddr(ip netip.Addr) error {
	addrs, err := n.NL.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("%s: list addresses: %w", n.Name, err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			link, err := n.NL.LinkByIndex(a.LinkIndex)
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			if err := n.NL.AddrDel(link, &a); err != nil {
				return fmt.Errorf("%s: delete %s: %w", n.Name, ip, err)
			}
		}
	}
	return nil
}

// Do runs fn on a thread inside n's network namespace. Sockets fn opens
// stay in that namespace wherever they are used later. The thread is
// discarded afterwards rather than returned, still switched, to the
// runtime.
func (n *Node) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(n.Handle); err != nil {
			errc <- fmt.Errorf("enter %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Start runs argv as a container process of n: in n's network namespace
// and, through the clone flags, in mount, PID and UTS namespaces of its
// own, so it sees its own process tree and cannot disturb another node's
// mounts. Its output goes to logPath. It is killed when the lab ends.
func (n *Node) Start(logPath string, argv ...string) *Proc {
	n.lab.t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.lab.t.Fatalf("lab: %v", err)
	}
	// ip netns exec execs argv in place: the pid is the process's own.
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.NS}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
	}
	errc := make(chan error, 1)
	n.lab.spawns <- func() { errc <- cmd.Start() }
	if err := <-errc; err != nil {
		f.Close()
		n.lab.t.Fatalf("lab: %s: start %v: %v", n.Name, argv, err)
	}
	p := &Proc{node: n, cmd: cmd, exited: make(chan struct{}), Log: logPath}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	n.lab.t.Cleanup(func() { p.Kill() })
	return p
}

// Proc is a process running in a node.
type Proc struct {
	node   *Node
	cmd    *exec.Cmd
	exited chan struct{}
	// Log is the file its output goes to.
	Log string
}

// Running reports whether p has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig to p.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: signal %s: %w", p.node.Name, sig, err)
	}
	return nil
}

// Kill SIGKILLs p, stopped or not, and waits until it is reaped. As PID 1
// of its PID namespace, its death takes any children with it.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.node.lab.t.Errorf("lab: %s: pid %d survived SIGKILL for 10s", p.node.Name, p.cmd.Process.Pid)
	}
}

// Poll calls fn every interval until it reports true, and returns the time
// it did. It fails t once timeout has passed; fn's error fails t at once.
func Poll(t T, timeout, interval time.Duration, what string, fn func() (bool, error)) time.Time {
	t.Helper()
	at, err := TryPoll(timeout, interval, fn)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return at
}

// ErrTimeout says a TryPoll ran out of time.
var ErrTimeout = errors.New("timed out")

// TryPoll is Poll that returns ErrTimeout, or fn's error, instead of
// failing a T.
func TryPoll(timeout, interval time.Duration, fn func() (bool, error)) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := fn()
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%w after %s", ErrTimeout, timeout)
		}
		time.Sleep(interval)
	}
}
