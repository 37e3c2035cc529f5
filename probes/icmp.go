package probes

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// SocketKind is the kind of ICMP socket an ICMPPinger sends through.
type SocketKind int

const (
	// SocketAuto tries an unprivileged datagram socket first and falls
	// back to a raw one.
	SocketAuto SocketKind = iota
	// SocketDatagram is Linux's unprivileged ICMP datagram ("ping")
	// socket. The kernel allows it only to groups within
	// net.ipv4.ping_group_range (which covers IPv6 too), and it owns the
	// echo identifier: it rewrites the one we send and delivers us only
	// replies carrying ours, so no other process's replies reach us.
	SocketDatagram
	// SocketRaw is a raw ICMP socket; it needs CAP_NET_RAW and sees every
	// ICMP message the host receives, so replies are matched by
	// identifier, sequence number, source and payload.
	SocketRaw
)

// String names the kind for logs.
func (k SocketKind) String() string {
	switch k {
	case SocketAuto:
		return "auto"
	case SocketDatagram:
		return "datagram"
	case SocketRaw:
		return "raw"
	}
	return fmt.Sprintf("SocketKind(%d)", int(k))
}

// ICMPOptions tune an ICMPPinger. Zero fields take the defaults.
type ICMPOptions struct {
	// Kind forces a socket kind; the default, SocketAuto, prefers
	// unprivileged datagram sockets so clusterd needs CAP_NET_RAW only
	// where ping_group_range excludes it.
	Kind SocketKind
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// ICMPPinger is the real Pinger. It opens one socket per address family
// when it is created, so its sockets live in the network namespace of the
// thread that called NewICMPPinger, and shares each socket among all
// targets: one reader goroutine per socket hands replies to the Ping calls
// waiting for them.
type ICMPPinger struct {
	v4, v6       *endpoint
	v4Err, v6Err error
	closing      chan struct{}
	closeOnce    sync.Once
	closeErr     error
}

var _ Pinger = (*ICMPPinger)(nil)

// NewICMPPinger opens an ICMP socket for IPv4 and one for IPv6. A family
// whose socket cannot be opened (IPv6 disabled, no permission) only makes
// pings to that family fail; NewICMPPinger fails when neither opens. The
// error then wraps the cause: errors.Is(err, os.ErrPermission) when the
// process may open neither kind.
func NewICMPPinger(opts ICMPOptions) (*ICMPPinger, error) {
	switch opts.Kind {
	case SocketAuto, SocketDatagram, SocketRaw:
	default:
		return nil, fmt.Errorf("icmp pinger: kind: unknown socket kind %d", int(opts.Kind))
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	var token [8]byte
	binary.BigEndian.PutUint64(token[:], rand.Uint64())
	p := &ICMPPinger{closing: make(chan struct{})}
	p.v4, p.v4Err = openEndpoint(false, opts.Kind, token, log)
	p.v6, p.v6Err = openEndpoint(true, opts.Kind, token, log)
	if p.v4Err != nil && p.v6Err != nil {
		return nil, fmt.Errorf("icmp pinger: %w", errors.Join(p.v4Err, p.v6Err))
	}
	for _, e := range []error{p.v4Err, p.v6Err} {
		if e != nil {
			log.Warn("icmp socket unavailable; ping nodes of this family will count as unreachable", "err", e)
		}
	}
	return p, nil
}

// Kind reports the socket kind the pinger uses for IPv6 (ipv6 true) or
// IPv4, or why it has no socket for that family.
func (p *ICMPPinger) Kind(ipv6 bool) (SocketKind, error) {
	e, err := p.v4, p.v4Err
	if ipv6 {
		e, err = p.v6, p.v6Err
	}
	if err != nil {
		return 0, err
	}
	return e.kind, nil
}

// Ping implements Pinger.
func (p *ICMPPinger) Ping(ctx context.Context, addr netip.Addr, timeout time.Duration) (time.Duration, error) {
	if !addr.IsValid() {
		return 0, errors.New("ping: invalid address")
	}
	addr = addr.Unmap()
	if timeout <= 0 {
		return 0, fmt.Errorf("ping %s: timeout %s is not positive", addr, timeout)
	}
	select {
	case <-p.closing:
		return 0, fmt.Errorf("ping %s: %w", addr, ErrClosed)
	default:
	}
	e, err := p.v4, p.v4Err
	if addr.Is6() {
		e, err = p.v6, p.v6Err
	}
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", addr, err)
	}
	return e.ping(ctx, addr, timeout, p.closing)
}

// Close closes the sockets and waits for their readers; pending and later
// Pings fail with ErrClosed.
func (p *ICMPPinger) Close() error {
	p.closeOnce.Do(func() {
		close(p.closing)
		var errs []error
		for _, e := range []*endpoint{p.v4, p.v6} {
			if e != nil {
				errs = append(errs, e.close())
			}
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// endpoint is one ICMP socket and the pings waiting on it.
type endpoint struct {
	conn    net.PacketConn
	kind    SocketKind
	ipv6    bool
	proto   int
	request icmp.Type
	reply   icmp.Type
	// id is the echo identifier sent. The kernel replaces it on datagram
	// sockets, so it is checked only on raw ones.
	id    int
	token [8]byte
	log   *slog.Logger

	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	seq     uint16
	nonce   uint64
	waiters map[uint16]*waiter
}

type waiter struct {
	addr    netip.Addr // zone stripped: replies carry the zone of the receiving interface
	payload []byte
	reply   chan time.Time
}

// maxInFlight bounds the pings outstanding on one socket: sequence numbers
// are 16 bits and each pending ping holds one.
const maxInFlight = 1 << 15

func openEndpoint(v6 bool, kind SocketKind, token [8]byte, log *slog.Logger) (*endpoint, error) {
	family := "ipv4"
	if v6 {
		family = "ipv6"
	}
	kinds := []SocketKind{kind}
	if kind == SocketAuto {
		kinds = []SocketKind{SocketDatagram, SocketRaw}
	}
	var errs []error
	for _, k := range kinds {
		network, laddr := "udp4", "0.0.0.0"
		switch {
		case k == SocketDatagram && v6:
			network, laddr = "udp6", "::"
		case k == SocketRaw && v6:
			network, laddr = "ip6:ipv6-icmp", "::"
		case k == SocketRaw:
			network = "ip4:icmp"
		}
		c, err := icmp.ListenPacket(network, laddr)
		if err != nil {
			errs = append(errs, fmt.Errorf("open %s %s icmp socket: %w", family, k, err))
			continue
		}
		if k == SocketRaw {
			// The kernel copies every ICMP message to a raw socket; a
			// filter spares the reader the ones that are not replies. It
			// is only an optimisation, as the reader checks the type.
			var ferr error
			if v6 {
				var f ipv6.ICMPFilter
				f.SetAll(true)
				f.Accept(ipv6.ICMPTypeEchoReply)
				ferr = c.IPv6PacketConn().SetICMPFilter(&f)
			} else {
				var f ipv4.ICMPFilter
				f.SetAll(true)
				f.Accept(ipv4.ICMPTypeEchoReply)
				ferr = c.IPv4PacketConn().SetICMPFilter(&f)
			}
			if ferr != nil {
				log.Debug("icmp filter not set", "family", family, "err", ferr)
			}
		}
		log.Info("icmp socket open", "family", family, "kind", k.String())
		return newEndpoint(c, k, v6, rand.N(1<<16), token, log), nil
	}
	return nil, errors.Join(errs...)
}

func newEndpoint(conn net.PacketConn, kind SocketKind, v6 bool, id int, token [8]byte, log *slog.Logger) *endpoint {
	e := &endpoint{
		conn:    conn,
		kind:    kind,
		ipv6:    v6,
		proto:   1, // IANA protocol number of ICMP
		request: ipv4.ICMPTypeEcho,
		reply:   ipv4.ICMPTypeEchoReply,
		id:      id,
		token:   token,
		log:     log,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		waiters: make(map[uint16]*waiter),
	}
	if v6 {
		e.proto, e.request, e.reply = 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	go e.read()
	return e
}

func (e *endpoint) close() error {
	close(e.stop)
	err := e.conn.Close()
	<-e.done
	return err
}

// register takes a free sequence number and builds the request.
func (e *endpoint) register(addr netip.Addr) (uint16, *waiter, []byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.waiters) >= maxInFlight {
		return 0, nil, nil, fmt.Errorf("%d pings already in flight", len(e.waiters))
	}
	for {
		e.seq++
		if _, busy := e.waiters[e.seq]; !busy {
			break
		}
	}
	// The payload carries this pinger's token and a nonce that never
	// repeats, so a late reply to an earlier request that had the same
	// sequence number cannot be taken for this one.
	e.nonce++
	payload := make([]byte, 16)
	copy(payload, e.token[:])
	binary.BigEndian.PutUint64(payload[8:], e.nonce)
	msg := icmp.Message{Type: e.request, Body: &icmp.Echo{ID: e.id, Seq: int(e.seq), Data: payload}}
	b, err := msg.Marshal(nil) // the kernel computes the ICMPv6 checksum
	if err != nil {
		return 0, nil, nil, fmt.Errorf("marshal echo request: %w", err)
	}
	w := &waiter{addr: addr.WithZone(""), payload: payload, reply: make(chan time.Time, 1)}
	e.waiters[e.seq] = w
	return e.seq, w, b, nil
}

func (e *endpoint) unregister(seq uint16, w *waiter) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.waiters[seq] == w {
		delete(e.waiters, seq)
	}
}

func (e *endpoint) ping(ctx context.Context, addr netip.Addr, timeout time.Duration, closing <-chan struct{}) (time.Duration, error) {
	seq, w, b, err := e.register(addr)
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", addr, err)
	}
	defer e.unregister(seq, w)
	var dst net.Addr = &net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}
	if e.kind == SocketDatagram {
		dst = &net.UDPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	sent := time.Now()
	if _, err := e.conn.WriteTo(b, dst); err != nil {
		return 0, fmt.Errorf("ping %s: send: %w", addr, err)
	}
	select {
	case at := <-w.reply:
		return at.Sub(sent), nil
	case <-timer.C:
		return 0, fmt.Errorf("ping %s: %w within %s", addr, ErrTimeout, timeout)
	case <-ctx.Done():
		return 0, fmt.Errorf("ping %s: %w", addr, ctx.Err())
	case <-closing:
		return 0, fmt.Errorf("ping %s: %w", addr, ErrClosed)
	}
}

func (e *endpoint) read() {
	defer close(e.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := e.conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-e.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A pending socket error (an ICMP error queued for the
			// socket) is reported once; pause so a persistent one
			// cannot spin the reader.
			e.log.Debug("icmp read failed", "err", err)
			select {
			case <-e.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		e.dispatch(buf[:n], from, time.Now())
	}
}

// dispatch hands a reply to the ping it answers, if any. Everything else
// (requests we see on loopback, other processes' replies, duplicates,
// replies that came after their ping gave up) is dropped.
func (e *endpoint) dispatch(b []byte, from net.Addr, at time.Time) {
	m, err := icmp.ParseMessage(e.proto, b)
	if err != nil || m.Type != e.reply {
		return
	}
	echo, ok := m.Body.(*icmp.Echo)
	if !ok || (e.kind == SocketRaw && echo.ID != e.id) {
		return
	}
	peer, ok := addrOf(from)
	if !ok {
		return
	}
	seq := uint16(echo.Seq)
	e.mu.Lock()
	w := e.waiters[seq]
	if w == nil || w.addr != peer || !bytes.Equal(w.payload, echo.Data) {
		e.mu.Unlock()
		return
	}
	delete(e.waiters, seq)
	e.mu.Unlock()
	w.reply <- at
}

func addrOf(a net.Addr) (netip.Addr, bool) {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return netip.Addr{}, false
	}
	addr, ok := netip.AddrFromSlice(ip)
	return addr.Unmap(), ok
}
