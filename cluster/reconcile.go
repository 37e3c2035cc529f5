package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// maxReconcileBackoff caps the wait before a failed automatic membership
// change is tried again.
const maxReconcileBackoff = 30 * time.Second

// memberOpTimeout bounds one automatic membership change; AddVoter needs
// a few heartbeat timeouts for its probes and up to 2 s for a new server's
// first answer.
func (n *Node) memberOpTimeout() time.Duration {
	return max(30*n.timing.HeartbeatTimeout, 10*time.Second)
}

// membershipLoop reconciles the raft configuration with gossip while this
// node leads: it adds new directors as voters when auto_join allows
// (autoJoin) and removes directors that stayed dead when
// dead_director_cleanup is on (cleanup). It runs on every gossip change
// and every gossip probe interval, and makes one change at a time through
// AddVoter and RemoveServer, whose quorum checks apply unchanged.
func (n *Node) membershipLoop(ctx context.Context, term uint64) {
	r := &reconciler{
		n:        n,
		log:      n.log.With("term", term),
		dead:     map[raft.ServerID]time.Time{},
		noted:    map[string]string{},
		retry:    map[string]retryState{},
		eligible: map[string]time.Time{},
	}
	var changed <-chan struct{}
	if ev, ok := n.gossip.(GossipEvents); ok {
		changed = ev.Changed()
	}
	tick := time.NewTicker(n.timing.GossipProbeInterval)
	defer tick.Stop()
	for {
		// A pass that changed the configuration is followed by another at
		// once, so directors that joined together are added one after
		// the other without waiting for the tick.
		for ctx.Err() == nil && r.pass(ctx) {
		}
		n.reconcilePasses.Add(1)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changed:
		}
	}
}

// reconciler is membershipLoop's state for one leadership period.
type reconciler struct {
	n   *Node
	log *slog.Logger
	// dead maps each server gossip reports dead or left to when this
	// leader first saw it so.
	dead map[raft.ServerID]time.Time
	// noted holds the last message logged per key, so that a condition
	// that persists is logged once, not on every pass.
	noted map[string]string
	retry map[string]retryState
	// eligible maps each director that may be added to when it became
	// so; see joinSettle.
	eligible map[string]time.Time
}

// joinSettle is how long a director must look addable before it is added.
// A director announces that it has raft state on its bootstrap loop's next
// tick, and gossip then needs a few intervals to spread it; until then a
// director that was just removed looks like a new one.
func (n *Node) joinSettle() time.Duration {
	return n.timing.GossipProbeInterval + 2*n.timing.GossipInterval
}

type retryState struct {
	next    time.Time
	backoff time.Duration
}

// pass makes at most one membership change and reports whether it did.
func (r *reconciler) pass(ctx context.Context) bool {
	n := r.n
	if !n.IsLeader() {
		return false
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return false
	}
	cfg := f.Configuration()
	gossip := n.gossipByName()
	if r.autoJoin(ctx, cfg, gossip) {
		return true
	}
	return r.cleanup(ctx, cfg, gossip)
}

// clusterExpect is the cluster's intended size: the largest
// bootstrap_expect of this node and the voters gossip knows. A director
// added later usually runs with bootstrap_expect 0; taking the maximum
// keeps the rules that depend on it the same whichever director leads.
func (n *Node) clusterExpect(cfg raft.Configuration, gossip map[string]GossipMember) int {
	expect := n.cfg.BootstrapExpect
	for _, s := range voters(cfg) {
		if g, ok := gossip[string(s.ID)]; ok && g.MetaErr == "" {
			expect = max(expect, g.Meta.BootstrapExpect)
		}
	}
	return expect
}

// autoJoinAllowed applies the auto_join rule and says which rule applied.
func (n *Node) autoJoinAllowed(nVoters, expect int) (bool, string) {
	if n.cfg.AutoJoin != nil {
		return *n.cfg.AutoJoin, fmt.Sprintf("auto_join is %t", *n.cfg.AutoJoin)
	}
	return nVoters < expect,
		fmt.Sprintf("auto_join unset: adding only while the %d voters are fewer than bootstrap_expect %d", nVoters, expect)
}

// autoJoin adds the first eligible director, in ID order, and reports
// whether it added one.
func (r *reconciler) autoJoin(ctx context.Context, cfg raft.Configuration, gossip map[string]GossipMember) bool {
	n := r.n
	servers := map[raft.ServerID]raft.Server{}
	owner := map[raft.ServerAddress]raft.ServerID{}
	for _, s := range cfg.Servers {
		servers[s.ID] = s
		owner[s.Address] = s.ID
	}
	nVoters := len(voters(cfg))
	allowed, rule := n.autoJoinAllowed(nVoters, n.clusterExpect(cfg, gossip))
	names := make([]string, 0, len(gossip))
	for name := range gossip {
		names = append(names, name)
	}
	slices.Sort(names)
	now := time.Now()
	for name := range r.eligible {
		if _, ok := gossip[name]; !ok {
			delete(r.eligible, name)
		}
	}
	for _, name := range names {
		g := gossip[name]
		key := "join:" + name
		s, member := servers[raft.ServerID(name)]
		if name == string(n.id) || g.State != GossipAlive || g.Meta.Leaving || member && s.Suffrage == raft.Voter {
			delete(r.noted, key)
			delete(r.eligible, name)
			continue
		}
		if why := joinProblem(g, s, member, owner); why != "" {
			delete(r.eligible, name)
			r.note(key, slog.LevelInfo, "director is alive in gossip but is not added to raft automatically", "member", name, "reason", why)
			continue
		}
		since, ok := r.eligible[name]
		if !ok {
			r.eligible[name] = now
			continue
		}
		if now.Sub(since) < n.joinSettle() {
			continue
		}
		if !allowed {
			r.note(key, slog.LevelInfo, "director is alive in gossip but not a raft voter; auto_join does not allow adding it",
				"member", name, "rule", rule, "hint", fmt.Sprintf("clusterctl member add %s %s", name, g.Meta.RaftAddr))
			continue
		}
		if !r.due(key) {
			continue
		}
		r.log.Info("auto-join: adding director as a voter", "member", name, "addr", g.Meta.RaftAddr, "rule", rule)
		opCtx, cancel := context.WithTimeout(ctx, n.memberOpTimeout())
		err := n.AddVoter(opCtx, name, g.Meta.RaftAddr)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			r.failed(key, "auto-join: cannot add director as a voter", "member", name, "error", err)
			continue
		}
		delete(r.noted, key)
		delete(r.retry, key)
		r.log.Info("auto-join: director is a voter", "member", name, "index", n.raft.LastIndex())
		return true
	}
	return false
}

// joinProblem says why gossip member g may not be added automatically, or
// "" if it may. s is its raft server when member is true; owner maps the
// configuration's raft addresses to their servers.
func joinProblem(g GossipMember, s raft.Server, member bool, owner map[raft.ServerAddress]raft.ServerID) string {
	switch {
	case g.MetaErr != "":
		return "its gossip metadata cannot be read (not a Directorate director?): " + g.MetaErr
	case g.Meta.ID != g.Name || g.Meta.RaftAddr == "":
		return fmt.Sprintf("it announces inconsistent metadata (id %q, raft address %q)", g.Meta.ID, g.Meta.RaftAddr)
	case validNodeID(g.Name) != nil:
		return fmt.Sprintf("its name is not a valid node ID: %v", validNodeID(g.Name))
	case member && string(s.Address) != g.Meta.RaftAddr:
		return fmt.Sprintf("it is a %s at %s in the raft configuration but announces raft address %s; remove it first", s.Suffrage, s.Address, g.Meta.RaftAddr)
	case member:
		// A non-voter is left over from an interrupted AddVoter, as this
		// project adds no other: finish its promotion.
		return ""
	case g.Meta.HasState:
		return "it already has raft state: it was removed from this cluster or belongs to another one; if it should vote, use clusterctl member add"
	}
	if other, taken := owner[raft.ServerAddress(g.Meta.RaftAddr)]; taken {
		return fmt.Sprintf("its raft address %s belongs to member %s", g.Meta.RaftAddr, other)
	}
	return ""
}

// cleanup removes the first server, in configuration order, that has been
// dead or left in gossip, without answering raft, for dead_director_cleanup,
// and reports whether it removed one.
func (r *reconciler) cleanup(ctx context.Context, cfg raft.Configuration, gossip map[string]GossipMember) bool {
	n := r.n
	period := n.cfg.DeadDirectorCleanup
	if period <= 0 {
		return false
	}
	now := time.Now()
	nVoters := len(voters(cfg))
	floor := max(minCleanupVoters, quorum(n.clusterExpect(cfg, gossip)))
	for _, s := range cfg.Servers {
		if s.ID == n.id {
			continue
		}
		key := "cleanup:" + string(s.ID)
		g, known := gossip[string(s.ID)]
		if !known || g.State != GossipDead && g.State != GossipLeft {
			if _, was := r.dead[s.ID]; was {
				r.log.Info("director is back in gossip: its removal is called off", "member", s.ID)
				delete(r.dead, s.ID)
				delete(r.noted, key)
			}
			continue
		}
		since, seen := r.dead[s.ID]
		if !seen {
			r.dead[s.ID] = now
			r.log.Warn("director is down in gossip; dead_director_cleanup removes it from raft unless it returns",
				"member", s.ID, "gossip", g.State, "after", period)
			continue
		}
		// Gossip and raft travel separately: a director gossip misses but
		// that still answers raft is not dead.
		if c := n.trans.lastContact(s.ID); c.After(since) {
			r.dead[s.ID] = now
			r.note(key, slog.LevelWarn, "director is down in gossip but answers raft: its removal is postponed", "member", s.ID, "gossip", g.State)
			continue
		}
		if now.Sub(since) < period {
			continue
		}
		if s.Suffrage == raft.Voter && nVoters-1 < floor {
			r.note(key, slog.LevelWarn, "dead director is not removed: the cleanup never leaves fewer voters than its floor; remove it with clusterctl member rm, or add a director first",
				"member", s.ID, "voters", nVoters, "floor", floor)
			continue
		}
		if !r.due(key) {
			continue
		}
		r.log.Warn("dead-director cleanup: removing director from raft", "member", s.ID, "suffrage", s.Suffrage,
			"gossip", g.State, "down_for", now.Sub(since).Round(time.Millisecond))
		opCtx, cancel := context.WithTimeout(ctx, n.memberOpTimeout())
		err := n.RemoveServer(opCtx, string(s.ID), false)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			r.failed(key, "dead-director cleanup: cannot remove director", "member", s.ID, "error", err)
			continue
		}
		delete(r.dead, s.ID)
		delete(r.noted, key)
		delete(r.retry, key)
		r.log.Info("dead-director cleanup: director removed", "member", s.ID, "index", n.raft.LastIndex())
		return true
	}
	return false
}

// note logs msg once for as long as key's message and attributes stay the
// same.
func (r *reconciler) note(key string, level slog.Level, msg string, args ...any) {
	text := fmt.Sprint(append([]any{msg}, args...)...)
	if r.noted[key] == text {
		return
	}
	r.noted[key] = text
	r.log.Log(context.Background(), level, msg, args...)
}

// due reports whether key's retry time has come.
func (r *reconciler) due(key string) bool {
	return !time.Now().Before(r.retry[key].next)
}

// failed logs a failed change and backs key off exponentially.
func (r *reconciler) failed(key, msg string, args ...any) {
	st := r.retry[key]
	st.backoff = min(max(2*st.backoff, r.n.timing.GossipProbeInterval), maxReconcileBackoff)
	st.next = time.Now().Add(st.backoff)
	r.retry[key] = st
	r.log.Warn(msg, append(args, "retry_in", st.backoff)...)
}
