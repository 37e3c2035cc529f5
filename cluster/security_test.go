package cluster

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/internal/pki"
	"github.com/hashicorp/raft"
)

// testDirectorName stands in for clusterd's director certificate name.
const testDirectorName = "director.directorate"

// testCA is a cluster CA for tests that run raft over real TLS.
type testCA struct {
	ca   *pki.CA
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	ca, _, err := pki.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &testCA{ca: ca, pool: pool}
}

func (c *testCA) cert(t testing.TB, id string) tls.Certificate {
	t.Helper()
	iss, err := c.ca.Issue(pki.Request{CommonName: id, DNSNames: []string{testDirectorName}, Server: true, Client: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// raftTLSFor returns the raft TLS option for director id: its certificate
// from c, trusting c alone, as clusterd configures it.
func (c *testCA) raftTLSFor(t testing.TB, id string) Option {
	cert := c.cert(t, id)
	return WithRaftTLS(
		&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: c.pool},
		&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
			RootCAs: c.pool, ServerName: testDirectorName})
}

func gossipKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func secureConfig(base string, i int, join ...string) Config {
	id := fmt.Sprintf("d%d", i)
	return Config{
		NodeID:          id,
		DataDir:         filepath.Join(base, id),
		RaftBind:        "127.0.0.1:0",
		GossipBind:      "127.0.0.1:0",
		APIAddress:      fmt.Sprintf("127.0.0.1:%d", 18180+i),
		Join:            join,
		BootstrapExpect: 3,
		Timing:          testTiming(),
		Version:         "test",
	}
}

// startSecureTrio starts three directors with raft over mutual TLS and
// encrypted gossip, and waits until they form one cluster.
func startSecureTrio(t *testing.T, logs *logSink, ca *testCA, ring GossipKeyring, tune func(*Config)) []*realNode {
	t.Helper()
	base := t.TempDir()
	var nodes []*realNode
	for i := 1; i <= 3; i++ {
		var join []string
		if i > 1 {
			join = []string{nodes[0].n.GossipAddress()}
		}
		cfg := secureConfig(base, i, join...)
		if tune != nil {
			tune(&cfg)
		}
		nodes = append(nodes, startReal(t, logs, cfg, ca.raftTLSFor(t, cfg.NodeID), WithGossipKeyring(ring)))
	}
	eventually(t, 30*time.Second, "one secure cluster of three", func() error {
		leader := leaderOf(nodes)
		if leader == nil {
			return errors.New("no leader")
		}
		ms, err := leader.n.Members()
		if err != nil {
			return err
		}
		voters := 0
		for _, m := range ms {
			if m.Suffrage == "Voter" && m.Gossip == GossipAlive {
				voters++
			}
		}
		if voters != 3 {
			return fmt.Errorf("members %+v", ms)
		}
		return nil
	})
	return nodes
}

func leaderOf(nodes []*realNode) *realNode {
	for _, rn := range nodes {
		if rn.n != nil && rn.n.IsLeader() {
			return rn
		}
	}
	return nil
}

// TestRaftOverMutualTLS runs a cluster over mutual TLS and shows that
// nobody without a certificate from the cluster CA gets raft to read a
// byte, and that a director with another CA's certificate never joins.
func TestRaftOverMutualTLS(t *testing.T) {
	logs := newLogSink(t)
	ca := newTestCA(t, "cluster CA")
	ring := GossipKeyring{Primary: gossipKey(1), Keys: [][]byte{gossipKey(1)}}
	nodes := startSecureTrio(t, logs, ca, ring, nil)
	leader := leaderOf(nodes)
	idx, err := leader.n.Propose(ctxT(t, 10*time.Second), addVIP(1))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "replicated over TLS", func() error {
		for _, rn := range nodes {
			if rn.f.Index() < idx {
				return fmt.Errorf("%s at %d", rn.cfg.NodeID, rn.f.Index())
			}
		}
		return nil
	})

	// Strangers dial raft: one without a certificate, one with a
	// certificate from another CA. TLS 1.3 clients finish their side of
	// the handshake before the server checks them, so the refusal shows
	// on the first read.
	other := newTestCA(t, "someone else's CA")
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no certificate", nil},
		{"another CA", []tls.Certificate{other.cert(t, "intruder")}},
	} {
		conn, err := tls.Dial("tcp", leader.n.RaftAddress(), &tls.Config{
			Certificates: tc.certs, RootCAs: ca.pool, ServerName: testDirectorName, MinVersion: tls.VersionTLS13})
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Fatalf("%s: raft answered", tc.name)
		}
		local := conn.LocalAddr().String()
		eventually(t, 10*time.Second, tc.name+": refusal logged", func() error {
			if logs.count("refused raft connection", "remote="+local, "reason=") == 0 {
				return errors.New("no log line names the remote address and the reason")
			}
			return nil
		})
	}

	// A director with the right gossip key but another CA's certificate
	// is seen by gossip, yet adding it to raft is refused before it
	// enters the configuration.
	cfg := secureConfig(t.TempDir(), 4, nodes[0].n.GossipAddress())
	cfg.BootstrapExpect = 0
	intruder := startReal(t, logs, cfg, other.raftTLSFor(t, "d4"), WithGossipKeyring(ring))
	eventually(t, 10*time.Second, "intruder seen by gossip", func() error {
		if _, ok := leader.n.gossipMember("d4"); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	before := leader.n.AppliedIndex()
	err = leader.n.AddVoter(ctxT(t, 10*time.Second), "d4", "")
	if !errors.Is(err, ErrUntrustedPeer) {
		t.Fatalf("adding a director from another CA: got %v, want ErrUntrustedPeer", err)
	}
	ms, err := leader.n.Members()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == "d4" && m.Suffrage != "" {
			t.Fatalf("the intruder entered the raft configuration: %+v", m)
		}
	}
	if got := leader.n.AppliedIndex(); got != before {
		t.Fatalf("the refused addition changed the log: index %d -> %d", before, got)
	}
	if intruder.f.Index() != 0 {
		t.Fatalf("the intruder received state up to index %d", intruder.f.Index())
	}
	if logs.count("refused raft peer", "reason=") == 0 {
		t.Fatal("the refused peer was not logged")
	}
}

// TestGossipKeyRotationWithoutFlap rotates the gossip key on a live
// three-director memberlist cluster: install, use, remove. No member is
// ever suspected dead, and afterwards only the new key gets a director
// into gossip.
func TestGossipKeyRotationWithoutFlap(t *testing.T) {
	// Not parallel: the claim is that the rotation suspects nobody, which
	// needs a machine not also busy with other clusters' elections.
	logs := newLogSink(t)
	ca := newTestCA(t, "cluster CA")
	k1, k2 := gossipKey(1), gossipKey(2)
	// Probes slow enough that two busy cores running -race do not make
	// memberlist suspect anyone by themselves: a suspicion during the
	// rotation must then be the rotation's fault.
	slower := func(c *Config) {
		c.Timing.GossipProbeInterval = 200 * time.Millisecond
		c.Timing.GossipProbeTimeout = 100 * time.Millisecond
	}
	nodes := startSecureTrio(t, logs, ca, GossipKeyring{Primary: k1, Keys: [][]byte{k1}}, slower)
	waitProbes(t, nodes, 5)
	suspectsBefore := logs.count("Suspect")

	announces := func(want string) func() error {
		return func() error {
			for _, rn := range nodes {
				for _, m := range rn.n.GossipMembers() {
					if m.Meta.Keys != want {
						return fmt.Errorf("%s sees %s announce keys %q, want %q", rn.cfg.NodeID, m.Name, m.Meta.Keys, want)
					}
				}
			}
			return nil
		}
	}
	fp1, fp2 := fsm.KeyFingerprint(k1), fsm.KeyFingerprint(k2)
	steps := []struct {
		name string
		ring GossipKeyring
		want string
	}{
		{"install", GossipKeyring{Primary: k1, Keys: [][]byte{k1, k2}}, fp1 + "," + fp2},
		{"use", GossipKeyring{Primary: k2, Keys: [][]byte{k1, k2}}, fp2 + "," + fp1},
		{"remove", GossipKeyring{Primary: k2, Keys: [][]byte{k2}}, fp2},
	}
	for _, st := range steps {
		// Directors apply a committed change one after another, as they
		// would on commit.
		for _, rn := range nodes {
			if err := rn.n.SetGossipKeyring(st.ring); err != nil {
				t.Fatalf("%s on %s: %v", st.name, rn.cfg.NodeID, err)
			}
		}
		eventually(t, 10*time.Second, st.name+" announced everywhere", announces(st.want))
		// Let several probe rounds run on the new keyring: a member that
		// could not decrypt would be suspected within them.
		waitProbes(t, nodes, 10)
	}
	if n := logs.count("gossip member declared dead"); n > 0 {
		t.Fatalf("the rotation flapped membership: %d members declared dead", n)
	}
	if n := logs.count("Suspect") - suspectsBefore; n > 0 {
		t.Fatalf("the rotation made memberlist suspect a member %d times", n)
	}

	// A director that still has only the old key cannot join.
	base := t.TempDir()
	stale := secureConfig(base, 5, nodes[0].n.GossipAddress())
	slower(&stale)
	stale.BootstrapExpect = 0
	old := startReal(t, logs, stale, ca.raftTLSFor(t, "d5"), WithGossipKeyring(GossipKeyring{Primary: k1, Keys: [][]byte{k1}}))
	fresh := secureConfig(base, 6, nodes[0].n.GossipAddress())
	slower(&fresh)
	fresh.BootstrapExpect = 0
	startReal(t, logs, fresh, ca.raftTLSFor(t, "d6"), WithGossipKeyring(GossipKeyring{Primary: k2, Keys: [][]byte{k2}}))
	eventually(t, 10*time.Second, "a director with the new key joins gossip", func() error {
		if _, ok := nodes[0].n.gossipMember("d6"); !ok {
			return errors.New("d6 not seen")
		}
		return nil
	})
	if _, ok := nodes[0].n.gossipMember("d5"); ok {
		t.Fatal("a director with only the removed key joined gossip")
	}
	if ms := old.n.GossipMembers(); len(ms) != 1 {
		t.Fatalf("the stale director sees %d members", len(ms))
	}
}

// waitProbes waits until every node's memberlist has run n more probe
// intervals, measured by its clock rather than a fixed sleep so that a
// loaded machine gets more time, not less.
func waitProbes(t *testing.T, nodes []*realNode, n int) {
	t.Helper()
	d := time.Duration(n) * nodes[0].n.Timing().GossipProbeInterval
	deadline := time.Now().Add(d)
	eventually(t, d+10*time.Second, "probe rounds", func() error {
		if time.Now().Before(deadline) {
			return errors.New("waiting")
		}
		return nil
	})
}

func TestGossipKeyringRefusesBadKeys(t *testing.T) {
	for _, k := range []GossipKeyring{
		{},
		{Primary: gossipKey(1), Keys: [][]byte{gossipKey(2)}},
		{Primary: []byte("short"), Keys: [][]byte{[]byte("short")}},
	} {
		if err := k.Validate(); err == nil {
			t.Errorf("%v: accepted", k.Fingerprints())
		}
	}
	if !strings.Contains(GossipKeyring{Primary: gossipKey(1), Keys: [][]byte{gossipKey(2), gossipKey(1)}}.Fingerprints()[0], fsm.KeyFingerprint(gossipKey(1))) {
		t.Error("the primary's fingerprint is not listed first")
	}
}

// TestTLSStreamLayerSilentClient: a client that connects and never speaks
// holds up neither other peers' connections nor Close.
func TestTLSStreamLayerSilentClient(t *testing.T) {
	s, peer, _ := streamPair(t)
	silent, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := s.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	conn, err := peer.Dial(raft.ServerAddress(s.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The handshake completes on the server side once the client writes.
	if _, err := conn.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a silent client held up a director's connection")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the silent client's handshake")
	}
	if _, err := s.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// TestTLSStreamLayerRevalidate: after a CA change a director re-checks its
// open raft connections, and those whose peer its check refuses are
// closed at both ends; the others stay.
func TestTLSStreamLayerRevalidate(t *testing.T) {
	s, peer, logs := streamPair(t)
	t.Cleanup(func() { _ = s.Close() })

	// Two connections from d2, each written to so the handshake completes.
	var dialled, accepted []net.Conn
	for range 2 {
		c, err := peer.Dial(raft.ServerAddress(s.Addr().String()), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		a, err := s.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		dialled, accepted = append(dialled, c), append(accepted, a)
	}

	if n := s.Revalidate(func(tls.ConnectionState) error { return nil }); n != 0 {
		t.Fatalf("a check that accepts everything closed %d connections", n)
	}
	// Refuse d2's certificate by its serial, as a CA without it would.
	refused := accepted[0].(*trackedConn).ConnectionState().PeerCertificates[0].SerialNumber
	if refused.Cmp(accepted[1].(*trackedConn).ConnectionState().PeerCertificates[0].SerialNumber) != 0 {
		t.Fatal("the two connections came from different certificates")
	}
	n := s.Revalidate(func(cs tls.ConnectionState) error {
		if cs.PeerCertificates[0].SerialNumber.Cmp(refused) == 0 {
			return errors.New("certificate signed by unknown authority")
		}
		return nil
	})
	if n != 2 {
		t.Fatalf("closed %d connections, want both of d2's", n)
	}
	for i, c := range dialled {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("d2's connection %d still open after d1 closed it: %v", i, err)
		}
	}
	if n := s.Revalidate(func(tls.ConnectionState) error { return errors.New("no") }); n != 0 {
		t.Fatalf("%d connections left after closing them all", n)
	}
	if logs.count("closing a raft connection", "unknown authority") != 2 {
		t.Fatal("the closed connections were not logged with the reason")
	}
}

// TestTLSStreamLayerChecksConnectionsMadeAfterRevalidate: a connection
// whose handshake ran against the old CA but completes after Revalidate
// meets the new check when it is handed to raft, on either side.
func TestTLSStreamLayerChecksConnectionsMadeAfterRevalidate(t *testing.T) {
	s, peer, logs := streamPair(t)
	t.Cleanup(func() { _ = s.Close() })
	refuse := func(tls.ConnectionState) error { return errors.New("certificate signed by unknown authority") }

	// The accepting side: d1 has revalidated, so d2's new connection is
	// closed instead of reaching raft.
	s.Revalidate(refuse)
	c, err := peer.Dial(raft.ServerAddress(s.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte{1})
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("d1 kept a connection its latest check refuses: %v", err)
	}
	logs.wait(t, 5*time.Second, "refused raft connection", "no longer trusted")

	// The dialling side: d2 has revalidated, so its dial fails.
	peer.Revalidate(refuse)
	if _, err := peer.Dial(raft.ServerAddress(s.Addr().String()), 5*time.Second); err == nil || !strings.Contains(err.Error(), "no longer trusted") {
		t.Fatalf("dial after a refusing revalidation: %v", err)
	}
	s.mu.Lock()
	n := len(s.live)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d refused connections left tracked", n)
	}
}

// streamPair is d1's listening TLS stream layer and d2's dialling one,
// both with certificates of one CA.
func streamPair(t *testing.T) (s, peer *tlsStreamLayer, logs *logSink) {
	t.Helper()
	logs = newLogSink(t)
	ca := newTestCA(t, "cluster CA")
	o := &options{}
	ca.raftTLSFor(t, "d1")(o)
	s, err := newTLSStreamLayer("127.0.0.1:0", nil, o.raftTLS.server, o.raftTLS.client, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	co := &options{}
	ca.raftTLSFor(t, "d2")(co)
	return s, &tlsStreamLayer{client: co.raftTLS.client, log: logs.logger()}, logs
}
