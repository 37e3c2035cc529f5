package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// Sentinel errors, checked with errors.Is. Every error this package returns
// for a refused or failed cluster operation wraps one of them, with a message
// that says what to do.
var (
	// ErrNotLeader: this node is not the leader; send the request to the
	// leader (Leader names it).
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader: no leader is known right now; retry later.
	ErrNoLeader = errors.New("no leader")
	// ErrLeadershipLost: leadership was lost while a change was in flight;
	// the change may or may not have been committed.
	ErrLeadershipLost = errors.New("leadership lost while committing")
	// ErrWouldLoseQuorum: the membership change would leave fewer healthy
	// voters than a quorum. Force overrides it for removals.
	ErrWouldLoseQuorum = errors.New("would lose quorum")
	// ErrLastVoter: removing the only voter would leave a cluster that can
	// never elect a leader again. Force does not override it.
	ErrLastVoter = errors.New("last voter")
	// ErrUnknownMember: no server with that ID is in the configuration.
	ErrUnknownMember = errors.New("unknown member")
	// ErrMemberExists: the ID or address already belongs to a different
	// server.
	ErrMemberExists = errors.New("member exists")
	// ErrChangeInProgress: an earlier configuration change has not been
	// committed yet; retry once it has.
	ErrChangeInProgress = errors.New("configuration change in progress")
	// ErrLeaderRemoval: the leader cannot remove itself here; transfer
	// leadership first.
	ErrLeaderRemoval = errors.New("leader cannot remove itself")
	// ErrShutdown: the node is shutting down or has shut down.
	ErrShutdown = errors.New("cluster node shut down")
	// ErrInvalidRequest: a request argument is malformed; the message names
	// it.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrUntrustedPeer: the server to add presented a raft certificate
	// the cluster CA did not issue.
	ErrUntrustedPeer = errors.New("untrusted peer")
)

// mapRaftErr translates hashicorp/raft errors into this package's sentinels
// so callers never depend on raft's error values.
func (n *Node) mapRaftErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrNotVoter):
		return n.notLeaderErr(op)
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%s: %w: leadership is being transferred; retry on the new leader", op, ErrNotLeader)
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%s: %w: the change may or may not have been applied; read the state before retrying", op, ErrLeadershipLost)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%s: %w", op, ErrShutdown)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%s: raft did not accept the request in time: %w", op, context.DeadlineExceeded)
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}

// notLeaderErr says who the leader is, or that there is none.
func (n *Node) notLeaderErr(op string) error {
	id, addr := n.Leader()
	if id == "" {
		return fmt.Errorf("%s: %w: no leader is elected right now; retry shortly", op, ErrNoLeader)
	}
	return fmt.Errorf("%s: %w: the leader is %s (%s)", op, ErrNotLeader, id, addr)
}
