package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Gossip states of a member, as `clusterctl member ls` shows them.
// memberlist's public API does not expose its internal "suspect" state: a
// suspected director stays alive until it is declared dead.
const (
	GossipAlive   = "alive"
	GossipDead    = "dead"
	GossipLeft    = "left"
	GossipUnknown = "unknown"
)

// NodeMeta is what each director announces about itself through gossip.
// Encoded as JSON it must fit memberlist's 512-byte limit.
type NodeMeta struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft"`
	APIAddr  string `json:"api,omitempty"`
	Version  string `json:"version,omitempty"`
	// BootstrapExpect is the node's bootstrap_expect; nodes bootstrap only
	// when every member agrees on it.
	BootstrapExpect int `json:"expect,omitempty"`
	// HasState says the node already has a raft configuration or log, so
	// a cluster exists and nobody may bootstrap a new one.
	HasState bool `json:"has_state,omitempty"`
	// Leaving is set just before a graceful leave, so others report the
	// node as left rather than dead.
	Leaving bool `json:"leaving,omitempty"`
	// PingScore and PingMax are the director's ping-node score: how many of
	// its ping nodes and groups it reaches, out of how many it probes. A
	// PingMax of 0 means no score is known (no ping nodes, or no result
	// yet). Set with Node.SetPingScore.
	PingScore int `json:"ping,omitempty"`
	PingMax   int `json:"ping_max,omitempty"`
	// Warning, when not empty, says the director has a problem worth an
	// operator's attention, such as a late peer (Heartbeat's warntime).
	// It is cut to fit the metadata limit.
	Warning string `json:"warn,omitempty"`
	// Failback fingerprints the director's auto_failback settings (empty
	// when auto_failback is off). A leader fails back only to a director
	// that announces the same fingerprint, so two directors with
	// conflicting preferred lists cannot hand leadership back and forth.
	Failback string `json:"failback,omitempty"`
	// Keys lists the fingerprints of the gossip keys this director has
	// installed, comma-separated, its primary first; empty when gossip is
	// not encrypted. `clusterctl keyring ls` shows it per member.
	Keys string `json:"keys,omitempty"`
}

func (m NodeMeta) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node metadata is %d bytes, more than gossip's limit of %d: shorten node_id or the addresses", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// maxWarningLen caps NodeMeta.Warning, in bytes, so that the warning
// leaves room in the 512-byte metadata for the addresses.
const maxWarningLen = 200

// fit returns m with its Warning shortened, at a character boundary and
// marked with "…", until m encodes within the metadata limit. It fails
// only when m does not fit even without a warning.
func (m NodeMeta) fit() (NodeMeta, error) {
	if len(m.Warning) > maxWarningLen {
		m.Warning = cutWarning(m.Warning, maxWarningLen)
	}
	for {
		_, err := m.encode()
		if err == nil || m.Warning == "" {
			return m, err
		}
		m.Warning = cutWarning(m.Warning, len(m.Warning)*3/4)
	}
}

// cutWarning shortens w to at most limit bytes, ending in "…", without
// splitting a UTF-8 sequence.
func cutWarning(w string, limit int) string {
	const ellipsis = "…"
	if len(w) <= limit {
		return w
	}
	keep := limit - len(ellipsis)
	if keep <= 0 {
		return ""
	}
	for keep > 0 && !utf8.RuneStart(w[keep]) {
		keep--
	}
	return w[:keep] + ellipsis
}

// GossipMember is one node as gossip sees it.
type GossipMember struct {
	Name  string
	Addr  string // gossip address, host:port
	State string // GossipAlive, GossipDead or GossipLeft
	Meta  NodeMeta
	// MetaErr is set when the node's metadata could not be parsed, e.g.
	// a node that is not a Directorate director.
	MetaErr string
}

// Gossip is the membership layer: memberlist in production, a fake in
// tests.
type Gossip interface {
	// Members returns every node seen since start, this one included,
	// including nodes that died or left.
	Members() []GossipMember
	// SetMeta replaces this node's metadata and announces it.
	SetMeta(NodeMeta) error
	// LocalAddr is this node's gossip address.
	LocalAddr() string
	// Leave announces a graceful departure, waiting at most timeout.
	Leave(timeout time.Duration) error
	// Shutdown stops gossip.
	Shutdown() error
}

// GossipEvents is implemented by a Gossip that can tell when its member
// list or a member's metadata changed. The leader then reconciles raft
// membership at once instead of at its next periodic pass.
type GossipEvents interface {
	// Changed delivers a value after one or more changes; changes that
	// happen while a value is pending are merged into it.
	Changed() <-chan struct{}
}

// memberlistGossip is the production Gossip.
//
// It keeps its own copy of every member, updated from memberlist's event
// callbacks (which run under memberlist's node lock), because the *Node
// values memberlist.Members returns are shared with memberlist's goroutines
// and reading them races with updates.
type memberlistGossip struct {
	ml  *memberlist.Memberlist
	log *slog.Logger

	mu      sync.Mutex
	meta    NodeMeta
	encoded []byte
	members map[string]GossipMember
	changed chan struct{}
	// keyring is memberlist's own, changed in place; nil when gossip is
	// not encrypted.
	keyring *memberlist.Keyring
	// data receives user messages and push/pull state (health views).
	data dataDelegate

	cancel context.CancelFunc
}

var (
	_ GossipEvents = (*memberlistGossip)(nil)
	_ dataGossip   = (*memberlistGossip)(nil)
)

// gossipOptions are the inputs of memberlistConfig.
type gossipOptions struct {
	name      string
	bind      string
	advertise string
	timing    Timing
	// keyring encrypts gossip; nil leaves it plaintext.
	keyring *GossipKeyring
	// data, when set, receives user data from the start, so the first
	// push/pull of a join already carries it.
	data dataDelegate
}

// memberlistConfig builds the memberlist configuration. It is the one place
// where memberlist is configured.
func memberlistConfig(o gossipOptions, log *slog.Logger) (*memberlist.Config, error) {
	c := memberlist.DefaultLANConfig()
	c.Name = o.name
	host, port, err := splitHostPort(o.bind)
	if err != nil {
		return nil, fmt.Errorf("gossip_bind: %w", err)
	}
	c.BindAddr, c.BindPort = host, port
	c.AdvertisePort = port
	if o.advertise != "" {
		host, port, err := splitHostPort(o.advertise)
		if err != nil {
			return nil, fmt.Errorf("gossip_advertise: %w", err)
		}
		c.AdvertiseAddr, c.AdvertisePort = host, port
	}
	t := o.timing
	c.ProbeInterval = t.GossipProbeInterval
	c.ProbeTimeout = t.GossipProbeTimeout
	c.SuspicionMult = t.GossipSuspicionMult
	c.SuspicionMaxTimeoutMult = t.GossipSuspicionMaxTimeoutMult
	c.GossipInterval = t.GossipInterval
	c.PushPullInterval = t.GossipPushPullInterval
	// Dead directors are remembered as long as a push/pull cycle, which is
	// what memberlist's LAN default ties it to as well.
	c.GossipToTheDeadTime = t.GossipPushPullInterval
	c.Logger = newStdLogger(log)
	c.LogOutput = nil
	if o.keyring != nil {
		ring, err := memberlistKeyring(*o.keyring)
		if err != nil {
			return nil, err
		}
		c.Keyring = ring
		// Both are memberlist's defaults; stated because a member that
		// accepted plaintext could be fed forged membership.
		c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	}
	return c, nil
}

func splitHostPort(hp string) (string, int, error) {
	host, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %w", hp, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port %q is not a number in 0..65535", hp, p)
	}
	return host, port, nil
}

// startMemberlist creates the memberlist and starts joining the given
// addresses in the background, retrying with backoff until one answers or
// Shutdown is called.
func startMemberlist(o gossipOptions, meta NodeMeta, join []string, log *slog.Logger) (*memberlistGossip, error) {
	log = log.With("component", "memberlist")
	g := &memberlistGossip{log: log, members: map[string]GossipMember{}, changed: make(chan struct{}, 1), data: o.data}
	if err := g.setMetaLocked(meta); err != nil {
		return nil, err
	}
	c, err := memberlistConfig(o, log)
	if err != nil {
		return nil, err
	}
	c.Delegate = g
	c.Events = g
	g.keyring = c.Keyring
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", o.bind, err)
	}
	g.ml = ml
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	self := ml.LocalNode().Address()
	peers := slices.DeleteFunc(slices.Clone(join), func(a string) bool { return a == self })
	go g.joinLoop(ctx, peers, o.timing.GossipProbeInterval)
	return g, nil
}

func (g *memberlistGossip) joinLoop(ctx context.Context, peers []string, base time.Duration) {
	if len(peers) == 0 {
		return
	}
	backoff := base
	const maxBackoff = 10 * time.Second
	for attempt := 1; ctx.Err() == nil; attempt++ {
		n, err := g.ml.Join(peers)
		if ctx.Err() != nil {
			return
		}
		if n > 0 {
			g.log.Info("joined gossip", "contacted", n, "join", peers, "attempt", attempt)
			return
		}
		g.log.Warn("cannot join gossip yet; retrying", "join", peers, "attempt", attempt, "retry_in", backoff, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (g *memberlistGossip) LocalAddr() string { return g.ml.LocalNode().Address() }

func (g *memberlistGossip) SetMeta(m NodeMeta) error {
	g.mu.Lock()
	err := g.setMetaLocked(m)
	g.mu.Unlock()
	if err != nil {
		return err
	}
	// UpdateNode calls NodeMeta, which takes g.mu, so it runs unlocked.
	if err := g.ml.UpdateNode(5 * time.Second); err != nil {
		return fmt.Errorf("announce node metadata: %w", err)
	}
	return nil
}

func (g *memberlistGossip) setMetaLocked(m NodeMeta) error {
	b, err := m.encode()
	if err != nil {
		return err
	}
	g.meta, g.encoded = m, b
	return nil
}

func (g *memberlistGossip) Members() []GossipMember {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]GossipMember, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b GossipMember) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// toGossipMember copies what it needs from n; it is called only from
// memberlist's event callbacks, under memberlist's lock.
func toGossipMember(n *memberlist.Node, state string) GossipMember {
	m := GossipMember{Name: n.Name, Addr: n.Address(), State: state}
	if err := json.Unmarshal(n.Meta, &m.Meta); err != nil {
		m.MetaErr = err.Error()
	}
	return m
}

// Leave first announces the intent through metadata, because memberlist's
// events do not tell a member that left from one that died.
func (g *memberlistGossip) Leave(timeout time.Duration) error {
	g.cancel()
	g.mu.Lock()
	m := g.meta
	g.mu.Unlock()
	m.Leaving = true
	if err := g.SetMeta(m); err != nil {
		g.log.Warn("cannot announce leaving", "error", err)
	}
	if err := g.ml.Leave(timeout); err != nil {
		return fmt.Errorf("leave gossip: %w", err)
	}
	return nil
}

func (g *memberlistGossip) Shutdown() error {
	// The join loop is not waited for: a join attempt in flight can take
	// memberlist's TCP timeout to fail, and it stops at the next check.
	g.cancel()
	if err := g.ml.Shutdown(); err != nil {
		return fmt.Errorf("stop gossip: %w", err)
	}
	return nil
}

// Changed implements GossipEvents.
func (g *memberlistGossip) Changed() <-chan struct{} { return g.changed }

func (g *memberlistGossip) notifyChanged() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// memberlist.Delegate. NodeMeta carries the metadata; user messages,
// broadcasts and push/pull state carry health views (dataDelegate).

func (g *memberlistGossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	// encode() already refused metadata over the limit.
	return g.encoded
}

func (g *memberlistGossip) dataDelegate() dataDelegate {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.data
}

func (g *memberlistGossip) NotifyMsg(b []byte) {
	if d := g.dataDelegate(); d != nil {
		d.NotifyMsg(b)
	}
}

func (g *memberlistGossip) GetBroadcasts(overhead, limit int) [][]byte {
	if d := g.dataDelegate(); d != nil {
		return d.GetBroadcasts(overhead, limit)
	}
	return nil
}

func (g *memberlistGossip) LocalState(join bool) []byte {
	if d := g.dataDelegate(); d != nil {
		return d.LocalState(join)
	}
	return nil
}

func (g *memberlistGossip) MergeRemoteState(buf []byte, join bool) {
	if d := g.dataDelegate(); d != nil {
		d.MergeRemoteState(buf, join)
	}
}

// SetDataDelegate implements dataGossip.
func (g *memberlistGossip) SetDataDelegate(d dataDelegate) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.data = d
}

// NumMembers implements dataGossip.
func (g *memberlistGossip) NumMembers() int { return g.ml.NumMembers() }

// SendToAll implements dataGossip. It addresses members from this
// gossip's own copy of the member list, because the *Node values of
// memberlist.Members are shared with memberlist's goroutines.
func (g *memberlistGossip) SendToAll(msg []byte) error {
	self := g.ml.LocalNode().Name
	var errs []error
	for _, m := range g.Members() {
		if m.Name == self || m.State != GossipAlive {
			continue
		}
		host, port, err := splitHostPort(m.Addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("send to %s: %w", m.Name, err))
			continue
		}
		to := &memberlist.Node{Name: m.Name, Addr: net.ParseIP(host), Port: uint16(port)}
		if err := g.ml.SendReliable(to, msg); err != nil {
			errs = append(errs, fmt.Errorf("send to %s: %w", m.Name, err))
		}
	}
	return errors.Join(errs...)
}

// memberlist.EventDelegate.

func (g *memberlistGossip) NotifyJoin(n *memberlist.Node) {
	m := toGossipMember(n, GossipAlive)
	g.mu.Lock()
	g.members[m.Name] = m
	g.mu.Unlock()
	g.notifyChanged()
	g.log.Info("gossip member joined", "member", m.Name, "addr", m.Addr)
}

func (g *memberlistGossip) NotifyUpdate(n *memberlist.Node) {
	m := toGossipMember(n, GossipAlive)
	g.mu.Lock()
	g.members[m.Name] = m
	g.mu.Unlock()
	g.notifyChanged()
	g.log.Debug("gossip member updated", "member", m.Name)
}

func (g *memberlistGossip) NotifyLeave(n *memberlist.Node) {
	m := toGossipMember(n, GossipDead)
	g.mu.Lock()
	if prev, ok := g.members[m.Name]; ok && prev.Meta.Leaving || m.Meta.Leaving {
		m.State = GossipLeft
	}
	g.members[m.Name] = m
	g.mu.Unlock()
	g.notifyChanged()
	if m.State == GossipLeft {
		g.log.Info("gossip member left", "member", m.Name, "addr", m.Addr)
	} else {
		g.log.Warn("gossip member declared dead", "member", m.Name, "addr", m.Addr)
	}
}
