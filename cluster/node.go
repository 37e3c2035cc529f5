// Package cluster runs Directorate's Raft group: hashicorp/raft over TCP with
// a bolt log store and file snapshots, memberlist gossip for discovery and
// bootstrap, leadership events (confirmed by a barrier) for the leader's
// duties, and membership changes guarded by quorum safety checks.
//
// Gossip also carries each director's ping-node score and warning
// (SetPingScore, SetWarning, PeerScores). While a node leads it runs its
// own duties: it adds new directors as voters (auto_join), removes
// directors that stayed dead (dead_director_cleanup), warns about late
// peers (warn_time, LatePeers) and asks clusterd to fail leadership back to
// a preferred director (auto_failback, FailbackRequests).
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/directorate/directorate/fsm"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Raft TCP transport settings: a small connection pool per peer, and an I/O
// timeout long enough for a large snapshot chunk on a busy LAN.
const (
	tcpMaxPool = 3
	tcpTimeout = 10 * time.Second
	// logCacheSize keeps recent entries in memory so replication to a
	// lagging follower does not read them back from bolt.
	logCacheSize = 512
)

// RemoveForwarder asks the leader leaderID, reachable at leaderAPIAddr, to
// remove server id. clusterd supplies one that calls the leader's API; it is
// used when the leader is asked to remove itself: it hands leadership over
// first and then has the new leader perform the removal.
type RemoveForwarder func(ctx context.Context, leaderID, leaderAPIAddr, id string, force bool) error

// Option supplies a dependency to New. Tests use them to run raft on the
// in-memory transport and stores and to fake gossip.
type Option func(*options)

type options struct {
	logger    *slog.Logger
	transport raft.Transport
	logs      raft.LogStore
	stable    raft.StableStore
	snaps     raft.SnapshotStore
	gossip    Gossip
	forwarder RemoveForwarder
	sm        stateMachine
	raftTLS   *raftTLS
	keyring   *GossipKeyring
}

// raftTLS is the pair of TLS configurations raft runs with.
type raftTLS struct{ server, client *tls.Config }

// WithLogger sets the logger. The caller gives it the node attribute, so
// that records of every package of a director carry it once.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRaftTransport replaces the TCP transport, e.g. with
// raft.NewInmemTransport. RaftBind and RaftAdvertise are then ignored.
func WithRaftTransport(t raft.Transport) Option { return func(o *options) { o.transport = t } }

// WithRaftStores replaces the bolt and file stores under DataDir.
func WithRaftStores(logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore) Option {
	return func(o *options) { o.logs, o.stable, o.snaps = logs, stable, snaps }
}

// WithGossip replaces memberlist; GossipBind and Join are then ignored.
func WithGossip(g Gossip) Option { return func(o *options) { o.gossip = g } }

// WithRaftTLS runs raft over mutual TLS: server verifies the peers that
// connect (it should require a client certificate), client is used to
// dial them. Without it raft runs over plain TCP, which clusterd allows
// only with insecure: true.
func WithRaftTLS(server, client *tls.Config) Option {
	return func(o *options) { o.raftTLS = &raftTLS{server: server, client: client} }
}

// WithRemoveForwarder lets the leader remove itself: see RemoveForwarder.
func WithRemoveForwarder(f RemoveForwarder) Option { return func(o *options) { o.forwarder = f } }

// LeadershipEvent reports a change of this node's leadership.
type LeadershipEvent struct {
	// Leader is true when this node became leader and its barrier
	// completed, so its FSM holds every committed entry; false when it
	// lost leadership (or is shutting down as leader).
	Leader bool
	// Term is the raft term of the leadership.
	Term uint64
	// Index is raft's applied index when the event was produced.
	Index uint64
}

// Node is one director's membership in the Raft group.
type Node struct {
	cfg    Config
	timing Timing
	id     raft.ServerID
	log    *slog.Logger
	raft   *raft.Raft
	trans  *contactTransport
	logs   raft.LogStore
	tcp    bool
	gossip Gossip
	// stream is raft's TLS stream layer; nil over plain TCP or an
	// injected transport.
	stream *tlsStreamLayer
	// encrypted is set when gossip runs with a keyring.
	encrypted bool
	forwarder RemoveForwarder
	// closeStores closes what start opened on disk; nil with injected
	// stores.
	closeStores func() error
	loopStarted bool

	// leadership; lr is raft itself outside tests.
	lr        leaderRaft
	notifyCh  chan bool
	events    chan LeadershipEvent
	ready     atomic.Bool
	leaderGen atomic.Uint64
	raftDown  chan struct{}
	flushDone <-chan struct{}
	loopDone  chan struct{}

	memberMu sync.Mutex

	// Gossip metadata: local is what this node wants to announce,
	// published what it last announced; metaKick wakes metaLoop.
	metaMu    sync.Mutex
	local     localMeta
	metaKick  chan struct{}
	publishMu sync.Mutex
	published NodeMeta

	// health holds every director's health views; healthKick wakes
	// healthLoop to send this director's changes.
	health     *healthViews
	healthKick chan struct{}

	// Leader duties (auto-join, dead-director cleanup, late peers,
	// auto_failback) run while this node leads; nil in unit tests of the
	// leadership loop alone.
	duties     *dutyRunner
	late       atomic.Pointer[lateTracker]
	failbackCh chan FailbackRequest
	// watchPasses and reconcilePasses count the duty loops' passes, so
	// tests can wait for a number of passes instead of sleeping.
	watchPasses     atomic.Uint64
	reconcilePasses atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

// New starts this director's raft node and gossip. On first start (no raft
// state on disk) with BootstrapExpect > 0 it bootstraps the cluster once
// that many directors are known through gossip; with existing state it
// recovers from disk and never bootstraps.
func New(cfg Config, f *fsm.FSM, opts ...Option) (*Node, error) {
	o := options{}
	if f != nil {
		o.sm = f
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.sm == nil {
		return nil, errors.New("cluster: an FSM is required")
	}
	haveStores := o.logs != nil && o.stable != nil && o.snaps != nil
	timing, err := cfg.validate(o.transport != nil, haveStores, o.gossip != nil)
	if err != nil {
		return nil, err
	}
	logger := o.logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:        cfg,
		timing:     timing,
		id:         raft.ServerID(cfg.NodeID),
		log:        logger,
		forwarder:  o.forwarder,
		notifyCh:   make(chan bool, 16),
		events:     make(chan LeadershipEvent),
		raftDown:   make(chan struct{}),
		loopDone:   make(chan struct{}),
		metaKick:   make(chan struct{}, 1),
		healthKick: make(chan struct{}, 1),
		// One pending request is enough: a newer one replaces nothing
		// and is sent again while the condition lasts.
		failbackCh: make(chan FailbackRequest, 1),
		ctx:        ctx,
		cancel:     cancel,
	}
	n.duties = newDutyRunner(ctx, n.membershipLoop, n.watchLoop)
	n.health = newHealthViews(cfg.NodeID, logger.With("component", "health-gossip"), time.Now, n.liveGossipMembers)
	if err := n.start(o); err != nil {
		cancel()
		n.duties.close()
		_ = n.closeAll()
		if n.loopStarted {
			closed := make(chan struct{})
			close(closed)
			n.flushDone = closed
			close(n.raftDown)
			<-n.loopDone
		}
		return nil, err
	}
	return n, nil
}

func (n *Node) start(o options) error {
	rlog := newHclog(n.log, "raft")
	if o.logs == nil || o.stable == nil || o.snaps == nil {
		if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("data_dir: %w", err)
		}
		path := filepath.Join(n.cfg.DataDir, "raft.db")
		bolt, err := raftboltdb.New(raftboltdb.Options{Path: path})
		if err != nil {
			return fmt.Errorf("open raft store %s: %w", path, err)
		}
		n.closeStores = bolt.Close
		cache, err := raft.NewLogCache(logCacheSize, bolt)
		if err != nil {
			return fmt.Errorf("raft log cache: %w", err)
		}
		retain := n.cfg.SnapshotRetain
		if retain == 0 {
			retain = defaultSnapshotRetain
		}
		snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.DataDir, retain, rlog.Named("snapshots"))
		if err != nil {
			return fmt.Errorf("open snapshot store in %s: %w", n.cfg.DataDir, err)
		}
		o.logs, o.stable, o.snaps = cache, bolt, snaps
	}
	trans := o.transport
	if trans == nil {
		adv := n.cfg.RaftAdvertise
		if adv == "" {
			adv = n.cfg.RaftBind
		}
		var advAddr net.Addr
		// With port 0 the listener picks the port, and the transport then
		// advertises the address it actually bound.
		if _, port, _ := net.SplitHostPort(adv); port != "0" {
			a, err := net.ResolveTCPAddr("tcp", adv)
			if err != nil {
				return fmt.Errorf("raft_advertise: resolve %q: %w", adv, err)
			}
			advAddr = a
		}
		if o.raftTLS != nil {
			stream, err := newTLSStreamLayer(n.cfg.RaftBind, advAddr, o.raftTLS.server, o.raftTLS.client, n.log)
			if err != nil {
				return fmt.Errorf("raft transport: %w", err)
			}
			n.stream = stream
			trans = raft.NewNetworkTransportWithLogger(stream, tcpMaxPool, tcpTimeout, rlog.Named("transport"))
		} else {
			t, err := raft.NewTCPTransportWithLogger(n.cfg.RaftBind, advAddr, tcpMaxPool, tcpTimeout, rlog.Named("transport"))
			if err != nil {
				return fmt.Errorf("raft transport on %s: %w", n.cfg.RaftBind, err)
			}
			trans = t
		}
		n.tcp = true
	}
	ct, err := newContactTransport(trans)
	if err != nil {
		if wc, ok := trans.(raft.WithClose); ok {
			_ = wc.Close()
		}
		return err
	}
	n.trans = ct

	n.logs = o.logs
	hasState, err := raft.HasExistingState(o.logs, o.stable, o.snaps)
	if err != nil {
		return fmt.Errorf("read raft state: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = n.id
	rc.HeartbeatTimeout = n.timing.HeartbeatTimeout
	rc.ElectionTimeout = n.timing.ElectionTimeout
	rc.LeaderLeaseTimeout = n.timing.LeaderLeaseTimeout
	rc.CommitTimeout = n.timing.CommitTimeout
	rc.NotifyCh = n.notifyCh
	rc.Logger = rlog
	// A removed node stays up as a non-member so it can be added back
	// without a restart; pre-vote keeps it from disturbing the cluster.
	rc.ShutdownOnRemove = false
	rc.SnapshotInterval = orDefault(n.cfg.SnapshotInterval, defaultSnapshotInterval)
	rc.SnapshotThreshold = orDefault(n.cfg.SnapshotThreshold, defaultSnapshotThreshold)
	rc.TrailingLogs = orDefault(n.cfg.TrailingLogs, defaultTrailingLogs)
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft config: %w", err)
	}
	r, err := raft.NewRaft(rc, &raftFSM{sm: o.sm}, o.logs, o.stable, o.snaps, ct)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	n.lr = r

	n.local.meta = NodeMeta{
		ID:              n.cfg.NodeID,
		RaftAddr:        string(n.trans.LocalAddr()),
		APIAddr:         n.cfg.APIAddress,
		Version:         n.cfg.Version,
		BootstrapExpect: n.cfg.BootstrapExpect,
		HasState:        hasState,
		Failback:        n.cfg.failbackKey(),
	}
	if o.keyring != nil {
		n.local.meta.Keys = strings.Join(o.keyring.Fingerprints(), ",")
		n.encrypted = true
	}
	meta, err := n.local.announced().fit()
	if err != nil {
		return err
	}
	n.published = meta
	if o.gossip != nil {
		n.gossip = o.gossip
		if err := n.gossip.SetMeta(meta); err != nil {
			return fmt.Errorf("announce node metadata: %w", err)
		}
	} else {
		g, err := startMemberlist(gossipOptions{
			name: n.cfg.NodeID, bind: n.cfg.GossipBind, advertise: n.cfg.GossipAdvertise, timing: n.timing,
			keyring: o.keyring,
			data:    n.health,
		}, meta, n.cfg.Join, n.log)
		if err != nil {
			return err
		}
		n.gossip = g
	}
	n.wg.Add(1)
	go n.metaLoop()
	if dg, ok := n.gossip.(dataGossip); ok {
		dg.SetDataDelegate(n.health)
		n.wg.Add(1)
		go n.healthLoop(dg)
	}
	// The leader's duties use gossip, so leadership is acted on only now;
	// raft's notifications wait in notifyCh meanwhile.
	n.loopStarted = true
	go n.leadershipLoop()

	if hasState {
		n.log.Info("existing raft state found: recovering from disk, not bootstrapping",
			"last_index", r.LastIndex(), "term", r.CurrentTerm())
		return nil
	}
	n.log.Info("no raft state on disk", "bootstrap_expect", n.cfg.BootstrapExpect)
	n.wg.Add(1)
	go n.bootstrapLoop()
	return nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// closeAll releases whatever start managed to open, in order: gossip,
// raft, transport, stores.
func (n *Node) closeAll() error {
	var errs []error
	if n.gossip != nil {
		if err := n.gossip.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("stop raft: %w", err))
		}
	}
	if n.trans != nil {
		if err := n.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft transport: %w", err))
		}
	}
	if n.closeStores != nil {
		if err := n.closeStores(); err != nil {
			errs = append(errs, fmt.Errorf("close raft store: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ID returns this node's ID.
func (n *Node) ID() string { return string(n.id) }

// RaftAddress returns the address other directors reach this node's raft
// at.
func (n *Node) RaftAddress() string { return string(n.trans.LocalAddr()) }

// GossipAddress returns this node's gossip address.
func (n *Node) GossipAddress() string { return n.gossip.LocalAddr() }

// Timing returns the resolved timing this node runs with.
func (n *Node) Timing() Timing { return n.timing }

// Leadership delivers this node's leadership events in order, none dropped.
// There is one channel per node; it is closed after Shutdown.
func (n *Node) Leadership() <-chan LeadershipEvent { return n.events }

// IsLeader reports whether this node is the leader and has completed the
// barrier of its term, i.e. may perform leader duties.
func (n *Node) IsLeader() bool { return n.ready.Load() && n.raft.State() == raft.Leader }

// Leader returns the leader's ID and raft address, or empty strings when no
// leader is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// State returns raft's state: Follower, Candidate, Leader or Shutdown.
func (n *Node) State() string { return n.raft.State().String() }

// Term returns the current raft term.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// AppliedIndex returns the last raft index handed to the FSM.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// LastContact returns when this node last heard from a leader (zero if
// never); on the leader, when it last stepped up or down.
func (n *Node) LastContact() time.Time { return n.raft.LastContact() }

// Stats returns raft's statistics.
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// enqueueTimeout turns the context's deadline into raft's enqueue timeout
// (0, raft's "no timeout", without a deadline).
func enqueueTimeout(ctx context.Context) (time.Duration, error) {
	d, ok := ctx.Deadline()
	if !ok {
		return 0, ctx.Err()
	}
	left := time.Until(d)
	if left <= 0 {
		return 0, context.DeadlineExceeded
	}
	return left, nil
}

// wait waits for a raft future or the context. On a context error the
// operation may still complete later.
func (n *Node) wait(ctx context.Context, op string, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return n.mapRaftErr(op, err)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w (it may still complete)", op, ctx.Err())
	}
}

// Propose commits cmd through raft and returns its log index once this
// node's FSM applied it. A command the FSM refuses returns the FSM's error
// unchanged (errors.Is(err, fsm.ErrInvalid) and errors.As(err,
// **fsm.FieldError) work) along with the index it was refused at.
// Not the leader: ErrNotLeader or ErrNoLeader. Leadership lost in flight:
// ErrLeadershipLost, and the command may or may not have been applied.
func (n *Node) Propose(ctx context.Context, cmd fsm.Command) (uint64, error) {
	if cmd == nil {
		return 0, fmt.Errorf("propose: %w: nil command", ErrInvalidRequest)
	}
	op := "propose " + string(cmd.Type())
	data, err := fsm.Encode(cmd)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	timeout, err := enqueueTimeout(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	f := n.raft.Apply(data, timeout)
	if err := n.wait(ctx, op, f); err != nil {
		return 0, err
	}
	if resp, ok := f.Response().(error); ok && resp != nil {
		return f.Index(), resp
	}
	return f.Index(), nil
}

// Barrier waits until every entry committed before the call is applied to
// this node's FSM. Leader only.
func (n *Node) Barrier(ctx context.Context) error {
	timeout, err := enqueueTimeout(ctx)
	if err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	return n.wait(ctx, "barrier", n.raft.Barrier(timeout))
}

// VerifyLeader confirms, for a consistent read, that this node is still the
// leader: its term's barrier has completed (so its FSM holds everything
// committed before it took over) and a quorum still acknowledges it.
func (n *Node) VerifyLeader(ctx context.Context) error {
	const op = "verify leadership"
	for !n.ready.Load() {
		if n.raft.State() != raft.Leader {
			return n.notLeaderErr(op)
		}
		// Leader, but the barrier of the new term is still running.
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for the new leader's barrier: %w", op, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return n.wait(ctx, op, n.raft.VerifyLeader())
}

// WaitForLeader waits until some leader is known and returns its ID.
func (n *Node) WaitForLeader(ctx context.Context) (string, error) {
	return n.waitLeader(ctx, func(id string) bool { return id != "" })
}

func (n *Node) waitLeader(ctx context.Context, ok func(id string) bool) (string, error) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if id, _ := n.Leader(); ok(id) {
			return id, nil
		}
		if n.raft.State() == raft.Shutdown {
			return "", fmt.Errorf("wait for leader: %w", ErrShutdown)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("wait for leader: %w: %w", ErrNoLeader, ctx.Err())
		case <-tick.C:
		}
	}
}

// Snapshot makes raft snapshot the FSM now and compact its log.
func (n *Node) Snapshot(ctx context.Context) error {
	err := n.wait(ctx, "snapshot", n.raft.Snapshot())
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return err
}

// APIAddress returns the API address node id announced through gossip.
func (n *Node) APIAddress(id string) (string, bool) {
	if id == string(n.id) {
		return n.cfg.APIAddress, n.cfg.APIAddress != ""
	}
	m, ok := n.gossipMember(id)
	if !ok || m.Meta.APIAddr == "" {
		return "", false
	}
	return m.Meta.APIAddr, true
}

// LeaderAPIAddress returns the leader's ID and API address, for forwarding
// writes. ErrNoLeader when no leader is known or its address is not.
func (n *Node) LeaderAPIAddress() (id, apiAddr string, err error) {
	id, _ = n.Leader()
	if id == "" {
		return "", "", fmt.Errorf("find leader: %w: no leader is elected right now; retry shortly", ErrNoLeader)
	}
	a, ok := n.APIAddress(id)
	if !ok {
		return id, "", fmt.Errorf("find leader: %w: the API address of leader %s is not known through gossip", ErrNoLeader, id)
	}
	return id, a, nil
}

func (n *Node) gossipMember(id string) (GossipMember, bool) {
	for _, m := range n.gossip.Members() {
		if m.Name == id {
			return m, true
		}
	}
	return GossipMember{}, false
}

// liveGossipMembers counts the directors alive in gossip, for the
// retransmit limit of health-view broadcasts.
func (n *Node) liveGossipMembers() int {
	c := 0
	for _, m := range n.gossip.Members() {
		if m.State == GossipAlive {
			c++
		}
	}
	return c
}

// GossipMembers returns every director gossip has seen, this one included.
// This director's entry carries the metadata it is announcing, which
// gossip may not have reflected yet.
func (n *Node) GossipMembers() []GossipMember {
	ms := n.gossip.Members()
	self := n.localMeta()
	for i := range ms {
		if ms[i].Name == string(n.id) {
			ms[i].Meta, ms[i].MetaErr = self, ""
		}
	}
	return ms
}

// Shutdown leaves the cluster gracefully: a leader hands leadership to
// another voter first, then the node leaves gossip and stops raft. It is
// safe to call more than once; later calls return the first result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.shutdown(ctx) })
	return n.shutdownErr
}

func (n *Node) shutdown(ctx context.Context) error {
	// Leader duties stop first: no membership change or failback request
	// may start while this node hands leadership over and leaves.
	n.duties.close()
	if n.raft.State() == raft.Leader && n.hasOtherVoters() {
		tctx, cancel := context.WithTimeout(ctx, 2*n.timing.ElectionTimeout+time.Second)
		if err := n.TransferLeadership(tctx, ""); err != nil {
			n.log.Warn("could not hand leadership over before shutting down; followers will elect a leader after the heartbeat timeout", "error", err)
		}
		cancel()
	}
	n.cancel()
	n.wg.Wait()
	var errs []error
	if err := n.gossip.Leave(gossipLeaveTimeout(ctx)); err != nil {
		n.log.Warn("leaving gossip", "error", err)
	}
	// Leadership events still queued are delivered until ctx ends.
	n.flushDone = ctx.Done()
	if err := n.closeAll(); err != nil {
		errs = append(errs, err)
	}
	close(n.raftDown)
	<-n.loopDone
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shut down cluster node: %w", err)
	}
	n.log.Info("cluster node shut down")
	return nil
}

func gossipLeaveTimeout(ctx context.Context) time.Duration {
	const def = 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		return max(min(time.Until(d)/2, def), time.Millisecond)
	}
	return def
}

func (n *Node) hasOtherVoters() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID != n.id && s.Suffrage == raft.Voter {
			return true
		}
	}
	return false
}
