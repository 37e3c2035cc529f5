package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// FailbackRequest asks clusterd to hand leadership to a more preferred
// director (auto_failback). clusterd owns the ordering of a handover: it
// releases the VIPs, then calls TransferLeadership(ctx, To), and claims
// the VIPs again if this node still leads afterwards (the transfer
// failed). It should ignore a request whose Term is not the current term
// of a leadership it still holds.
type FailbackRequest struct {
	// To is the preferred director's ID.
	To string
	// Term is the leadership term the request was made in.
	Term uint64
	// HealthyFor is how long To had been healthy when the request was made.
	HealthyFor time.Duration
}

// FailbackRequests delivers auto_failback's requests to hand leadership
// over; see FailbackRequest. A request nobody takes is not queued behind
// newer ones: at most one waits, and the leader asks again every
// failback_hold while the condition lasts. Requests of a leadership that
// ended are withdrawn. With auto_failback off, nothing is ever sent. The
// channel is never closed.
func (n *Node) FailbackRequests() <-chan FailbackRequest { return n.failbackCh }

// LatePeers returns, on the leader, the IDs of the raft servers that have
// not answered it for longer than warn_time, sorted; nil on a follower.
func (n *Node) LatePeers() []string {
	lt := n.late.Load()
	if lt == nil {
		return nil
	}
	return lt.ids()
}

// lateTracker is the leader's view of late peers in one leadership
// period.
type lateTracker struct {
	mu sync.Mutex
	// since maps each late peer to its last contact (or, if it never
	// answered, when this leader started waiting for it).
	since map[raft.ServerID]time.Time
}

func (lt *lateTracker) ids() []string {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	out := make([]string, 0, len(lt.since))
	for id := range lt.since {
		out = append(out, string(id))
	}
	slices.Sort(out)
	return out
}

// watchInterval is how often the leader checks its peers: fine enough to
// notice a late peer within a quarter of warn_time, and a failback
// candidate's faltering within half a heartbeat timeout.
func (n *Node) watchInterval() time.Duration {
	return max(min(n.timing.HeartbeatTimeout/2, n.cfg.warnTime(n.timing)/4), time.Millisecond)
}

// watchLoop runs the leader's periodic checks of its peers: late peers
// (warn_time) and auto_failback.
func (n *Node) watchLoop(ctx context.Context, term uint64) {
	log := n.log.With("term", term)
	lt := &lateTracker{since: map[raft.ServerID]time.Time{}}
	n.late.Store(lt)
	w := &watcher{
		n: n, log: log, term: term, late: lt,
		firstSeen:    map[raft.ServerID]time.Time{},
		healthySince: map[raft.ServerID]time.Time{},
		noted:        map[string]string{},
		prevCommit:   n.raft.CommitIndex(),
	}
	defer w.finish()
	tick := time.NewTicker(n.watchInterval())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !n.IsLeader() {
			continue
		}
		f := n.raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		cfg := f.Configuration()
		now := time.Now()
		w.checkLate(cfg, now)
		if n.cfg.AutoFailback {
			w.checkFailback(cfg, now)
		}
		n.watchPasses.Add(1)
	}
}

// watcher is watchLoop's state for one leadership period.
type watcher struct {
	n    *Node
	log  *slog.Logger
	term uint64
	late *lateTracker
	// firstSeen is when this leader first saw each server in its
	// configuration: a server that never answered is late from then on.
	firstSeen map[raft.ServerID]time.Time

	healthySince map[raft.ServerID]time.Time
	prevCommit   uint64
	lastRequest  time.Time
	noted        map[string]string
}

// finish withdraws what this period announced: its late-peer warning,
// LatePeers and any failback request nobody took.
func (w *watcher) finish() {
	n := w.n
	if n.late.CompareAndSwap(w.late, nil) {
		n.updateMeta(func(m *localMeta) { m.lateWarning = "" })
	}
	for {
		select {
		case <-n.failbackCh:
		default:
			return
		}
	}
}

// checkLate warns once per episode about each peer that has not answered
// for longer than warn_time, and once when it answers again.
func (w *watcher) checkLate(cfg raft.Configuration, now time.Time) {
	n := w.n
	warnTime := n.cfg.warnTime(n.timing)
	present := map[raft.ServerID]bool{}
	w.late.mu.Lock()
	for _, s := range cfg.Servers {
		if s.ID == n.id {
			continue
		}
		present[s.ID] = true
		first, ok := w.firstSeen[s.ID]
		if !ok {
			first = now
			w.firstSeen[s.ID] = now
		}
		ref := n.trans.lastContact(s.ID)
		if ref.Before(first) {
			ref = first
		}
		age := now.Sub(ref)
		lateSince, wasLate := w.late.since[s.ID]
		switch {
		case age > warnTime && !wasLate:
			w.late.since[s.ID] = ref
			contact := "never"
			if c := n.trans.lastContact(s.ID); !c.IsZero() {
				contact = now.Sub(c).Round(time.Millisecond).String() + " ago"
			}
			w.log.Warn("late peer: no answer to raft for longer than warn_time", "member", s.ID, "suffrage", s.Suffrage,
				"last_contact", contact, "warn_time", warnTime)
		case age <= warnTime && wasLate:
			delete(w.late.since, s.ID)
			w.log.Info("late peer answers again", "member", s.ID, "silent_for", ref.Sub(lateSince).Round(time.Millisecond))
		}
	}
	for id := range w.late.since {
		if !present[id] {
			delete(w.late.since, id)
			w.log.Info("late peer left the raft configuration", "member", id)
		}
	}
	for id := range w.firstSeen {
		if !present[id] {
			delete(w.firstSeen, id)
		}
	}
	ids := make([]string, 0, len(w.late.since))
	for id := range w.late.since {
		ids = append(ids, string(id))
	}
	w.late.mu.Unlock()
	slices.Sort(ids)
	warning := ""
	if len(ids) > 0 {
		warning = "late peers: " + strings.Join(ids, ", ")
	}
	if n.late.Load() == w.late && warning != n.lateWarning() {
		n.updateMeta(func(m *localMeta) { m.lateWarning = warning })
	}
}

func (n *Node) lateWarning() string {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	return n.local.lateWarning
}

// rank returns id's position in preferred, or len(preferred) when it is
// not listed.
func (n *Node) rank(id raft.ServerID) int {
	if i := slices.Index(n.cfg.Preferred, string(id)); i >= 0 {
		return i
	}
	return len(n.cfg.Preferred)
}

// checkFailback tracks how long each voter more preferred than this
// leader has been healthy, and asks for a handover to the most preferred
// one that has been healthy for failback_hold.
func (w *watcher) checkFailback(cfg raft.Configuration, now time.Time) {
	n := w.n
	commit := n.raft.CommitIndex()
	// A candidate must hold everything committed as of the previous pass:
	// under a steady write load a follower is always a few entries behind
	// the very latest commit, but one that lags further is catching up.
	caughtUp := w.prevCommit
	w.prevCommit = commit
	selfRank := n.rank(n.id)
	gossip := n.gossipByName()
	self := n.localMeta()
	hold := n.cfg.failbackHold()
	var best raft.ServerID
	bestRank := selfRank
	for _, s := range voters(cfg) {
		r := n.rank(s.ID)
		if s.ID == n.id || r >= selfRank {
			continue
		}
		key := "failback:" + string(s.ID)
		why := w.failbackProblem(s.ID, gossip, self, caughtUp, now)
		if why != "" {
			if since, ok := w.healthySince[s.ID]; ok {
				w.log.Info("auto_failback: preferred director faltered; its hold time starts over", "member", s.ID,
					"reason", why, "was_healthy_for", now.Sub(since).Round(time.Millisecond))
				delete(w.healthySince, s.ID)
			} else {
				w.note(key, "auto_failback: preferred director is not eligible", "member", s.ID, "reason", why)
			}
			continue
		}
		delete(w.noted, key)
		since, ok := w.healthySince[s.ID]
		if !ok {
			w.healthySince[s.ID] = now
			w.log.Info("auto_failback: preferred director is healthy; leadership fails back to it if it stays so",
				"member", s.ID, "hold", hold)
			continue
		}
		if now.Sub(since) >= hold && r < bestRank {
			best, bestRank = s.ID, r
		}
	}
	for id := range w.healthySince {
		if !slices.ContainsFunc(cfg.Servers, func(s raft.Server) bool { return s.ID == id && s.Suffrage == raft.Voter }) {
			delete(w.healthySince, id)
		}
	}
	if best == "" || (!w.lastRequest.IsZero() && now.Sub(w.lastRequest) < hold) {
		return
	}
	req := FailbackRequest{To: string(best), Term: w.term, HealthyFor: now.Sub(w.healthySince[best])}
	select {
	case n.failbackCh <- req:
		w.lastRequest = now
		w.log.Info("auto_failback: asking to hand leadership to the preferred director", "member", best,
			"healthy_for", req.HealthyFor.Round(time.Millisecond), "hold", hold)
	default:
		// An earlier request is still waiting for clusterd.
	}
}

// failbackProblem says why voter id is not a healthy failback target now,
// or "" if it is.
func (w *watcher) failbackProblem(id raft.ServerID, gossip map[string]GossipMember, self NodeMeta, caughtUp uint64, now time.Time) string {
	n := w.n
	g, known := gossip[string(id)]
	switch {
	case !known:
		return "gossip has not seen it"
	case g.State != GossipAlive || g.Meta.Leaving:
		return "gossip reports it " + g.State
	case g.MetaErr != "":
		return "its gossip metadata cannot be read: " + g.MetaErr
	case g.Meta.Failback != self.Failback:
		return fmt.Sprintf("its auto_failback settings differ from this leader's (fingerprint %q, here %q): give every director the same auto_failback and preferred list",
			g.Meta.Failback, self.Failback)
	}
	if c := n.trans.lastContact(id); now.Sub(c) > n.timing.HeartbeatTimeout {
		return "no fresh raft contact"
	}
	if n.trans.matchIndex(id, w.term) < caughtUp {
		// No indexes in the text: note() logs a reason once while it
		// stays the same.
		return "its log is behind the leader's commit index"
	}
	// ipfail moves leadership to the director with the better ping score;
	// failing back to a worse one would only make it move again.
	if g.Meta.PingMax > 0 && self.PingMax > 0 {
		theirs, ours := Score{g.Meta.PingScore, g.Meta.PingMax}, Score{self.PingScore, self.PingMax}
		if theirs.Less(ours) {
			return fmt.Sprintf("its ping score %d/%d is worse than this leader's %d/%d", theirs.Value, theirs.Max, ours.Value, ours.Max)
		}
	}
	return ""
}

func (w *watcher) note(key, msg string, args ...any) {
	text := fmt.Sprint(append([]any{msg}, args...)...)
	if w.noted[key] == text {
		return
	}
	w.noted[key] = text
	w.log.Info(msg, args...)
}
