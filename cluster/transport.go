package cluster

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// contactTransport wraps the raft transport to record, per peer, the last
// time an AppendEntries RPC (heartbeat or replication) succeeded and how
// far the peer's log matches this leader's. raft keeps both private (its
// followers' last contact and match index are not exported in v1.7), and
// this package needs them:
//   - the membership safety checks need positive evidence that a voter is
//     reachable right now, not merely the absence of a reported failure: a
//     peer behind a black-holing partition produces no error until the TCP
//     timeout;
//   - the late-peer warning (warn_time) needs the age of the last contact;
//   - auto_failback needs to know that the preferred director has caught
//     up with the leader's log.
//
// Pipelined replication (raft's fast path once a follower is in sync) is
// wrapped too, or the match index would stop at the entry where
// pipelining started.
type contactTransport struct {
	raft.Transport
	prevote raft.WithPreVote
	now     func() time.Time

	mu    sync.Mutex
	peers map[raft.ServerID]peerProgress
}

// peerProgress is what the leader learned about one peer from its
// AppendEntries responses.
type peerProgress struct {
	contact time.Time
	// match is the highest log index the peer acknowledged holding, as
	// the leader of term recorded it. A match from an earlier term is not
	// trusted: a deposed leader's entries may have been overwritten since.
	match uint64
	term  uint64
}

// pipelineBuffer matches the TCP transport's limit of in-flight pipelined
// requests, so forwarding responses never throttles replication.
const pipelineBuffer = 128

// newContactTransport wraps t, which must support pre-vote (both the TCP and
// the in-memory transport do): the wrapper always advertises it.
func newContactTransport(t raft.Transport) (*contactTransport, error) {
	pv, ok := t.(raft.WithPreVote)
	if !ok {
		return nil, errors.New("raft transport does not support pre-vote")
	}
	return &contactTransport{Transport: t, prevote: pv, now: time.Now, peers: map[raft.ServerID]peerProgress{}}, nil
}

func (c *contactTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	sent := c.now()
	err := c.Transport.AppendEntries(id, target, args, resp)
	if err == nil {
		c.record(id, sent, args, resp)
	}
	return err
}

// record notes an AppendEntries sent at sent and answered. Contact is
// dated when the request was sent, not when its answer was processed: an
// answer proves the peer was reachable when the request left, and a
// request sent before a partition may be answered (or its answer handled)
// after it, which must not count as evidence that the peer is reachable
// now.
//
// A successful request with entries proves the peer holds everything up
// to its last entry; one without entries but with a previous entry
// (raft's commit-index update) proves that entry. Heartbeats carry no
// previous entry and prove only contact. A refusal means the peer's log
// ends at resp.LastLog.
func (c *contactTransport) record(id raft.ServerID, sent time.Time, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[id]
	// Pipelined answers and heartbeats are handled out of order.
	if sent.After(p.contact) {
		p.contact = sent
	}
	if args.Term != p.term {
		p.term, p.match = args.Term, 0
	}
	switch {
	case !resp.Success:
		p.match = min(p.match, resp.LastLog)
	case len(args.Entries) > 0:
		p.match = max(p.match, args.Entries[len(args.Entries)-1].Index)
	default:
		p.match = max(p.match, args.PrevLogEntry)
	}
	c.peers[id] = p
}

func (c *contactTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := c.Transport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	cp := &contactPipeline{AppendPipeline: p, c: c, id: id, out: make(chan raft.AppendFuture, pipelineBuffer), stop: make(chan struct{})}
	go cp.forward()
	return cp, nil
}

// contactPipeline records each pipelined response on its way from the
// wrapped pipeline to raft.
type contactPipeline struct {
	raft.AppendPipeline
	c    *contactTransport
	id   raft.ServerID
	out  chan raft.AppendFuture
	stop chan struct{}
	once sync.Once
}

func (p *contactPipeline) forward() {
	in := p.AppendPipeline.Consumer()
	for {
		select {
		case f := <-in:
			// Futures reach the consumer channel only once answered, so
			// Error does not block.
			if f.Error() == nil {
				p.c.record(p.id, f.Start(), f.Request(), f.Response())
			}
			select {
			case p.out <- f:
			case <-p.stop:
				return
			}
		case <-p.stop:
			return
		}
	}
}

func (p *contactPipeline) Consumer() <-chan raft.AppendFuture { return p.out }

func (p *contactPipeline) Close() error {
	p.once.Do(func() { close(p.stop) })
	return p.AppendPipeline.Close()
}

func (c *contactTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return c.prevote.RequestPreVote(id, target, args, resp)
}

// Close closes the wrapped transport when it can be closed.
func (c *contactTransport) Close() error {
	if wc, ok := c.Transport.(raft.WithClose); ok {
		return wc.Close()
	}
	return nil
}

// lastContact returns when the latest AppendEntries from this node that
// id answered was sent; zero if never.
func (c *contactTransport) lastContact(id raft.ServerID) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers[id].contact
}

// matchIndex returns the highest log index id acknowledged to this node as
// leader of term, or 0 when it acknowledged none in that term.
func (c *contactTransport) matchIndex(id raft.ServerID, term uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[id]
	if p.term != term {
		return 0
	}
	return p.match
}
