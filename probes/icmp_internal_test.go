package probes

// Reply matching, tested on a fake socket: the "network" decides what
// comes back for each request, including the strays a raw socket sees.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

type internalLogWriter struct{ t testing.TB }

func (w internalLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func internalLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(internalLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type packet struct {
	b    []byte
	from net.Addr
}

// fakeConn is a net.PacketConn whose respond function plays the network:
// it sees each request written and returns the packets to deliver.
type fakeConn struct {
	respond  func(req *icmp.Message, echo *icmp.Echo, dst net.Addr) []packet
	proto    int
	in       chan packet
	closed   chan struct{}
	once     sync.Once
	writeErr error
}

func newFakeConn(v6 bool, respond func(*icmp.Message, *icmp.Echo, net.Addr) []packet) *fakeConn {
	proto := 1
	if v6 {
		proto = 58
	}
	return &fakeConn{respond: respond, proto: proto, in: make(chan packet, 64), closed: make(chan struct{})}
}

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p.b), p.from, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, dst net.Addr) (int, error) {
	if c.writeErr != nil {
		return 0, c.writeErr
	}
	m, err := icmp.ParseMessage(c.proto, b)
	if err != nil {
		return 0, err
	}
	for _, p := range c.respond(m, m.Body.(*icmp.Echo), dst) {
		c.in <- p
	}
	return len(b), nil
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *fakeConn) LocalAddr() net.Addr              { return &net.IPAddr{} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

// reply builds an echo reply as the network would return it.
func reply(t *testing.T, v6 bool, id, seq int, data []byte, from net.Addr) packet {
	t.Helper()
	var typ icmp.Type = ipv4.ICMPTypeEchoReply
	if v6 {
		typ = ipv6.ICMPTypeEchoReply
	}
	b, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: data}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	return packet{b: b, from: from}
}

func TestDatagramSocketKernelRewritesID(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		target := netip.MustParseAddr("192.0.2.1")
		if v6 {
			target = netip.MustParseAddr("2001:db8::1")
		}
		const kernelID = 4242
		conn := newFakeConn(v6, func(m *icmp.Message, e *icmp.Echo, dst net.Addr) []packet {
			if _, ok := dst.(*net.UDPAddr); !ok {
				t.Errorf("datagram socket written a %T, want *net.UDPAddr", dst)
			}
			return []packet{reply(t, v6, kernelID, e.Seq, e.Data, &net.UDPAddr{IP: target.AsSlice()})}
		})
		e := newEndpoint(conn, SocketDatagram, v6, 7, [8]byte{1}, internalLogger(t))
		rtt, err := e.ping(t.Context(), target, time.Minute, nil)
		if err != nil || rtt < 0 {
			t.Fatalf("v6=%v: ping with a kernel-assigned ID: %s, %v", v6, rtt, err)
		}
		if err := e.close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRawSocketIgnoresStrays(t *testing.T) {
	target := netip.MustParseAddr("192.0.2.1")
	other := &net.IPAddr{IP: net.ParseIP("192.0.2.99")}
	from := &net.IPAddr{IP: net.ParseIP("192.0.2.1").To16()} // a 16-byte IPv4 address still matches
	var e *endpoint
	conn := newFakeConn(false, func(m *icmp.Message, echo *icmp.Echo, dst net.Addr) []packet {
		if _, ok := dst.(*net.IPAddr); !ok {
			t.Errorf("raw socket written a %T, want *net.IPAddr", dst)
		}
		req, err := m.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		wrong := append([]byte(nil), echo.Data...)
		wrong[len(wrong)-1] ^= 0xff
		return []packet{
			{b: req, from: from},                                  // our own request, seen on loopback
			{b: []byte{0, 0}, from: from},                         // garbage
			reply(t, false, echo.ID+1, echo.Seq, echo.Data, from), // another process's ping
			reply(t, false, echo.ID, echo.Seq, echo.Data, other),  // from the wrong host
			reply(t, false, echo.ID, echo.Seq+1, echo.Data, from), // another sequence number
			reply(t, false, echo.ID, echo.Seq, wrong, from),       // another payload
			reply(t, false, echo.ID, echo.Seq, echo.Data, from),   // the answer
			reply(t, false, echo.ID, echo.Seq, echo.Data, from),   // a duplicate
		}
	})
	e = newEndpoint(conn, SocketRaw, false, 7, [8]byte{1}, internalLogger(t))
	defer e.close()
	for range 3 {
		if _, err := e.ping(t.Context(), target, time.Minute, nil); err != nil {
			t.Fatalf("ping among strays: %v", err)
		}
	}
	e.mu.Lock()
	n := len(e.waiters)
	e.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d waiters left after the pings returned", n)
	}
}

func TestRawSocketChecksID(t *testing.T) {
	target := netip.MustParseAddr("192.0.2.1")
	conn := newFakeConn(false, func(m *icmp.Message, echo *icmp.Echo, dst net.Addr) []packet {
		return []packet{reply(t, false, echo.ID+1, echo.Seq, echo.Data, dst)}
	})
	e := newEndpoint(conn, SocketRaw, false, 7, [8]byte{1}, internalLogger(t))
	defer e.close()
	_, err := e.ping(t.Context(), target, 20*time.Millisecond, nil)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("reply with a foreign ID on a raw socket: %v, want ErrTimeout", err)
	}
}

// A reply that arrives after its ping gave up must not answer a later ping
// that reuses the sequence number.
func TestLateReplyDoesNotAnswerReusedSequence(t *testing.T) {
	target := netip.MustParseAddr("192.0.2.1")
	var mu sync.Mutex
	var late *packet
	conn := newFakeConn(false, func(m *icmp.Message, echo *icmp.Echo, dst net.Addr) []packet {
		mu.Lock()
		defer mu.Unlock()
		if late == nil { // first request: its reply is held back
			p := reply(t, false, echo.ID, echo.Seq, echo.Data, dst)
			late = &p
			return nil
		}
		return []packet{*late} // second: only the stale reply arrives
	})
	e := newEndpoint(conn, SocketRaw, false, 7, [8]byte{1}, internalLogger(t))
	defer e.close()
	if _, err := e.ping(t.Context(), target, 20*time.Millisecond, nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("first ping: %v, want ErrTimeout", err)
	}
	e.mu.Lock()
	e.seq-- // wrap around onto the first ping's sequence number
	e.mu.Unlock()
	if _, err := e.ping(t.Context(), target, 20*time.Millisecond, nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("second ping answered by the first one's late reply: %v", err)
	}
}

func TestPingerErrors(t *testing.T) {
	conn := newFakeConn(false, func(m *icmp.Message, echo *icmp.Echo, dst net.Addr) []packet { return nil })
	noV6 := errors.New("open ipv6 datagram icmp socket: address family not supported")
	p := &ICMPPinger{
		v4:      newEndpoint(conn, SocketRaw, false, 7, [8]byte{1}, internalLogger(t)),
		v6Err:   noV6,
		closing: make(chan struct{}),
	}
	if k, err := p.Kind(false); k != SocketRaw || err != nil {
		t.Fatalf("Kind(v4) = %s, %v", k, err)
	}
	if _, err := p.Kind(true); !errors.Is(err, noV6) {
		t.Fatalf("Kind(v6) = %v, want the open error", err)
	}
	ctx := t.Context()
	if _, err := p.Ping(ctx, netip.Addr{}, time.Second); err == nil {
		t.Fatal("pinged the zero address")
	}
	if _, err := p.Ping(ctx, netip.MustParseAddr("192.0.2.1"), 0); err == nil || !strings.Contains(err.Error(), "timeout 0s is not positive") {
		t.Fatalf("zero timeout: %v", err)
	}
	if _, err := p.Ping(ctx, netip.MustParseAddr("2001:db8::1"), time.Second); !errors.Is(err, noV6) {
		t.Fatalf("ping without an IPv6 socket: %v, want the open error", err)
	}

	sendErr := errors.New("network is unreachable")
	conn.writeErr = sendErr
	if _, err := p.Ping(ctx, netip.MustParseAddr("::ffff:192.0.2.1"), time.Second); !errors.Is(err, sendErr) || !strings.Contains(err.Error(), "ping 192.0.2.1: send") {
		t.Fatalf("send failure on a mapped address: %v, want the send error for 192.0.2.1", err)
	}
	conn.writeErr = nil

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Ping(cctx, netip.MustParseAddr("192.0.2.1"), time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("ping with a canceled context: %v", err)
	}

	pending := make(chan error, 1)
	go func() {
		_, err := p.Ping(ctx, netip.MustParseAddr("192.0.2.1"), time.Minute)
		pending <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.v4.mu.Lock()
		n := len(p.v4.waiters)
		p.v4.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ping never registered")
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-pending; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending ping after Close: %v, want ErrClosed", err)
	}
	if _, err := p.Ping(ctx, netip.MustParseAddr("192.0.2.1"), time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("ping after Close: %v, want ErrClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
