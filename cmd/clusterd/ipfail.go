package main

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/probes"
)

// pingConfig is the ping-node part of clusterd's configuration: Heartbeat's
// ping, ping_group and ipfail.
type pingConfig struct {
	probes.PingOptions `yaml:",inline"`
	// Hysteresis is how long a follower's score must stay strictly better
	// than the leader's before leadership moves to it.
	Hysteresis time.Duration `yaml:"hysteresis"`
}

// defaultPingHysteresis keeps a router's flicker from moving the VIPs: a
// follower must reach more ping nodes for this long first.
const defaultPingHysteresis = 5 * time.Second

// pingScorer is what ipfail needs of the ping monitor.
type pingScorer interface {
	Score() probes.Score
	Changes() <-chan probes.Score
}

// peerScorer is what ipfail needs of the cluster node.
type peerScorer interface {
	ID() string
	IsLeader() bool
	SetPingScore(score, max int) error
	PeerScores() map[string]cluster.Score
}

// ipfail announces this director's ping score and, on the leader, hands
// leadership to a follower that reaches more ping nodes.
type ipfail struct {
	log      *slog.Logger
	monitor  pingScorer
	node     peerScorer
	arbiter  *probes.Arbiter
	interval time.Duration
	// handOver releases the VIPs and transfers leadership to the given
	// follower; release says the leader reaches nothing and must not keep
	// the VIPs even if the transfer fails.
	handOver func(ctx context.Context, to string, release bool)
	// reclaim lets a leader that gave its VIPs up under release, and
	// stayed leader because the transfer failed, take them back once it no
	// longer must release.
	reclaim func()
	// released is set when this leader released under release, until it
	// reclaims or stops leading. Only the run goroutine touches it.
	released bool
}

func (p *ipfail) run(ctx context.Context) {
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	changes := p.monitor.Changes()
	for {
		select {
		case <-ctx.Done():
			return
		case s, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			p.announce(s)
		case <-tick.C:
		}
		p.decide(ctx, time.Now())
	}
}

func (p *ipfail) announce(s probes.Score) {
	if !s.Ready {
		return // an unready score undercounts; peers would misjudge us
	}
	if err := p.node.SetPingScore(s.Value, s.Max); err != nil {
		p.log.Error("announce ping score", "err", err)
	}
}

// decide runs the arbiter on the leader. Followers' scores come from
// gossip; a score that gossip no longer carries (dead or left) is absent.
func (p *ipfail) decide(ctx context.Context, now time.Time) {
	if !p.node.IsLeader() {
		p.arbiter.Reset()
		p.released = false
		return
	}
	own := p.monitor.Score()
	var peers []probes.PeerScore
	for id, s := range p.node.PeerScores() {
		if id != p.node.ID() {
			peers = append(peers, probes.PeerScore{ID: id, Score: s.Value, At: now})
		}
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].ID < peers[j].ID })
	d := p.arbiter.Observe(now, own, peers)
	if d.Target == "" {
		if p.released && own.Ready && !probes.MustRelease(own, bestScore(peers)) {
			p.log.Info("ipfail: this leader reaches its ping nodes again: claiming the VIPs", "score", own.Value)
			p.released = false
			p.reclaim()
		}
		return
	}
	p.log.Warn("ipfail: handing leadership over", "to", d.Target, "release", d.Release, "reason", d.Reason,
		"score", own.Value, "max", own.Max)
	p.arbiter.Reset()
	p.handOver(ctx, d.Target, d.Release)
	p.released = d.Release
}

func bestScore(peers []probes.PeerScore) int {
	best := 0
	for _, p := range peers {
		best = max(best, p.Score)
	}
	return best
}
