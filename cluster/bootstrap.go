package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// bootstrapLoop runs on a node without raft state. It announces through
// gossip when the node gains state (it bootstrapped, or a leader added it),
// and with bootstrap_expect > 0 it bootstraps the cluster when the
// conditions of bootstrapServers hold for a settle period.
//
// The rule follows Consul's: bootstrap only if no member already has a raft
// configuration, and only with exactly bootstrap_expect members that all
// agree on it. Every node that bootstraps then uses the same sorted voter
// set, which makes concurrent bootstraps identical and therefore safe.
func (n *Node) bootstrapLoop() {
	defer n.wg.Done()
	poll := min(n.timing.GossipInterval, 100*time.Millisecond)
	// The member set must hold still this long, so a director that is still
	// joining gossip is seen by everyone before anyone bootstraps.
	settle := n.timing.GossipProbeInterval
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var (
		candidate string
		since     time.Time
		lastWhy   string
	)
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		if n.hasRaftState() {
			n.log.Info("raft state present: this node is part of a cluster")
			n.announceState()
			return
		}
		if n.cfg.BootstrapExpect == 0 {
			if lastWhy == "" {
				lastWhy = "waiting"
				n.log.Info("bootstrap_expect is 0: waiting to be added to a cluster (clusterctl member add)")
			}
			continue
		}
		servers, why := n.bootstrapServers()
		if servers == nil {
			if why != lastWhy {
				n.log.Info("not bootstrapping yet", "reason", why)
				lastWhy = why
			}
			candidate = ""
			continue
		}
		key := fmt.Sprint(servers)
		if key != candidate {
			candidate, since = key, time.Now()
			continue
		}
		if time.Since(since) < settle {
			continue
		}
		ids := make([]string, len(servers))
		for i, s := range servers {
			ids[i] = string(s.ID) + "@" + string(s.Address)
		}
		n.log.Info("bootstrapping cluster", "voters", strings.Join(ids, ","), "bootstrap_expect", n.cfg.BootstrapExpect)
		err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
		switch {
		case err == nil, errors.Is(err, raft.ErrCantBootstrap):
			// ErrCantBootstrap: state appeared meanwhile (a leader that
			// bootstrapped the same set already replicated to us).
		case errors.Is(err, raft.ErrRaftShutdown):
			return
		default:
			n.log.Error("bootstrap failed; will retry", "error", err)
			candidate = ""
			continue
		}
		n.announceState()
		return
	}
}

func (n *Node) hasRaftState() bool {
	if n.raft.LastIndex() > 0 {
		return true
	}
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

func (n *Node) announceState() {
	n.metaMu.Lock()
	n.local.meta.HasState = true
	n.metaMu.Unlock()
	// Announced at once, not coalesced: directors waiting to bootstrap
	// must learn quickly that a cluster now exists.
	if err := n.publishMeta(); err != nil {
		n.log.Warn("cannot announce raft state through gossip", "error", err)
	}
}

// bootstrapServers returns the voters to bootstrap with, or nil and the
// reason it cannot bootstrap yet.
func (n *Node) bootstrapServers() ([]raft.Server, string) {
	expect := n.cfg.BootstrapExpect
	var alive []GossipMember
	for _, m := range n.gossip.Members() {
		if m.MetaErr != "" {
			continue
		}
		// Any member with state, even one currently unreachable, means a
		// cluster exists: never start a second one.
		if m.Meta.HasState {
			return nil, fmt.Sprintf("director %s already has raft state, so a cluster exists: this node waits to be added (clusterctl member add %s)", m.Name, n.id)
		}
		// Directors with bootstrap_expect 0 wait to be added and take no
		// part in bootstrapping.
		if m.State != GossipAlive || m.Meta.BootstrapExpect == 0 {
			continue
		}
		if m.Meta.BootstrapExpect != expect {
			return nil, fmt.Sprintf("director %s has bootstrap_expect %d but this node has %d: make them agree", m.Name, m.Meta.BootstrapExpect, expect)
		}
		alive = append(alive, m)
	}
	switch {
	case len(alive) < expect:
		return nil, fmt.Sprintf("%d of %d directors known through gossip", len(alive), expect)
	case len(alive) > expect:
		return nil, fmt.Sprintf("%d directors without raft state are alive but bootstrap_expect is %d: refusing to guess which ones form the cluster; fix bootstrap_expect", len(alive), expect)
	}
	servers := make([]raft.Server, 0, len(alive))
	addrs := map[string]string{}
	hasSelf := false
	for _, m := range alive {
		if m.Meta.ID != m.Name || m.Meta.RaftAddr == "" {
			return nil, fmt.Sprintf("director %s announces inconsistent metadata (id %q, raft address %q)", m.Name, m.Meta.ID, m.Meta.RaftAddr)
		}
		if other, dup := addrs[m.Meta.RaftAddr]; dup {
			return nil, fmt.Sprintf("directors %s and %s announce the same raft address %s", other, m.Name, m.Meta.RaftAddr)
		}
		addrs[m.Meta.RaftAddr] = m.Name
		if m.Name == string(n.id) {
			hasSelf = true
		}
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Meta.RaftAddr)})
	}
	if !hasSelf {
		return nil, "this node is not yet listed among the live gossip members"
	}
	slices.SortFunc(servers, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return servers, ""
}
