package cluster

import (
	"bytes"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// stateMachine is what the raft adapter needs from *fsm.FSM. Tests of the
// raft mechanics can substitute their own.
type stateMachine interface {
	Apply(index uint64, data []byte) error
	WriteSnapshot(w io.Writer) error
	Restore(r io.Reader) error
}

// raftFSM adapts the replicated model to raft.FSM.
type raftFSM struct{ sm stateMachine }

// Apply returns the model's validation error as the ApplyFuture response,
// so Propose can hand it back to the caller unchanged.
func (a *raftFSM) Apply(l *raft.Log) any {
	if err := a.sm.Apply(l.Index, l.Data); err != nil {
		return err
	}
	return nil
}

// Snapshot serialises the state here, on raft's FSM goroutine, because
// Persist runs concurrently with later Applies and must see this point in
// time.
func (a *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	var buf bytes.Buffer
	if err := a.sm.WriteSnapshot(&buf); err != nil {
		return nil, fmt.Errorf("snapshot state: %w", err)
	}
	return &fsmSnapshot{data: buf.Bytes()}, nil
}

func (a *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := a.sm.Restore(rc); err != nil {
		return fmt.Errorf("restore state from snapshot: %w", err)
	}
	return nil
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
