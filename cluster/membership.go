package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Member is one director as raft and gossip see it.
type Member struct {
	ID string
	// RaftAddress comes from the raft configuration, or from gossip for a
	// director that is not a raft member.
	RaftAddress string
	// Suffrage is Voter, Nonvoter or Staging, or "" for a director known
	// only through gossip (a candidate for `member add`).
	Suffrage string
	Leader   bool
	// APIAddress, GossipAddress, Gossip and Version come from gossip;
	// Gossip is GossipUnknown when gossip has not seen the node.
	APIAddress    string
	GossipAddress string
	Gossip        string
	Version       string
	// PingScore and PingMax are the director's announced ping-node score
	// (PingMax 0: none); Warning its announced warning, if any.
	PingScore int
	PingMax   int
	Warning   string
}

// Members returns the raft configuration merged with gossip's view, sorted
// by ID. Directors known only through gossip are included with an empty
// Suffrage.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, n.mapRaftErr("read raft configuration", err)
	}
	leaderID, _ := n.Leader()
	gossip := map[string]GossipMember{}
	for _, m := range n.GossipMembers() {
		gossip[m.Name] = m
	}
	fill := func(m *Member, g GossipMember, ok bool) {
		m.Gossip = GossipUnknown
		if !ok {
			return
		}
		m.Gossip, m.GossipAddress, m.APIAddress, m.Version = g.State, g.Addr, g.Meta.APIAddr, g.Meta.Version
		m.PingScore, m.PingMax, m.Warning = g.Meta.PingScore, g.Meta.PingMax, g.Meta.Warning
	}
	var out []Member
	for _, s := range f.Configuration().Servers {
		m := Member{ID: string(s.ID), RaftAddress: string(s.Address), Suffrage: s.Suffrage.String(), Leader: string(s.ID) == leaderID}
		g, ok := gossip[m.ID]
		fill(&m, g, ok)
		delete(gossip, m.ID)
		if m.ID == string(n.id) && m.APIAddress == "" {
			m.APIAddress = n.cfg.APIAddress
		}
		out = append(out, m)
	}
	for _, g := range gossip {
		m := Member{ID: g.Name, RaftAddress: g.Meta.RaftAddr}
		fill(&m, g, true)
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// leaderConfig returns the configuration, on the leader only, once no
// configuration change is pending. A configuration entry that is not
// committed yet (e.g. one a new leader inherited) gets half a heartbeat
// timeout, many round trips, to commit before the request is refused with
// ErrChangeInProgress.
func (n *Node) leaderConfig(ctx context.Context, op string) (raft.Configuration, error) {
	deadline := time.Now().Add(n.timing.ElectionTimeout + n.timing.HeartbeatTimeout)
	var pendingSince time.Time
	for {
		if n.raft.State() != raft.Leader {
			return raft.Configuration{}, n.notLeaderErr(op)
		}
		// A new leader first completes its barrier, which commits what
		// earlier leaders left behind, configuration entries included.
		if !n.ready.Load() {
			if time.Now().After(deadline) {
				return raft.Configuration{}, fmt.Errorf("%s: %w: this node just became leader; retry shortly", op, ErrChangeInProgress)
			}
			if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
				return raft.Configuration{}, fmt.Errorf("%s: %w", op, err)
			}
			continue
		}
		f := n.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return raft.Configuration{}, n.mapRaftErr(op, err)
		}
		pending, err := n.pendingConfigIndex()
		if err != nil {
			return raft.Configuration{}, fmt.Errorf("%s: %w", op, err)
		}
		if pending == 0 {
			return f.Configuration(), nil
		}
		if pendingSince.IsZero() {
			pendingSince = time.Now()
		}
		if time.Since(pendingSince) > n.timing.HeartbeatTimeout/2 {
			return raft.Configuration{}, fmt.Errorf("%s: %w: configuration entry %d is not committed yet (commit index %d); retry shortly",
				op, ErrChangeInProgress, pending, n.raft.CommitIndex())
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return raft.Configuration{}, fmt.Errorf("%s: %w", op, err)
		}
	}
}

// pendingConfigIndex returns the index of the newest configuration entry
// beyond the commit index, or 0 if there is none. raft does not expose its
// latest configuration's index (GetConfiguration's Index is always 0 in
// v1.7), so the uncommitted tail of the log is scanned; it is short, and
// the log cache serves it from memory.
func (n *Node) pendingConfigIndex() (uint64, error) {
	var found uint64
	for i := n.raft.CommitIndex() + 1; i <= n.raft.LastIndex(); i++ {
		var l raft.Log
		if err := n.logs.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				continue
			}
			return 0, fmt.Errorf("read raft log entry %d: %w", i, err)
		}
		if l.Type == raft.LogConfiguration {
			found = i
		}
	}
	return found, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// health maps each server probed to "" when it is healthy, or to the
// reason it is not.
type health map[raft.ServerID]string

// probe finds out which of servers the leader can count on right now. It
// asks raft to confirm leadership, which makes raft heartbeat every peer at
// once, and then gives each server up to a heartbeat timeout to answer. A
// server is healthy only if it answered a heartbeat sent after the probe
// started (positive, fresh evidence: an older contact says nothing about a
// partition that just happened) and gossip, where it knows the node, does
// not report it dead or left. Gossip saying "alive" is not enough:
// raft's quorum needs raft connectivity, which gossip does not prove.
func (n *Node) probe(ctx context.Context, op string, servers []raft.Server) (health, error) {
	start := time.Now()
	if err := n.wait(ctx, op, n.raft.VerifyLeader()); err != nil {
		return nil, err
	}
	answered := func(id raft.ServerID) bool { return id == n.id || n.trans.lastContact(id).After(start) }
	deadline := time.Now().Add(n.timing.HeartbeatTimeout)
	for !time.Now().After(deadline) {
		if !slices.ContainsFunc(servers, func(s raft.Server) bool { return !answered(s.ID) }) {
			break
		}
		if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	gossip := n.gossipByName()
	h := health{}
	for _, s := range servers {
		switch g, known := gossip[string(s.ID)]; {
		case !answered(s.ID):
			h[s.ID] = fmt.Sprintf("did not answer raft within %s", n.timing.HeartbeatTimeout)
		case s.ID != n.id && known && g.State != GossipAlive:
			h[s.ID] = "gossip reports it " + g.State
		default:
			h[s.ID] = ""
		}
	}
	return h, nil
}

func (n *Node) gossipByName() map[string]GossipMember {
	m := map[string]GossipMember{}
	for _, g := range n.GossipMembers() {
		m[g.Name] = g
	}
	return m
}

// count returns how many of servers are healthy and describes the others.
func (h health) count(servers []raft.Server) (healthy int, unhealthy string) {
	var bad []string
	for _, s := range servers {
		if why, ok := h[s.ID]; ok && why == "" {
			healthy++
		} else {
			if !ok {
				why = "not probed"
			}
			bad = append(bad, fmt.Sprintf("%s (%s)", s.ID, why))
		}
	}
	if len(bad) == 0 {
		return healthy, "none"
	}
	return healthy, strings.Join(bad, ", ")
}

func voters(c raft.Configuration) []raft.Server {
	var v []raft.Server
	for _, s := range c.Servers {
		if s.Suffrage == raft.Voter {
			v = append(v, s)
		}
	}
	return v
}

func quorum(nVoters int) int { return nVoters/2 + 1 }

func (n *Node) checkAddress(addr string) error {
	if addr == "" || strings.TrimSpace(addr) != addr {
		return fmt.Errorf("%w: address %q is empty or has surrounding spaces", ErrInvalidRequest, addr)
	}
	if n.tcp {
		if err := validHostPort(addr, true); err != nil {
			return fmt.Errorf("%w: address: %v", ErrInvalidRequest, err)
		}
	}
	return nil
}

// AddVoter adds server id at raft address addr as a voter, through the
// leader. With an empty addr the address gossip announces for id is used.
//
// Adding the same ID at the same address again is a no-op. The server is
// first added as a non-voter, which cannot affect the quorum, and promoted
// only once it has answered the leader's raft traffic: a voter that never
// comes up would otherwise raise the quorum beyond what the cluster can
// reach and leave it without a leader. Refused with ErrWouldLoseQuorum when
// the enlarged quorum would exceed the healthy voters.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	op := "add voter " + id
	if err := validNodeID(id); err != nil {
		return fmt.Errorf("%s: %w: id: %v", op, ErrInvalidRequest, err)
	}
	n.memberMu.Lock()
	defer n.memberMu.Unlock()
	if addr == "" {
		g, ok := n.gossipMember(id)
		if !ok || g.Meta.RaftAddr == "" {
			return fmt.Errorf("%s: %w: no director %s is known through gossip; give its raft address", op, ErrUnknownMember, id)
		}
		addr = g.Meta.RaftAddr
	}
	if err := n.checkAddress(addr); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	cfg, err := n.leaderConfig(ctx, op)
	if err != nil {
		return err
	}
	sid, saddr := raft.ServerID(id), raft.ServerAddress(addr)
	present := false
	for _, s := range cfg.Servers {
		switch {
		case s.ID == sid && s.Address != saddr:
			return fmt.Errorf("%s: %w: %s is already a member at %s; remove it first to change its address", op, ErrMemberExists, id, s.Address)
		case s.ID != sid && s.Address == saddr:
			return fmt.Errorf("%s: %w: address %s belongs to member %s", op, ErrMemberExists, addr, s.ID)
		case s.ID == sid && s.Suffrage == raft.Voter:
			n.log.Info("add voter: already a voter at this address", "member", id, "addr", addr)
			return nil
		case s.ID == sid:
			present = true
		}
	}
	v := voters(cfg)
	newQuorum := quorum(len(v) + 1)
	h, err := n.probe(ctx, op, v)
	if err != nil {
		return err
	}
	if healthy, unhealthy := h.count(v); healthy+1 < newQuorum {
		// Even counting the new server, which has not proven it is
		// reachable yet, the quorum could not be met.
		return fmt.Errorf("%s: %w: with %d voters the quorum becomes %d, but only %d voters are healthy (unhealthy: %s); remove or repair them first",
			op, ErrWouldLoseQuorum, len(v)+1, newQuorum, healthy, unhealthy)
	}
	timeout, err := enqueueTimeout(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := n.checkPeerCertificate(addr); err != nil {
		return fmt.Errorf("%s: %w: %s at %s presents a certificate the cluster CA did not issue (%v); it was not added", op, ErrUntrustedPeer, id, addr, err)
	}
	if !present {
		n.log.Info("adding server as non-voter until it answers raft", "member", id, "addr", addr)
		// prevIndex 0: memberMu serialises this node's changes and
		// leaderConfig saw none pending; raft itself admits a change only
		// once the previous one committed.
		if err := n.wait(ctx, op+" (as non-voter)", n.raft.AddNonvoter(sid, saddr, 0, timeout)); err != nil {
			return err
		}
	}
	if err := n.waitContact(ctx, sid); err != nil {
		n.rollbackNonvoter(sid, present)
		return fmt.Errorf("%s: %w: %s at %s has not answered raft (%v); it was not made a voter: check that it runs and that the address is right",
			op, ErrWouldLoseQuorum, id, addr, err)
	}
	// Re-check with the new server now proven reachable.
	if cfg, err = n.leaderConfig(ctx, op); err != nil {
		return err
	}
	if !slices.ContainsFunc(cfg.Servers, func(s raft.Server) bool { return s.ID == sid && s.Address == saddr }) {
		return fmt.Errorf("%s: %w: %s left the configuration while it was catching up", op, ErrChangeInProgress, id)
	}
	v = append(voters(cfg), raft.Server{ID: sid, Address: saddr})
	if h, err = n.probe(ctx, op, v); err != nil {
		return err
	}
	if healthy, unhealthy := h.count(v); healthy < newQuorum {
		n.rollbackNonvoter(sid, present)
		return fmt.Errorf("%s: %w: with %d voters the quorum becomes %d, but only %d would be healthy (unhealthy: %s)",
			op, ErrWouldLoseQuorum, len(v), newQuorum, healthy, unhealthy)
	}
	if timeout, err = enqueueTimeout(ctx); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := n.waitPromotion(ctx, op, n.raft.AddVoter(sid, saddr, 0, timeout)); err != nil {
		return err
	}
	n.log.Info("added voter", "member", id, "addr", addr, "term", n.raft.CurrentTerm(), "index", n.raft.LastIndex())
	return nil
}

// waitPromotion waits for a voter promotion to commit, appending barriers
// while it does not. raft v1.7 dispatches a configuration entry before it
// adds the new voter to its commit tracking, so the new voter's
// acknowledgement of that very entry can be lost; until another entry is
// replicated, the promotion then never commits.
func (n *Node) waitPromotion(ctx context.Context, op string, f raft.IndexFuture) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	nudge := time.NewTicker(n.timing.HeartbeatTimeout)
	defer nudge.Stop()
	for {
		select {
		case err := <-done:
			return n.mapRaftErr(op, err)
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (it may still complete)", op, ctx.Err())
		case <-nudge.C:
			n.log.Debug("promotion not committed yet; appending a barrier", "index", f.Index())
			n.raft.Barrier(n.timing.HeartbeatTimeout)
		}
	}
}

// waitContact waits until server id answered raft from this leader.
func (n *Node) waitContact(ctx context.Context, id raft.ServerID) error {
	// A server has a few heartbeat timeouts to answer: enough for a
	// process that is up, short enough not to hang a CLI call.
	limit := time.NewTimer(max(10*n.timing.HeartbeatTimeout, 2*time.Second))
	defer limit.Stop()
	start := time.Now()
	for {
		if last := n.trans.lastContact(id); last.After(start) {
			return nil
		}
		if n.raft.State() != raft.Leader {
			return n.notLeaderErr("wait for new server")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-limit.C:
			return errors.New("no answer in time")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// rollbackNonvoter removes a server this call added as a non-voter and
// that did not qualify as a voter. Removing a non-voter cannot affect the
// quorum.
func (n *Node) rollbackNonvoter(id raft.ServerID, wasPresent bool) {
	if wasPresent {
		return
	}
	if err := n.raft.RemoveServer(id, 0, n.timing.ElectionTimeout*10).Error(); err != nil {
		n.log.Warn("could not remove the non-voter again; remove it with clusterctl member rm", "member", id, "error", err)
	}
}

// RemoveServer removes server id from the configuration, through the
// leader. Refusals:
//   - ErrUnknownMember: id is not in the configuration.
//   - ErrLastVoter: id is the only voter (even with force).
//   - ErrWouldLoseQuorum: fewer healthy voters would remain than the new
//     quorum (force overrides; the cluster may then stay leaderless until
//     the unhealthy voters return).
//   - ErrLeaderRemoval: id is this leader and no RemoveForwarder was
//     given. With one, leadership is first transferred to a healthy voter,
//     which then performs the removal.
func (n *Node) RemoveServer(ctx context.Context, id string, force bool) error {
	op := "remove server " + id
	if err := validNodeID(id); err != nil {
		return fmt.Errorf("%s: %w: id: %v", op, ErrInvalidRequest, err)
	}
	n.memberMu.Lock()
	defer n.memberMu.Unlock()
	cfg, err := n.leaderConfig(ctx, op)
	if err != nil {
		return err
	}
	sid := raft.ServerID(id)
	i := slices.IndexFunc(cfg.Servers, func(s raft.Server) bool { return s.ID == sid })
	if i < 0 {
		return fmt.Errorf("%s: %w: %s is not in the raft configuration", op, ErrUnknownMember, id)
	}
	target := cfg.Servers[i]
	v := voters(cfg)
	var (
		remaining []raft.Server
		h         health
	)
	if target.Suffrage == raft.Voter {
		if len(v) == 1 {
			return fmt.Errorf("%s: %w: %s is the only voter; removing it would leave a cluster that can never elect a leader", op, ErrLastVoter, id)
		}
		remaining = slices.DeleteFunc(slices.Clone(v), func(s raft.Server) bool { return s.ID == sid })
		q := quorum(len(remaining))
		if h, err = n.probe(ctx, op, remaining); err != nil {
			return err
		}
		if healthy, unhealthy := h.count(remaining); healthy < q {
			if !force {
				return fmt.Errorf("%s: %w: %d voters would remain with a quorum of %d, but only %d of them are healthy (unhealthy: %s); repair them, remove an unhealthy one instead, or force",
					op, ErrWouldLoseQuorum, len(remaining), q, healthy, unhealthy)
			}
			n.log.Warn("forced removal below a healthy quorum", "member", id, "remaining", len(remaining), "quorum", q, "healthy", healthy, "unhealthy", unhealthy)
		}
	}
	if sid == n.id {
		return n.removeSelf(ctx, op, remaining, h, force)
	}
	timeout, err := enqueueTimeout(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := n.wait(ctx, op, n.raft.RemoveServer(sid, 0, timeout)); err != nil {
		return err
	}
	n.log.Info("removed server", "member", id, "term", n.raft.CurrentTerm(), "index", n.raft.LastIndex())
	return nil
}

// removeSelf hands leadership to a healthy voter and has it remove this
// node, which avoids the leaderless gap of raft's own self-removal (the
// leader steps down only after the change commits, and the others wait a
// heartbeat timeout before electing).
func (n *Node) removeSelf(ctx context.Context, op string, remaining []raft.Server, h health, force bool) error {
	if n.forwarder == nil {
		return fmt.Errorf("%s: %w: this node is the leader; transfer leadership first (clusterctl leader transfer), then remove it", op, ErrLeaderRemoval)
	}
	var to *raft.Server
	for i := range remaining {
		if why, ok := h[remaining[i].ID]; ok && why == "" {
			to = &remaining[i]
			break
		}
	}
	if to == nil {
		return fmt.Errorf("%s: %w: no healthy voter to hand leadership to", op, ErrWouldLoseQuorum)
	}
	n.log.Info("removing this leader: transferring leadership first", "to", to.ID)
	if err := n.transfer(ctx, op, to); err != nil {
		return err
	}
	leader, err := n.waitLeader(ctx, func(l string) bool { return l != "" && l != string(n.id) })
	if err != nil {
		return fmt.Errorf("%s: leadership was handed over but no new leader appeared: %w", op, err)
	}
	api, ok := n.APIAddress(leader)
	if !ok {
		return fmt.Errorf("%s: %w: leadership moved to %s, whose API address is unknown; run the removal there", op, ErrNotLeader, leader)
	}
	if err := n.forwarder(ctx, leader, api, string(n.id), force); err != nil {
		return fmt.Errorf("%s: via new leader %s: %w", op, leader, err)
	}
	return nil
}

// TransferLeadership hands leadership to voter toID, or with an empty toID
// to the voter raft finds most up to date, and waits until another node
// leads. Leader only.
func (n *Node) TransferLeadership(ctx context.Context, toID string) error {
	op := "transfer leadership"
	if toID != "" {
		op += " to " + toID
	}
	if n.raft.State() != raft.Leader {
		return n.notLeaderErr(op)
	}
	var to *raft.Server
	if toID != "" {
		if toID == string(n.id) {
			return nil
		}
		f := n.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return n.mapRaftErr(op, err)
		}
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == toID {
				to = &s
			}
		}
		if to == nil {
			return fmt.Errorf("%s: %w: %s is not in the raft configuration", op, ErrUnknownMember, toID)
		}
		if to.Suffrage != raft.Voter {
			return fmt.Errorf("%s: %w: %s is a %s and cannot lead", op, ErrInvalidRequest, toID, to.Suffrage)
		}
	}
	if err := n.transfer(ctx, op, to); err != nil {
		return err
	}
	if _, err := n.waitLeader(ctx, func(l string) bool { return l != "" && l != string(n.id) }); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (n *Node) transfer(ctx context.Context, op string, to *raft.Server) error {
	var f raft.Future
	if to == nil {
		f = n.raft.LeadershipTransfer()
	} else {
		f = n.raft.LeadershipTransferToServer(to.ID, to.Address)
	}
	if err := n.wait(ctx, op, f); err != nil {
		return err
	}
	target := "raft's choice"
	if to != nil {
		target = string(to.ID)
	}
	n.log.Info("leadership handed over", "to", target, "term", n.raft.CurrentTerm())
	return nil
}
