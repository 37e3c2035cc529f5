//go:build linux

package lvs

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/internal/testpoll"
)

// bareNetns is a network namespace with only lo up.
func bareNetns(tb testing.TB, name string) int {
	tb.Helper()
	mustRun(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	mustRun(tb, "ip", "-n", name, "link", "set", "lo", "up")
	fd, err := unix.Open(filepath.Join("/run/netns", name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open netns %s: %v", name, err)
	}
	tb.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

// inNetns runs fn on a thread moved into the namespace fd. Sockets fn
// opens stay in that namespace. The thread is never moved back: it stays
// locked, so the runtime discards it when the goroutine ends.
func inNetns(tb testing.TB, fd int, fn func() error) {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
}

// whoamiServer accepts on ln, greets each connection with the address it
// was accepted on, then echoes lines until the client closes.
func whoamiServer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "%s\n", c.LocalAddr())
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintf(c, "%s\n", sc.Text())
			}
		}()
	}
}

// client is one TCP connection from the client namespace to the VIP.
type client struct {
	c      net.Conn
	r      *bufio.Reader
	server string // the real server that greeted it
}

func (cl *client) echo(t *testing.T, s string) {
	t.Helper()
	_ = cl.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(cl.c, "%s\n", s); err != nil {
		t.Fatalf("write to %s: %v", cl.server, err)
	}
	line, err := cl.r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != s {
		t.Fatalf("echo through %s: %q, %v", cl.server, line, err)
	}
}

// TestKernelHealthSorryAndConnections runs real traffic through IPVS NAT
// in three namespaces (client, director, real servers) and checks that a
// server agreed down keeps its established connection at weight 0, that
// the sorry server takes new connections while the quorum is lost and
// hands them back when it is regained, keeping its own connections until
// they end, that a drained server keeps its
// connection while new ones avoid it, and that ReadService reports the
// kernel's active connection counts falling to 0 once clients are done.
//
//	client 172.16.2.2 ── 172.16.2.1 (VIP) director 172.16.1.1 ── 172.16.1.2, .3, .4 (sorry) servers
func TestKernelHealthSorryAndConnections(t *testing.T) {
	requireIPVSTest(t)
	dir := newTestNetns(t)
	suffix := filepath.Base(dir.name)
	cliNS, srvNS := "c"+suffix, "s"+suffix
	cliFD, srvFD := bareNetns(t, cliNS), bareNetns(t, srvNS)
	for _, args := range [][]string{
		{"link", "add", "tc", "type", "veth", "peer", "name", "tc0", "netns", cliNS},
		{"link", "add", "ts", "type", "veth", "peer", "name", "ts0", "netns", srvNS},
		{"addr", "add", "172.16.2.1/24", "dev", "tc"},
		{"addr", "add", "172.16.1.1/24", "dev", "ts"},
		{"link", "set", "tc", "up"},
		{"link", "set", "ts", "up"},
	} {
		mustRun(t, "ip", append([]string{"-n", dir.name}, args...)...)
	}
	// Replies from the real servers are forwarded (and un-NATed) by the
	// director.
	mustRun(t, "ip", "netns", "exec", dir.name, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	for _, args := range [][]string{
		{"-n", cliNS, "addr", "add", "172.16.2.2/24", "dev", "tc0"},
		{"-n", cliNS, "link", "set", "tc0", "up"},
		{"-n", cliNS, "route", "add", "default", "via", "172.16.2.1"},
		{"-n", srvNS, "addr", "add", "172.16.1.2/24", "dev", "ts0"},
		{"-n", srvNS, "addr", "add", "172.16.1.3/24", "dev", "ts0"},
		{"-n", srvNS, "addr", "add", "172.16.1.4/24", "dev", "ts0"},
		{"-n", srvNS, "link", "set", "ts0", "up"},
		{"-n", srvNS, "route", "add", "default", "via", "172.16.1.1"},
	} {
		mustRun(t, "ip", args...)
	}
	inNetns(t, srvFD, func() error {
		ln, err := net.Listen("tcp4", ":8080")
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = ln.Close() })
		go whoamiServer(ln)
		return nil
	})
	var open []*client
	closeAll := func() {
		for _, cl := range open {
			_ = cl.c.Close()
		}
		open = nil
	}
	dial := func(t *testing.T) *client {
		t.Helper()
		var cl *client
		inNetns(t, cliFD, func() error {
			c, err := net.DialTimeout("tcp4", "172.16.2.1:80", 10*time.Second)
			if err != nil {
				return fmt.Errorf("dial the VIP: %w", err)
			}
			t.Cleanup(func() { _ = c.Close() })
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("greeting: %w", err)
			}
			cl = &client{c: c, r: r, server: strings.TrimSpace(line)}
			return nil
		})
		open = append(open, cl)
		return cl
	}

	k, err := NewKernel(testLogger(t), KernelOptions{NetNS: dir.fd})
	if err != nil {
		t.Fatalf("NewKernel: %v", err)
	}
	defer k.Close()
	r := NewReconciler(k, testLogger(t), Options{ResyncInterval: -1})
	f := fsm.New()
	var idx uint64
	var d *Desired
	apply := func(cmds ...fsm.Command) {
		t.Helper()
		for _, c := range cmds {
			data, err := fsm.Encode(c)
			if err != nil {
				t.Fatal(err)
			}
			idx++
			if err := f.Apply(idx, data); err != nil {
				t.Fatalf("apply %s: %v", c.Type(), err)
			}
		}
		if d, err = DesiredFromState(f.Clone()); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Reconcile(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	s1, s2, sorry := netip.MustParseAddrPort("172.16.1.2:8080"), netip.MustParseAddrPort("172.16.1.3:8080"), netip.MustParseAddrPort("172.16.1.4:8080")
	apply(
		fsm.AddVIP{VIP: fsm.VIP{Name: "front", Prefix: netip.MustParsePrefix("172.16.2.1/24")}},
		fsm.AddService{Service: fsm.Service{Name: "web", VIP: "front", Protocol: fsm.TCP, Port: 80, Scheduler: "rr", Method: fsm.NAT,
			Check: &fsm.CheckConfig{Kind: fsm.CheckTCP}, Sorry: &fsm.SorryServer{Address: sorry.Addr(), Port: 8080},
			Servers: map[string]*fsm.RealServer{
				s1.String(): {Address: s1.Addr(), Port: 8080, Weight: 1},
				s2.String(): {Address: s2.Addr(), Port: 8080, Weight: 1},
			}}},
	)
	key, err := ServiceKeyOf(f.Clone(), f.Clone().Services["web"])
	if err != nil {
		t.Fatal(err)
	}
	read := func() *Service {
		t.Helper()
		svc, err := r.ReadService(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	requireDest := func(svc *Service, addr netip.AddrPort, weight, active uint32) {
		t.Helper()
		dst := svc.Dest(addr)
		switch {
		case dst == nil && weight == 0 && active == 0:
		case dst == nil:
			t.Errorf("%s: no destination, want weight %d with %d active", addr, weight, active)
		case dst.Weight != weight || dst.ActiveConns != active:
			t.Errorf("%s: weight %d with %d active (%d inactive), want weight %d with %d active",
				addr, dst.Weight, dst.ActiveConns, dst.InactiveConns, weight, active)
		}
	}
	health := func(addr netip.AddrPort, state string) fsm.Command {
		return fsm.SetHealth{Updates: []fsm.HealthUpdate{{Service: "web", Server: addr.String(), State: state}}}
	}

	// A kept connection counts as active on its server.
	kept := dial(t)
	kept.echo(t, "hello")
	keptAddr := netip.MustParseAddrPort(kept.server)
	other := s2
	if keptAddr == s2 {
		other = s1
	} else if keptAddr != s1 {
		t.Fatalf("first connection answered by %s", kept.server)
	}
	svc := read()
	requireDest(svc, keptAddr, 1, 1)
	requireDest(svc, other, 1, 0)
	if svc.Dest(sorry) != nil {
		t.Error("the sorry server is a destination while the quorum holds")
	}

	// Its server agreed down: weight 0, the connection carries on, new
	// connections go to the other server.
	apply(health(keptAddr, fsm.HealthDown))
	kept.echo(t, "still here")
	for range 3 {
		if cl := dial(t); cl.server != other.String() {
			t.Errorf("new connection went to %s, want %s", cl.server, other)
		}
	}
	requireDest(read(), keptAddr, 0, 1)

	// Both down: quorum lost, the sorry server answers new connections.
	apply(health(other, fsm.HealthDown))
	onSorry := dial(t)
	if onSorry.server != sorry.String() {
		t.Errorf("below quorum a new connection went to %s, want the sorry server %s", onSorry.server, sorry)
	}
	kept.echo(t, "below quorum")
	svc = read()
	requireDest(svc, sorry, 1, 1)
	requireDest(svc, keptAddr, 0, 1)

	// Both back: traffic returns, and the sorry server, which still has
	// a connection, is quiesced rather than deleted, so that connection
	// carries on.
	apply(health(keptAddr, fsm.HealthUp), health(other, fsm.HealthUp))
	seen := map[string]bool{}
	for range 4 {
		seen[dial(t).server] = true
	}
	if !seen[s1.String()] || !seen[s2.String()] || len(seen) != 2 {
		t.Errorf("after recovery connections went to %v, want both real servers only", seen)
	}
	requireDest(read(), sorry, 0, 1)
	onSorry.echo(t, "the sorry server still answers its connection")
	kept.echo(t, "recovered")
	// Once its client is done, a reconcile deletes it.
	closeAll()
	testpoll.Poll(t, 15*time.Second, 50*time.Millisecond, "the sorry server's deletion after its client closed", func() error {
		res, err := r.Reconcile(t.Context(), d)
		if err != nil {
			return err
		}
		if dst := read().Dest(sorry); dst != nil {
			return fmt.Errorf("still a destination: %+v", dst)
		}
		if res.Retiring != 0 {
			t.Errorf("the sorry server was deleted, yet %d destinations are still retiring", res.Retiring)
		}
		return nil
	})

	// Drain s1 with a kept connection on it: the connection carries on,
	// new ones avoid s1, and once the client is done the kernel's active
	// count reaches 0, which is what `server drain --wait` waits for.
	var onS1 *client
	for range 4 {
		if cl := dial(t); cl.server == s1.String() {
			onS1 = cl
		}
	}
	if onS1 == nil {
		t.Fatal("no connection reached s1")
	}
	drained := fsm.Drained
	apply(fsm.UpdateServer{Service: "web", Address: s1.Addr(), Port: 8080, Patch: fsm.ServerPatch{Admin: &drained}})
	for range 3 {
		if cl := dial(t); cl.server != s2.String() {
			t.Errorf("new connection to a drained service went to %s, want %s", cl.server, s2)
		}
	}
	onS1.echo(t, "draining")
	if dst := read().Dest(s1); dst == nil || dst.Weight != 0 || dst.ActiveConns == 0 {
		t.Errorf("drained s1: %+v, want weight 0 with its connections active", dst)
	}
	closeAll()
	testpoll.Poll(t, 15*time.Second, 50*time.Millisecond, "drained s1's active connections to reach 0 after its clients closed", func() error {
		dst := read().Dest(s1)
		if dst == nil {
			t.Fatal("drained s1 left the table")
		}
		if dst.ActiveConns != 0 {
			return fmt.Errorf("%d active connections", dst.ActiveConns)
		}
		t.Logf("drained s1: 0 active, %d inactive connections", dst.InactiveConns)
		return nil
	})
	enabled := fsm.Enabled
	apply(fsm.UpdateServer{Service: "web", Address: s1.Addr(), Port: 8080, Patch: fsm.ServerPatch{Admin: &enabled}})
	requireDest(read(), s1, 1, 0)

	missing := key
	missing.Port = 81
	if _, err := r.ReadService(t.Context(), missing); !errors.Is(err, ErrServiceNotFound) {
		t.Errorf("missing service: %v, want ErrServiceNotFound", err)
	}
}
