package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Sentinel kinds of FieldError, checked with errors.Is. The API maps them to
// HTTP statuses: ErrInvalid 400, ErrNotFound 404, ErrConflict 409.
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	// ErrUnsupportedCommand marks a log entry from a newer Directorate or
	// an unknown command type.
	ErrUnsupportedCommand = errors.New("unsupported command")
)

// FieldError is a validation failure that names the offending field, such
// as "servers[10.0.0.1:80].port", and says why.
type FieldError struct {
	Field  string
	Reason string
	// Kind is ErrInvalid, ErrNotFound or ErrConflict.
	Kind error
}

// Error returns "field: reason", which is what a person needs to fix the
// request.
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap lets errors.Is match the error's kind.
func (e *FieldError) Unwrap() error { return e.Kind }

// FSM holds the replicated State and applies commands to it. It is safe for
// concurrent use: Apply is called by Raft, reads by the API and reconciler.
type FSM struct {
	mu sync.RWMutex
	s  *store
	// changes remembers which services recent entries touched; mu guards
	// it like the state it describes.
	changes changeLog

	// subMu guards the subscribers. Notifications are sent while mu is
	// held for writing, so subscribers see indexes in apply order.
	subMu  sync.Mutex
	subs   map[uint64]chan uint64
	nextID uint64
}

// New returns an FSM with an empty state.
func New() *FSM {
	return &FSM{s: newStore(), subs: map[uint64]chan uint64{}}
}

// Apply decodes and applies the log entry at index. A validation failure
// is returned and leaves the state unchanged. An entry that cannot be
// decoded is a bug or a version skew, and Apply panics rather than diverge
// from the directors that understood it.
//
// The state's Index becomes index even when the command is refused: the
// entry was applied, its effect was to change nothing.
func (f *FSM) Apply(index uint64, data []byte) error {
	cmd, err := Decode(data)
	if err != nil {
		panic(fmt.Sprintf("fsm: log entry %d cannot be decoded, and applying anything else would diverge from "+
			"the directors that could decode it: %v", index, err))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	commit, err := f.s.prepare(cmd, index)
	if err == nil {
		commit()
		f.changes.record(index, cmd)
	}
	f.s.state.Index = index
	f.notify(index)
	return err
}

// Check validates cmd against the current state without applying it, with
// the same rules Apply uses, so the API can refuse a bad request before
// proposing it. cmd may be a command value or a pointer to one; it is not
// modified.
func (f *FSM) Check(cmd Command) error {
	c, err := normalize(cmd)
	if err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, err = f.s.prepare(c, f.s.state.Index+1)
	return err
}

// Index returns the index of the last applied entry: the configuration
// version.
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.state.Index
}

// Read calls fn with the current state under a read lock. fn must neither
// modify the state nor keep references to it after returning, and must not
// call f's methods (a read lock is not reentrant once a writer waits).
func (f *FSM) Read(fn func(*State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.s.state)
}

// Clone returns a deep copy of the current state.
func (f *FSM) Clone() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.state.Clone()
}

// WriteSnapshot writes the whole state, index included, to w, as JSON.
// Maps are written in key order, so equal states give equal bytes.
func (f *FSM) WriteSnapshot(w io.Writer) error {
	// Encode a copy so Apply waits only for the copy, not for the
	// encoding and the writer.
	return WriteState(w, f.Clone())
}

// WriteState writes st to w in the format of FSM.WriteSnapshot. It lets a
// Raft snapshot encode a state cloned at snapshot time, later and
// concurrently with Apply.
func WriteState(w io.Writer, st *State) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// Restore replaces the state with one written by WriteSnapshot. The
// snapshot is validated as a whole, with the rules of ReplaceState, and
// refused, leaving the current state alone, if it is invalid or has a
// field this build does not know.
func (f *FSM) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("restore snapshot: read: %w", err)
	}
	var st State
	if err := strictUnmarshal(data, &st); err != nil {
		return fmt.Errorf("restore snapshot: decode: %w", err)
	}
	ns, err := buildStore(&st)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s = ns
	f.changes.reset(ns.state.Index)
	f.notify(ns.state.Index)
	return nil
}

// Subscribe returns a channel that receives the applied index after every
// change (coalesced: a slow reader sees only the newest) and a function
// that ends the subscription and closes the channel. Every Apply, refused
// commands included, and every Restore notify; none waits for a reader.
func (f *FSM) Subscribe() (<-chan uint64, func()) {
	ch := make(chan uint64, 1)
	f.subMu.Lock()
	id := f.nextID
	f.nextID++
	f.subs[id] = ch
	f.subMu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.subMu.Lock()
			delete(f.subs, id)
			close(ch)
			f.subMu.Unlock()
		})
	}
}

// notify offers index to every subscriber without blocking: a value the
// subscriber has not read yet is replaced by the newer one.
func (f *FSM) notify(index uint64) {
	f.subMu.Lock()
	defer f.subMu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- index:
			continue
		default:
		}
		// Full: drop the stale value. Only notify sends, under subMu,
		// so after the drain the send cannot block.
		select {
		case <-ch:
		default:
		}
		ch <- index
	}
}
