package probes_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directorate/directorate/probes"
)

func TestTCPCheckRefusedAndTimeoutDiffer(t *testing.T) {
	c := probes.NewTCPChecker()
	refused := check(t, c, spec(probes.CheckTCP, closedPort(t), time.Second))
	if !errors.Is(refused, syscall.ECONNREFUSED) || errors.Is(refused, os.ErrDeadlineExceeded) {
		t.Errorf("refused: got %v, want ECONNREFUSED and not a timeout", refused)
	}
	timeout := check(t, c, spec(probes.CheckTCP, fullBacklog(t), 200*time.Millisecond))
	if !errors.Is(timeout, os.ErrDeadlineExceeded) || errors.Is(timeout, syscall.ECONNREFUSED) {
		t.Errorf("timeout: got %v, want os.ErrDeadlineExceeded and not ECONNREFUSED", timeout)
	}
}

func TestTCPCheckCancelled(t *testing.T) {
	target := fullBacklog(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Cancel once the attempt is, most likely, waiting on the handshake;
	// an earlier cancel must give the same answer.
	stop := time.AfterFunc(20*time.Millisecond, cancel)
	defer stop.Stop()
	start := time.Now()
	err := probes.NewTCPChecker().Check(ctx, spec(probes.CheckTCP, target, time.Minute))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a cancelled check took %s to return", took)
	}
}

// TestTCPCheckResets shows that a check closes with a reset: the server
// reads ECONNRESET rather than EOF, and no TIME_WAIT socket is left on
// either side even though the server closes its end last, which with a
// FIN close would park the checker's end in TIME_WAIT.
func TestTCPCheckResets(t *testing.T) {
	l := listenTCP(t)
	target := addrPort(l.Addr())
	const n = 20
	conns := make(chan net.Conn, n)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	c := probes.NewTCPChecker()
	for range n {
		if err := check(t, c, spec(probes.CheckTCP, target, time.Second)); err != nil {
			t.Fatalf("check: %v", err)
		}
	}
	for i := range n {
		var conn net.Conn
		select {
		case conn = <-conns:
		case <-time.After(5 * time.Second):
			t.Fatalf("accepted only %d of %d connections", i, n)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := conn.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("connection %d: server read %v, want ECONNRESET", i, err)
		}
		conn.Close()
	}
	if tw := timeWaits(t, target.Port()); tw > 0 {
		t.Errorf("%d TIME_WAIT sockets on port %d", tw, target.Port())
	}
}

// timeWaits counts IPv4 TCP sockets in TIME_WAIT with 127.0.0.1:port at
// either end.
func timeWaits(t *testing.T, port uint16) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := fmt.Sprintf("0100007F:%04X", port)
	count := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "06" {
			continue
		}
		if fields[1] == p || fields[2] == p {
			count++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return count
}

func TestTCPCheckIPv6(t *testing.T) {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	c := probes.NewTCPChecker()
	if err := check(t, c, spec(probes.CheckTCP, addrPort(l.Addr()), time.Second)); err != nil {
		t.Errorf("[::1]: %v", err)
	}
	l4 := listenTCP(t)
	go func() {
		for {
			c, err := l4.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// An IPv4-mapped address reaches the IPv4 listener, as net.Dial does.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(addrPort(l4.Addr()).Addr().As16()), addrPort(l4.Addr()).Port())
	if err := check(t, c, spec(probes.CheckTCP, mapped, time.Second)); err != nil {
		t.Errorf("%s: %v", mapped, err)
	}
	zoned := netip.AddrPortFrom(netip.MustParseAddr("fe80::1%no-such-interface"), 80)
	err = check(t, c, spec(probes.CheckTCP, zoned, time.Second))
	wantErr(t, err, "tcp connect", `zone "no-such-interface"`)
}
