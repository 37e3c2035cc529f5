package cluster

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
)

// leaderRaft is the part of *raft.Raft the leadership loop uses, so the
// loop's ordering rules can be tested against a scripted raft.
type leaderRaft interface {
	Barrier(timeout time.Duration) raft.Future
	State() raft.RaftState
	CurrentTerm() uint64
	AppliedIndex() uint64
}

type barrierResult struct {
	gen uint64
}

// leadershipLoop turns raft's NotifyCh into LeadershipEvents.
//
// Becoming leader is reported only after a barrier in the new term
// completed, so the FSM holds every committed entry before the leader
// claims VIPs. Each leadership period has a generation number; a barrier
// that completes after its period ended is ignored, so a leader that loses
// leadership while its barrier is pending is never reported as leader.
// Events queue without bound (they are rare) and are never dropped.
func (n *Node) leadershipLoop() {
	defer close(n.loopDone)
	results := make(chan barrierResult, 1)
	var (
		queue      []LeadershipEvent
		reported   bool
		reportTerm uint64
	)
	handle := func(isLeader bool) {
		gen := n.leaderGen.Add(1)
		if isLeader {
			n.log.Info("raft elected this node leader; running barrier before taking leader duties", "term", n.lr.CurrentTerm())
			go n.runBarrier(gen, results)
			return
		}
		n.ready.Store(false)
		n.duties.stop()
		if reported {
			reported = false
			queue = append(queue, LeadershipEvent{Leader: false, Term: reportTerm, Index: n.lr.AppliedIndex()})
			n.log.Warn("lost leadership", "term", reportTerm)
		}
	}
	drain := func() {
		for {
			select {
			case v := <-n.notifyCh:
				handle(v)
			default:
				return
			}
		}
	}
	for {
		var out chan<- LeadershipEvent
		var head LeadershipEvent
		if len(queue) > 0 {
			out, head = n.events, queue[0]
		}
		select {
		case v := <-n.notifyCh:
			handle(v)
		case res := <-results:
			// raft pushes "lost" on NotifyCh before it can become leader
			// again, so draining first makes a stale result visible.
			drain()
			if res.gen != n.leaderGen.Load() || n.lr.State() != raft.Leader {
				continue
			}
			reported = true
			reportTerm = n.lr.CurrentTerm()
			n.ready.Store(true)
			n.duties.start(reportTerm)
			idx := n.lr.AppliedIndex()
			queue = append(queue, LeadershipEvent{Leader: true, Term: reportTerm, Index: idx})
			n.log.Info("leadership established: barrier done", "term", reportTerm, "index", idx)
		case out <- head:
			queue = queue[1:]
		case <-n.raftDown:
			drain()
			n.leaderGen.Add(1)
			n.ready.Store(false)
			n.duties.stop()
			if reported {
				queue = append(queue, LeadershipEvent{Leader: false, Term: reportTerm, Index: n.lr.AppliedIndex()})
			}
			n.flushEvents(queue)
			return
		}
	}
}

func (n *Node) flushEvents(queue []LeadershipEvent) {
	defer close(n.events)
	for _, ev := range queue {
		select {
		case n.events <- ev:
		case <-n.flushDone:
			n.log.Warn("leadership events not delivered before shutdown ended", "undelivered", len(queue))
			return
		}
	}
}

// runBarrier commits a barrier in the leadership period gen, retrying while
// the period lasts.
func (n *Node) runBarrier(gen uint64, results chan<- barrierResult) {
	backoff := n.timing.HeartbeatTimeout / 4
	for {
		err := n.lr.Barrier(10 * n.timing.ElectionTimeout).Error()
		if err == nil {
			select {
			case results <- barrierResult{gen: gen}:
			case <-n.loopDone:
			}
			return
		}
		if errors.Is(err, raft.ErrRaftShutdown) || n.leaderGen.Load() != gen || n.lr.State() != raft.Leader {
			return
		}
		n.log.Warn("leader barrier failed; retrying", "term", n.lr.CurrentTerm(), "error", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-n.loopDone:
			return
		}
	}
}
