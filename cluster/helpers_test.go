package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/internal/testpoll"
)

// logSink sends slog records to t.Log and keeps them for assertions. It
// stops writing to t when the test ends, because raft goroutines of a node
// being shut down may still log.
type logSink struct {
	mu    sync.Mutex
	t     testing.TB
	done  bool
	lines []string
}

func newLogSink(t testing.TB) *logSink {
	s := &logSink{t: t}
	t.Cleanup(func() {
		s.mu.Lock()
		s.done = true
		s.mu.Unlock()
	})
	return s
}

func (s *logSink) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, line)
	if !s.done {
		s.t.Log(line)
	}
	return len(p), nil
}

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// snapshot returns the records so far.
func (s *logSink) snapshot() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines)
}

// count returns how many records contain all of the substrings.
// wait waits until some record contains all of subs.
func (s *logSink) wait(t testing.TB, within time.Duration, subs ...string) {
	t.Helper()
	eventually(t, within, fmt.Sprintf("log %q", subs), func() error {
		if s.count(subs...) == 0 {
			return errors.New("not logged")
		}
		return nil
	})
}

func (s *logSink) count(subs ...string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.lines {
		ok := true
		for _, sub := range subs {
			if !strings.Contains(l, sub) {
				ok = false
				break
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// testTiming is short so elections take tens of milliseconds, but not so
// short that -race on two cores makes leadership flap.
func testTiming() TimingConfig {
	return TimingConfig{Profile: ProfileFast, Timing: Timing{
		HeartbeatTimeout:    60 * time.Millisecond,
		ElectionTimeout:     60 * time.Millisecond,
		LeaderLeaseTimeout:  60 * time.Millisecond,
		CommitTimeout:       5 * time.Millisecond,
		GossipProbeInterval: 50 * time.Millisecond,
		GossipProbeTimeout:  25 * time.Millisecond,
		GossipInterval:      20 * time.Millisecond,
	}}
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	testpoll.Poll(t, within, 5*time.Millisecond, what, cond)
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// --- fake gossip ---

// fakeGossipNet is a gossip network where every member sees the same,
// instantly consistent view; tests set members' states directly.
type fakeGossipNet struct {
	mu    sync.Mutex
	nodes map[string]*fakeGossip
}

func newFakeGossipNet() *fakeGossipNet { return &fakeGossipNet{nodes: map[string]*fakeGossip{}} }

type fakeGossip struct {
	net     *fakeGossipNet
	name    string
	meta    NodeMeta
	state   string
	sets    int // SetMeta calls
	changed chan struct{}
	// data receives user data (health views).
	data dataDelegate
}

var _ GossipEvents = (*fakeGossip)(nil)

func (g *fakeGossipNet) join(name string) *fakeGossip {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := &fakeGossip{net: g, name: name, state: GossipAlive, changed: make(chan struct{}, 1)}
	g.nodes[name] = f
	g.notifyLocked()
	return f
}

func (g *fakeGossipNet) setState(name, state string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nodes[name].state = state
	g.notifyLocked()
}

// notifyLocked tells every member that something changed, as memberlist's
// event callbacks do.
func (g *fakeGossipNet) notifyLocked() {
	for _, n := range g.nodes {
		select {
		case n.changed <- struct{}{}:
		default:
		}
	}
}

// metaOf returns the metadata name last announced and how many times it
// announced metadata.
func (g *fakeGossipNet) metaOf(name string) (NodeMeta, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.nodes[name]
	return n.meta, n.sets
}

func (f *fakeGossip) Changed() <-chan struct{} { return f.changed }

func (f *fakeGossip) Members() []GossipMember {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	var out []GossipMember
	for _, n := range f.net.nodes {
		out = append(out, GossipMember{Name: n.name, Addr: "gossip-" + n.name, State: n.state, Meta: n.meta})
	}
	slices.SortFunc(out, func(a, b GossipMember) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (f *fakeGossip) SetMeta(m NodeMeta) error {
	if _, err := m.encode(); err != nil {
		return err
	}
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	f.meta = m
	f.sets++
	f.net.notifyLocked()
	return nil
}

func (f *fakeGossip) LocalAddr() string { return "gossip-" + f.name }

func (f *fakeGossip) Leave(time.Duration) error {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	f.state = GossipLeft
	f.net.notifyLocked()
	return nil
}

func (f *fakeGossip) Shutdown() error {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	if f.state != GossipLeft {
		f.state = GossipDead
	}
	f.net.notifyLocked()
	return nil
}

// --- in-memory clusters ---

type testNode struct {
	id    string
	n     *Node
	f     *fsm.FSM
	trans *raft.InmemTransport
	dir   string // non-empty: real bolt and file stores there
	// events collects this node's leadership events.
	evMu   sync.Mutex
	events []LeadershipEvent
	evDone chan struct{}
	// failbacks collects the failback requests this node made, when the
	// cluster acts on them; fbDone closes when that stopped.
	failbacks []failbackSeen
	fbDone    chan struct{}
}

type failbackSeen struct {
	req FailbackRequest
	at  time.Time
}

// actOnFailback does what clusterd does with a failback request: check it
// is current, then transfer leadership (clusterd releases its VIPs first).
func (c *testCluster) actOnFailback(tn *testNode) {
	defer close(tn.fbDone)
	n := tn.n
	for {
		select {
		case <-n.ctx.Done():
			return
		case req := <-n.FailbackRequests():
			tn.evMu.Lock()
			tn.failbacks = append(tn.failbacks, failbackSeen{req, time.Now()})
			tn.evMu.Unlock()
			if !n.IsLeader() || n.Term() != req.Term {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			if err := n.TransferLeadership(ctx, req.To); err != nil {
				c.t.Logf("%s: failback to %s: %v", tn.id, req.To, err)
			}
			cancel()
		}
	}
}

func (tn *testNode) failbackRequests() []failbackSeen {
	tn.evMu.Lock()
	defer tn.evMu.Unlock()
	return slices.Clone(tn.failbacks)
}

type testCluster struct {
	t      *testing.T
	logs   *logSink
	gossip *fakeGossipNet
	timing TimingConfig
	nodes  []*testNode
	// forward, when set, is every node's RemoveForwarder.
	forward bool
	// onDisk makes nodes use bolt and file stores in a temp dir.
	onDisk bool
	// trailingLogs, when set, is every node's TrailingLogs.
	trailingLogs uint64
	// configure, when set, adjusts every node's Config before it starts.
	configure func(*Config)
	// failback makes every node act on its FailbackRequests the way
	// clusterd does, recording each request.
	failback bool
}

func newTestCluster(t *testing.T) *testCluster {
	return &testCluster{t: t, logs: newLogSink(t), gossip: newFakeGossipNet(), timing: testTiming()}
}

// start starts a node. expect is its bootstrap_expect; dir, when not empty,
// is reused (restart).
func (c *testCluster) start(id string, expect int, dir string) *testNode {
	c.t.Helper()
	tn := &testNode{id: id, f: fsm.New(), evDone: make(chan struct{}), dir: dir}
	if c.onDisk && tn.dir == "" {
		tn.dir = filepath.Join(c.t.TempDir(), id)
	}
	_, tn.trans = raft.NewInmemTransport(raft.ServerAddress("inmem-" + id))
	cfg := Config{NodeID: id, BootstrapExpect: expect, Timing: c.timing, APIAddress: "api-" + id + ":8080", DataDir: tn.dir, TrailingLogs: c.trailingLogs}
	if c.configure != nil {
		c.configure(&cfg)
	}
	opts := []Option{WithLogger(c.logs.logger().With("node", id)), WithRaftTransport(tn.trans), WithGossip(c.gossip.join(id))}
	if tn.dir == "" {
		opts = append(opts, WithRaftStores(raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore()))
	}
	if c.forward {
		opts = append(opts, WithRemoveForwarder(c.forwarder))
	}
	n, err := New(cfg, tn.f, opts...)
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	tn.n = n
	go func() {
		defer close(tn.evDone)
		for ev := range n.Leadership() {
			tn.evMu.Lock()
			tn.events = append(tn.events, ev)
			tn.evMu.Unlock()
		}
	}()
	if c.failback {
		tn.fbDone = make(chan struct{})
		go c.actOnFailback(tn)
	}
	// Connect to every running node both ways.
	for _, o := range c.nodes {
		if o.n != nil {
			tn.trans.Connect(o.trans.LocalAddr(), o.trans)
			o.trans.Connect(tn.trans.LocalAddr(), tn.trans)
		}
	}
	c.nodes = append(c.nodes, tn)
	// The first of these cleanups to run stops every node.
	c.t.Cleanup(c.stopAll)
	return tn
}

// stopAll stops the followers first and the leader last: a leader that
// shuts down hands leadership over first, and waits for a new leader,
// which followers that are themselves stopping would make it wait for in
// vain.
func (c *testCluster) stopAll() {
	running := c.running()
	slices.SortStableFunc(running, func(a, b *testNode) int {
		la, lb := a.n.raft.State() == raft.Leader, b.n.raft.State() == raft.Leader
		switch {
		case la == lb:
			return 0
		case lb:
			return -1
		default:
			return 1
		}
	})
	for _, tn := range running {
		c.stop(tn)
	}
}

func (c *testCluster) forwarder(ctx context.Context, leaderID, apiAddr, id string, force bool) error {
	if apiAddr != "api-"+leaderID+":8080" {
		return fmt.Errorf("forwarder got API address %q for %s", apiAddr, leaderID)
	}
	return c.node(leaderID).n.RemoveServer(ctx, id, force)
}

func (c *testCluster) stop(tn *testNode) {
	if tn.n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tn.n.Shutdown(ctx); err != nil {
		c.t.Errorf("shutdown %s: %v", tn.id, err)
	}
	<-tn.evDone
	if tn.fbDone != nil {
		<-tn.fbDone
	}
	// RPCs to a stopped node fail at once, as they do over TCP, instead of
	// waiting out the in-memory transport's timeout.
	for _, o := range c.running() {
		if o != tn {
			o.trans.Disconnect(tn.trans.LocalAddr())
		}
	}
	tn.n = nil
}

// startN starts n nodes n1..nN that bootstrap together.
func (c *testCluster) startN(n int) {
	for i := 1; i <= n; i++ {
		c.start(fmt.Sprintf("n%d", i), n, "")
	}
}

func (c *testCluster) node(id string) *testNode {
	for _, tn := range c.nodes {
		if tn.id == id && tn.n != nil {
			return tn
		}
	}
	c.t.Fatalf("no running node %s", id)
	return nil
}

func (c *testCluster) running() []*testNode {
	var out []*testNode
	for _, tn := range c.nodes {
		if tn.n != nil {
			out = append(out, tn)
		}
	}
	return out
}

// leader waits until exactly one node among those given (default: all
// running) is leader with its barrier done, and all of them agree on it.
func (c *testCluster) leader(among ...*testNode) *testNode {
	c.t.Helper()
	if len(among) == 0 {
		among = c.running()
	}
	var found *testNode
	eventually(c.t, 10*time.Second, "single leader", func() error {
		found = nil
		for _, tn := range among {
			if tn.n.IsLeader() {
				if found != nil {
					return fmt.Errorf("both %s and %s lead", found.id, tn.id)
				}
				found = tn
			}
		}
		if found == nil {
			return errors.New("no leader")
		}
		for _, tn := range among {
			if id, _ := tn.n.Leader(); id != found.id {
				return fmt.Errorf("%s thinks the leader is %q, not %s", tn.id, id, found.id)
			}
		}
		return nil
	})
	return found
}

func (c *testCluster) partition(tn *testNode) {
	tn.trans.DisconnectAll()
	for _, o := range c.running() {
		if o != tn {
			o.trans.Disconnect(tn.trans.LocalAddr())
		}
	}
}

func (c *testCluster) heal() {
	for _, a := range c.running() {
		for _, b := range c.running() {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
}

func (c *testCluster) others(tn *testNode) []*testNode {
	var out []*testNode
	for _, o := range c.running() {
		if o != tn {
			out = append(out, o)
		}
	}
	return out
}

func (tn *testNode) leadership() []LeadershipEvent {
	tn.evMu.Lock()
	defer tn.evMu.Unlock()
	return slices.Clone(tn.events)
}

// voters returns the sorted voter IDs of tn's latest configuration.
func (tn *testNode) voters() []string {
	f := tn.n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var ids []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			ids = append(ids, string(s.ID))
		}
	}
	slices.Sort(ids)
	return ids
}

func addVIP(i int) fsm.Command {
	return fsm.AddVIP{VIP: fsm.VIP{
		Name:   fmt.Sprintf("vip-%d", i),
		Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32),
	}}
}

// propose proposes on whichever node leads, retrying while leadership moves.
func (c *testCluster) propose(cmd fsm.Command, among ...*testNode) uint64 {
	c.t.Helper()
	var idx uint64
	eventually(c.t, 10*time.Second, "propose", func() error {
		l := c.leader(among...)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		idx, err = l.n.Propose(ctx, cmd)
		return err
	})
	return idx
}

// snapshotOf returns tn's state as snapshot bytes with the index zeroed,
// to compare contents across nodes.
func snapshotOf(t testing.TB, f *fsm.FSM) string {
	t.Helper()
	st := f.Clone()
	st.Index = 0
	var buf bytes.Buffer
	if err := fsm.WriteState(&buf, st); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// converged waits until every given node has applied index and holds the
// same state.
func (c *testCluster) converged(index uint64, nodes ...*testNode) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.running()
	}
	eventually(c.t, 10*time.Second, "converged", func() error {
		want := ""
		for _, tn := range nodes {
			if got := tn.f.Index(); got < index {
				return fmt.Errorf("%s applied %d, want %d", tn.id, got, index)
			}
			s := snapshotOf(c.t, tn.f)
			if want == "" {
				want = s
			} else if s != want {
				return fmt.Errorf("%s state differs", tn.id)
			}
		}
		return nil
	})
}

func vipCount(f *fsm.FSM) int {
	n := 0
	f.Read(func(s *fsm.State) { n = len(s.VIPs) })
	return n
}

func hasVIP(f *fsm.FSM, name string) bool {
	ok := false
	f.Read(func(s *fsm.State) { _, ok = s.VIPs[name] })
	return ok
}
