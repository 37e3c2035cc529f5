package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

// tlsHandshakeTimeout bounds a raft peer's TLS handshake, so a client that
// connects and says nothing cannot hold a goroutine.
const tlsHandshakeTimeout = 10 * time.Second

// tlsStreamLayer is a raft.StreamLayer that speaks mutual TLS. Accept
// returns only connections whose handshake completed, i.e. whose peer
// presented a certificate the server configuration verified: raft never
// reads a byte from anyone else. Refusals are logged with the remote
// address and the reason, because a director that cannot join is
// otherwise a silent mystery.
type tlsStreamLayer struct {
	ln     net.Listener
	adv    net.Addr
	server *tls.Config
	client *tls.Config
	log    *slog.Logger

	conns chan net.Conn
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup

	// live holds every connection handed to raft, accepted or dialled,
	// until it is closed, so Revalidate can cut those whose peer no
	// longer verifies. verify is the last check Revalidate was given:
	// a connection whose handshake was under way during Revalidate,
	// checked against the CA of its start, meets it when it is tracked.
	mu     sync.Mutex
	live   map[*trackedConn]struct{}
	verify func(tls.ConnectionState) error
}

// trackedConn is a raft connection that leaves its layer's live set when
// closed.
type trackedConn struct {
	*tls.Conn
	layer *tlsStreamLayer
	// accepted is true for a connection a peer dialled to us.
	accepted bool
}

func (c *trackedConn) Close() error {
	c.layer.mu.Lock()
	delete(c.layer.live, c)
	c.layer.mu.Unlock()
	return c.Conn.Close()
}

// track hands tc to raft's side of the layer, or refuses it (closed)
// when the latest Revalidate check rejects its peer.
func (s *tlsStreamLayer) track(tc *tls.Conn, accepted bool) (net.Conn, error) {
	c := &trackedConn{Conn: tc, layer: s, accepted: accepted}
	s.mu.Lock()
	if s.live == nil {
		s.live = make(map[*trackedConn]struct{})
	}
	s.live[c] = struct{}{}
	verify := s.verify
	s.mu.Unlock()
	if verify != nil {
		if err := verify(tc.ConnectionState()); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("peer certificate no longer trusted: %w", err)
		}
	}
	return c, nil
}

// Revalidate checks the peer of every open raft connection with verify
// and closes those it refuses, returning how many. A director calls it
// after reloading its CA, so a peer whose certificate the new CA does not
// cover (or that has expired) loses the connections it already had, not
// only the next ones; raft redials its peers at once.
func (s *tlsStreamLayer) Revalidate(verify func(tls.ConnectionState) error) int {
	s.mu.Lock()
	s.verify = verify
	conns := make([]*trackedConn, 0, len(s.live))
	for c := range s.live {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	closed := 0
	for _, c := range conns {
		if err := verify(c.ConnectionState()); err != nil {
			s.log.Warn("closing a raft connection: its peer's certificate no longer verifies",
				"remote", c.RemoteAddr().String(), "accepted", c.accepted, "reason", err.Error())
			closed++
			// A close can wait seconds on a peer that stopped
			// reading; do them together.
			wg.Go(func() { _ = c.Close() })
		}
	}
	wg.Wait()
	return closed
}

// newTLSStreamLayer listens on bind. adv, when not nil, is the address
// announced to peers; otherwise the listener's address is.
func newTLSStreamLayer(bind string, adv net.Addr, server, client *tls.Config, log *slog.Logger) (*tlsStreamLayer, error) {
	if server == nil || client == nil {
		return nil, errors.New("raft TLS: both a server and a client configuration are required")
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listener on %s: %w", bind, err)
	}
	if adv == nil {
		adv = ln.Addr()
		if tcp, ok := adv.(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("raft listener on %s: %w", bind, errNotAdvertisable)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &tlsStreamLayer{ln: ln, adv: adv, server: server, client: client, log: log.With("component", "raft-tls"),
		conns: make(chan net.Conn), ctx: ctx, stop: stop}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// errNotAdvertisable mirrors raft's own check on its TCP transport.
var errNotAdvertisable = errors.New("local bind address is not advertisable: set raft_advertise")

func (s *tlsStreamLayer) acceptLoop() {
	defer s.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept raft connection", "err", err)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		s.wg.Add(1)
		go s.handshake(raw)
	}
}

func (s *tlsStreamLayer) handshake(raw net.Conn) {
	defer s.wg.Done()
	tc := tls.Server(raw, s.server)
	ctx, cancel := context.WithTimeout(s.ctx, tlsHandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn("refused raft connection: TLS handshake failed", "remote", raw.RemoteAddr().String(), "reason", err.Error())
		}
		tc.Close()
		return
	}
	c, err := s.track(tc, true)
	if err != nil {
		s.log.Warn("refused raft connection", "remote", raw.RemoteAddr().String(), "reason", err.Error())
		return
	}
	select {
	case s.conns <- c:
	case <-s.ctx.Done():
		c.Close()
	}
}

// Accept implements net.Listener for raft's NetworkTransport.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting and waits for handshakes in flight.
func (s *tlsStreamLayer) Close() error {
	s.stop()
	err := s.ln.Close()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Addr is the address announced to peers.
func (s *tlsStreamLayer) Addr() net.Addr { return s.adv }

// Dial connects to a raft peer and completes the handshake within
// timeout. A peer whose certificate the cluster CA did not issue is
// refused here and logged.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	tc, err := tls.DialWithDialer(d, "tcp", string(address), s.client)
	if err != nil {
		var certErr *tls.CertificateVerificationError
		if errors.As(err, &certErr) {
			s.log.Warn("refused raft peer: its certificate does not verify", "remote", string(address), "reason", err.Error())
		}
		return nil, fmt.Errorf("dial raft peer %s over TLS: %w", address, err)
	}
	c, err := s.track(tc, false)
	if err != nil {
		s.log.Warn("refused raft peer", "remote", string(address), "reason", err.Error())
		return nil, fmt.Errorf("dial raft peer %s over TLS: %w", address, err)
	}
	return c, nil
}

// peerCheckTimeout bounds checkPeerCertificate's handshake.
const peerCheckTimeout = 5 * time.Second

// RevalidatePeers closes every raft connection whose peer verify refuses,
// and returns how many it closed (see tlsStreamLayer.Revalidate). Without
// TLS there is nothing to check.
func (n *Node) RevalidatePeers(verify func(tls.ConnectionState) error) int {
	if n.stream == nil {
		return 0
	}
	return n.stream.Revalidate(verify)
}

// checkPeerCertificate dials addr over raft's TLS and reports whether the
// peer's certificate fails verification, so a server from another CA is
// refused before it enters the raft configuration, even as a non-voter.
// Any other failure (the peer is down) is left to the caller's contact
// checks and returns nil. Without TLS there is nothing to check.
func (n *Node) checkPeerCertificate(addr string) error {
	if n.stream == nil {
		return nil
	}
	conn, err := n.stream.Dial(raft.ServerAddress(addr), peerCheckTimeout)
	if err != nil {
		var certErr *tls.CertificateVerificationError
		if errors.As(err, &certErr) {
			return err
		}
		return nil
	}
	return conn.Close()
}
