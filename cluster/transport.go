package cluster

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// contactTransport wraps the raft transport to record, per peer, the last
// time an AppendEntries RPC (heartbeat or replication) succeeded. raft keeps
// that per-follower contact time private, and the membership safety checks
// need positive evidence that a voter is reachable right now, not merely the
// absence of a reported failure: a peer behind a black-holing partition
// produces no error until the TCP timeout.
type contactTransport struct {
	raft.Transport
	prevote raft.WithPreVote
	now     func() time.Time

	mu      sync.Mutex
	contact map[raft.ServerID]time.Time
}

// newContactTransport wraps t, which must support pre-vote (both the TCP and
// the in-memory transport do): the wrapper always advertises it.
func newContactTransport(t raft.Transport) (*contactTransport, error) {
	pv, ok := t.(raft.WithPreVote)
	if !ok {
		return nil, errors.New("raft transport does not support pre-vote")
	}
	return &contactTransport{Transport: t, prevote: pv, now: time.Now, contact: map[raft.ServerID]time.Time{}}, nil
}

func (c *contactTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := c.Transport.AppendEntries(id, target, args, resp)
	if err == nil {
		c.mu.Lock()
		c.contact[id] = c.now()
		c.mu.Unlock()
	}
	return err
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

// lastContact returns when id last answered an AppendEntries from this
// node; zero if never.
func (c *contactTransport) lastContact(id raft.ServerID) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.contact[id]
}
