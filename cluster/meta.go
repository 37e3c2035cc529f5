package cluster

import (
	"fmt"
	"strings"
	"time"
)

// Score is a director's ping-node score as it announces it through gossip:
// it reaches Value of the Max ping nodes and groups it probes.
type Score struct {
	Value int
	Max   int
}

// Less reports whether s is worse than o: a smaller share of its ping
// nodes reachable. Shares are compared, so directors that probe different
// numbers of ping nodes are still comparable. Both Max must be positive.
func (s Score) Less(o Score) bool {
	return s.Value*o.Max < o.Value*s.Max
}

// SetPingScore announces that this director reaches score of the max ping
// nodes and groups it probes (max 0: no ping nodes). Gossip carries it to
// every director; see PeerScores. Updates are coalesced: at most one
// announcement per timing.gossip_interval, carrying the latest values.
func (n *Node) SetPingScore(score, max int) error {
	if max < 0 || score < 0 || score > max {
		return fmt.Errorf("set ping score: %w: score %d of %d: want 0 ≤ score ≤ max", ErrInvalidRequest, score, max)
	}
	n.updateMeta(func(m *localMeta) { m.meta.PingScore, m.meta.PingMax = score, max })
	return nil
}

// SetWarning announces a warning about this director through gossip ("" clears
// it), next to any late-peer warning the leader raises itself. It is cut to
// fit gossip's metadata limit. Updates are coalesced like SetPingScore's.
func (n *Node) SetWarning(msg string) {
	n.updateMeta(func(m *localMeta) { m.userWarning = msg })
}

// PeerScores returns the ping-node score of every director that is alive
// in gossip and announces one (PingMax > 0), this director included, by
// node ID. clusterd's ipfail arbiter compares the leader's score with the
// followers'.
func (n *Node) PeerScores() map[string]Score {
	out := map[string]Score{}
	for _, g := range n.GossipMembers() {
		if g.State == GossipAlive && g.MetaErr == "" && g.Meta.PingMax > 0 {
			out[g.Name] = Score{Value: g.Meta.PingScore, Max: g.Meta.PingMax}
		}
	}
	// This director's own score is current here even before gossip
	// reflects it.
	self := n.localMeta()
	delete(out, string(n.id))
	if self.PingMax > 0 {
		out[string(n.id)] = Score{Value: self.PingScore, Max: self.PingMax}
	}
	return out
}

// localMeta is what this director wants to announce; the warning is kept
// in parts so the late-peer warning and clusterd's do not overwrite each
// other.
type localMeta struct {
	meta        NodeMeta
	userWarning string
	lateWarning string
}

func (l localMeta) announced() NodeMeta {
	m := l.meta
	var parts []string
	for _, w := range []string{l.lateWarning, l.userWarning} {
		if w != "" {
			parts = append(parts, w)
		}
	}
	m.Warning = strings.Join(parts, "; ")
	return m
}

// localMeta returns the metadata this director announces, or is about to.
func (n *Node) localMeta() NodeMeta {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	m, _ := n.local.announced().fit()
	return m
}

// updateMeta changes the local metadata and schedules its announcement.
func (n *Node) updateMeta(f func(*localMeta)) {
	n.metaMu.Lock()
	f(&n.local)
	n.metaMu.Unlock()
	select {
	case n.metaKick <- struct{}{}:
	default:
	}
}

// metaLoop announces metadata changes, at most one per gossip interval:
// memberlist broadcasts every update to every member, and ping scores or
// warnings may change in bursts.
func (n *Node) metaLoop() {
	defer n.wg.Done()
	var last time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.metaKick:
		}
		if err := sleepCtx(n.ctx, n.timing.GossipInterval-time.Since(last)); err != nil {
			return
		}
		last = time.Now()
		if err := n.publishMeta(); err != nil {
			n.log.Warn("cannot announce node metadata; gossip still carries the previous values", "error", err)
		}
	}
}

// publishMeta announces the current local metadata if it changed. Callers
// are serialised, so the last announcement is never an older state.
func (n *Node) publishMeta() error {
	n.publishMu.Lock()
	defer n.publishMu.Unlock()
	n.metaMu.Lock()
	m, err := n.local.announced().fit()
	n.metaMu.Unlock()
	if err != nil {
		return err
	}
	if m == n.published {
		return nil
	}
	if err := n.gossip.SetMeta(m); err != nil {
		return err
	}
	n.published = m
	return nil
}
