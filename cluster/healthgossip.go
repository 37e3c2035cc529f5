package cluster

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Health views travel through gossip as user data, not node metadata: a
// view per real server does not fit the 512-byte metadata limit.
//
//   - A change of this director's views is queued as broadcasts (UDP,
//     retransmitted a few times) when it is small, and sent reliably (TCP)
//     to every other live director when it is too large for a few packets.
//   - memberlist's periodic push/pull carries every origin's full views, so
//     a director that joins, restarts or missed a broadcast catches up.
//
// Every entry carries its origin's version, which grows with every change
// of that origin's views and across restarts (it starts from the clock),
// so a stale entry relayed late never overwrites a newer one. A full state
// also drops the origin's entries it no longer lists, so a server whose
// check was removed stops being reported.

// healthMsgV1 prefixes every health-view message; a director that receives
// another prefix (a newer format) ignores the message.
const healthMsgV1 byte = 1

// maxBroadcastEntries is the largest change sent as broadcasts; a larger
// one (a switch or a whole rack failing) goes to every director by TCP at
// once, because a few dozen entries per gossip packet would take many
// gossip intervals to drain.
const maxBroadcastEntries = 64

type viewEntry struct {
	state string
	ver   uint64
}

type originViews struct {
	// ver is the version of the newest full state seen from the origin:
	// entries at or below it that it did not list are gone.
	ver     uint64
	entries map[HealthKey]viewEntry
}

type wireEntry struct {
	Service string `json:"s"`
	Server  string `json:"r"`
	State   string `json:"h"`
	Ver     uint64 `json:"v"`
}

type wireOrigin struct {
	Origin string `json:"o"`
	// Ver is set in a full state only.
	Ver     uint64      `json:"v,omitempty"`
	Entries []wireEntry `json:"e"`
}

type wireMsg struct {
	Full    bool         `json:"full,omitempty"`
	Origins []wireOrigin `json:"origins"`
}

// dataGossip is implemented by a Gossip that carries user data: health
// views need it; without it they stay local.
type dataGossip interface {
	// SetDataDelegate routes user messages, broadcasts and push/pull
	// state to d.
	SetDataDelegate(d dataDelegate)
	// NumMembers counts the live members, for retransmit limits.
	NumMembers() int
	// SendToAll sends msg reliably to every other live member.
	SendToAll(msg []byte) error
}

// dataDelegate is the user-data half of memberlist.Delegate.
type dataDelegate interface {
	NotifyMsg([]byte)
	GetBroadcasts(overhead, limit int) [][]byte
	LocalState(join bool) []byte
	MergeRemoteState(buf []byte, join bool)
}

// healthViews holds every director's health views as gossip delivered
// them, this director's own included.
type healthViews struct {
	self string
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	ver     uint64
	origins map[string]*originViews
	// pending is this director's change not sent yet.
	pending map[HealthKey]viewEntry
	queue   *memberlist.TransmitLimitedQueue
	changed chan struct{}
}

func newHealthViews(self string, log *slog.Logger, now func() time.Time, numNodes func() int) *healthViews {
	h := &healthViews{
		self: self, log: log, now: now,
		origins: map[string]*originViews{self: {entries: map[HealthKey]viewEntry{}}},
		pending: map[HealthKey]viewEntry{},
		changed: make(chan struct{}, 1),
	}
	h.queue = &memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: 3}
	return h
}

// nextVerLocked returns a version above every earlier one of this
// director, even one from before a restart, assuming the clock did not go
// back further than the time the restart took.
func (h *healthViews) nextVerLocked() uint64 {
	h.ver = max(h.ver+1, uint64(h.now().UnixNano()))
	return h.ver
}

// setLocal replaces this director's views. It reports whether anything
// changed.
func (h *healthViews) setLocal(views map[HealthKey]string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	own := h.origins[h.self]
	changed := len(views) != len(own.entries)
	for k, s := range views {
		if e, ok := own.entries[k]; !ok || e.state != s {
			changed = true
			break
		}
	}
	if !changed {
		return false
	}
	ver := h.nextVerLocked()
	for k, s := range views {
		if e, ok := own.entries[k]; !ok || e.state != s {
			own.entries[k] = viewEntry{state: s, ver: ver}
			h.pending[k] = own.entries[k]
		}
	}
	for k := range own.entries {
		if _, ok := views[k]; !ok {
			delete(own.entries, k)
			delete(h.pending, k)
		}
	}
	own.ver = ver
	h.notifyLocked()
	return true
}

func (h *healthViews) notifyLocked() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// takePending returns this director's unsent change as one message, and
// whether it is small enough for broadcasts; nil when nothing is pending.
// A large change is sent as the full own state, which also removes
// entries.
func (h *healthViews) takePending() ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pending) == 0 {
		return nil, false
	}
	if len(h.pending) > maxBroadcastEntries {
		h.pending = map[HealthKey]viewEntry{}
		return encodeHealth(wireMsg{Full: true, Origins: []wireOrigin{h.wireOriginLocked(h.self)}}), false
	}
	o := wireOrigin{Origin: h.self}
	for k, e := range h.pending {
		o.Entries = append(o.Entries, wireEntry{Service: k.Service, Server: k.Server, State: e.state, Ver: e.ver})
	}
	h.pending = map[HealthKey]viewEntry{}
	// One broadcast per entry, so that each fits in a gossip packet and
	// several are packed into one.
	for _, e := range o.Entries {
		h.queue.QueueBroadcast(healthBroadcast(encodeHealth(wireMsg{Origins: []wireOrigin{{Origin: h.self, Entries: []wireEntry{e}}}})))
	}
	return nil, true
}

func (h *healthViews) wireOriginLocked(origin string) wireOrigin {
	ov := h.origins[origin]
	o := wireOrigin{Origin: origin, Ver: ov.ver, Entries: make([]wireEntry, 0, len(ov.entries))}
	for k, e := range ov.entries {
		o.Entries = append(o.Entries, wireEntry{Service: k.Service, Server: k.Server, State: e.state, Ver: e.ver})
	}
	return o
}

func encodeHealth(m wireMsg) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		// Only strings and numbers: failing is a bug.
		panic(fmt.Sprintf("encode health views: %v", err))
	}
	return append([]byte{healthMsgV1}, b...)
}

// merge applies a message from another director. Entries about this
// director are ignored: it is the authority on its own views.
func (h *healthViews) merge(buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	if buf[0] != healthMsgV1 {
		return fmt.Errorf("health views: unknown message format %d (a newer director?)", buf[0])
	}
	var m wireMsg
	if err := json.Unmarshal(buf[1:], &m); err != nil {
		return fmt.Errorf("health views: decode: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := false
	dropped := 0
	for _, o := range m.Origins {
		if o.Origin == h.self {
			continue
		}
		// What a buggy or foreign peer sends must not reach a health.set,
		// which Apply would refuse whole, holding up every other update.
		if validNodeID(o.Origin) != nil {
			dropped += len(o.Entries)
			continue
		}
		ov := h.origins[o.Origin]
		if ov == nil {
			ov = &originViews{entries: map[HealthKey]viewEntry{}}
			h.origins[o.Origin] = ov
		}
		listed := make(map[HealthKey]bool, len(o.Entries))
		for _, e := range o.Entries {
			if e.State != HealthUp && e.State != HealthDown && e.State != HealthUnknown {
				dropped++
				continue
			}
			k := HealthKey{Service: e.Service, Server: e.Server}
			listed[k] = true
			// An entry at or below the last full state's version that
			// the full state did not list was removed since.
			if cur, ok := ov.entries[k]; ok && cur.ver >= e.Ver || !ok && e.Ver <= ov.ver {
				continue
			}
			ov.entries[k] = viewEntry{state: e.State, ver: e.Ver}
			changed = true
		}
		if m.Full && o.Ver > ov.ver {
			ov.ver = o.Ver
			for k, e := range ov.entries {
				if !listed[k] && e.ver <= o.Ver {
					delete(ov.entries, k)
					changed = true
				}
			}
		}
	}
	if changed {
		h.notifyLocked()
	}
	if dropped > 0 {
		return fmt.Errorf("health views: dropped %d entries with an invalid director id or state", dropped)
	}
	return nil
}

// fullState encodes every origin's views, for push/pull.
func (h *healthViews) fullState() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := wireMsg{Full: true}
	for origin := range h.origins {
		m.Origins = append(m.Origins, h.wireOriginLocked(origin))
	}
	return encodeHealth(m)
}

// views returns a copy of the views of each origin for which keep is true.
func (h *healthViews) views(keep func(origin string) bool) map[string]map[HealthKey]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]map[HealthKey]string, len(h.origins))
	for origin, ov := range h.origins {
		if !keep(origin) {
			continue
		}
		m := make(map[HealthKey]string, len(ov.entries))
		for k, e := range ov.entries {
			m[k] = e.state
		}
		out[origin] = m
	}
	return out
}

// dataDelegate methods, called by memberlist's goroutines.

func (h *healthViews) NotifyMsg(b []byte) {
	if err := h.merge(b); err != nil {
		h.log.Warn("dropping a health-view message", "err", err)
	}
}

func (h *healthViews) GetBroadcasts(overhead, limit int) [][]byte {
	return h.queue.GetBroadcasts(overhead, limit)
}

func (h *healthViews) LocalState(bool) []byte { return h.fullState() }

func (h *healthViews) MergeRemoteState(buf []byte, _ bool) { h.NotifyMsg(buf) }

// healthBroadcast is one queued delta; deltas never invalidate each other,
// because their versions already order them at the receiver.
type healthBroadcast []byte

func (b healthBroadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b healthBroadcast) Message() []byte                       { return b }
func (b healthBroadcast) Finished()                             {}

// SetHealthViews replaces this director's health views: what its own
// checks say about each real server, HealthUp, HealthDown or
// HealthUnknown. Gossip carries changes to the other directors within a
// gossip interval or so; the leader reads them with HealthVoters.
func (n *Node) SetHealthViews(views map[HealthKey]string) {
	if n.health.setLocal(maps.Clone(views)) {
		select {
		case n.healthKick <- struct{}{}:
		default:
		}
	}
}

// HealthVoters returns the health views of every director that is alive
// in gossip, this one included, by node ID, each marked CutOff when its
// ping-node score says it reaches none of its ping nodes. Views of dead
// or departed directors are left out: they no longer check anything.
func (n *Node) HealthVoters() map[string]Voter {
	alive := map[string]bool{string(n.id): true}
	for _, g := range n.gossip.Members() {
		if g.State == GossipAlive {
			alive[g.Name] = true
		}
	}
	scores := n.PeerScores()
	out := map[string]Voter{}
	for id, v := range n.health.views(func(o string) bool { return alive[o] }) {
		out[id] = Voter{Views: v, CutOff: scores[id].CutOff()}
	}
	return out
}

// HealthChanged delivers a value after the health views of any director
// changed; changes while a value is pending are merged into it.
func (n *Node) HealthChanged() <-chan struct{} { return n.health.changed }

// healthLoop sends this director's view changes, at most once per gossip
// interval so a burst of check results travels together.
func (n *Node) healthLoop(dg dataGossip) {
	defer n.wg.Done()
	var last time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.healthKick:
		}
		if err := sleepCtx(n.ctx, n.timing.GossipInterval-time.Since(last)); err != nil {
			return
		}
		last = time.Now()
		msg, _ := n.health.takePending()
		if msg == nil {
			continue
		}
		if err := dg.SendToAll(msg); err != nil {
			// Push/pull repairs what did not arrive.
			n.log.Warn("cannot send health views to every director; gossip push/pull will", "err", err)
		}
	}
}
