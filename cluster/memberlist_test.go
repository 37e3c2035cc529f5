package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/directorate/directorate/fsm"
)

// realNode is a director on the production path: TCP transport, bolt and
// file stores, memberlist, all on 127.0.0.1.
type realNode struct {
	cfg Config
	n   *Node
	f   *fsm.FSM
}

func startReal(t testing.TB, logs *logSink, cfg Config, opts ...Option) *realNode {
	t.Helper()
	rn := &realNode{cfg: cfg, f: fsm.New()}
	n, err := New(cfg, rn.f, append([]Option{WithLogger(logs.logger().With("node", cfg.NodeID))}, opts...)...)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	rn.n = n
	// Nobody else reads leadership events here; drain them so a leader's
	// final event does not hold up its shutdown.
	go func() {
		for range n.Leadership() {
		}
	}()
	t.Cleanup(func() { rn.stop(t) })
	return rn
}

func (rn *realNode) stop(t testing.TB) {
	if rn.n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rn.n.Shutdown(ctx); err != nil {
		t.Errorf("shutdown %s: %v", rn.cfg.NodeID, err)
	}
	rn.n = nil
}

func TestBootstrapExpectOverMemberlist(t *testing.T) {
	t.Parallel()
	logs := newLogSink(t)
	base := t.TempDir()
	cfgFor := func(i int, join ...string) Config {
		id := fmt.Sprintf("d%d", i)
		return Config{
			NodeID:          id,
			DataDir:         filepath.Join(base, id),
			RaftBind:        "127.0.0.1:0",
			GossipBind:      "127.0.0.1:0",
			APIAddress:      fmt.Sprintf("127.0.0.1:%d", 18080+i),
			Join:            join,
			BootstrapExpect: 3,
			Timing:          testTiming(),
			Version:         "test",
		}
	}
	// Each director joins only the one started before it.
	var nodes []*realNode
	for i := 1; i <= 3; i++ {
		var join []string
		if i > 1 {
			join = []string{nodes[i-2].n.GossipAddress()}
		}
		nodes = append(nodes, startReal(t, logs, cfgFor(i, join...)))
	}

	var leader *realNode
	eventually(t, 20*time.Second, "one cluster of three", func() error {
		leader = nil
		for _, rn := range nodes {
			if rn.n.IsLeader() {
				leader = rn
			}
		}
		if leader == nil {
			return errors.New("no leader")
		}
		for _, rn := range nodes {
			ms, err := rn.n.Members()
			if err != nil {
				return err
			}
			voters := 0
			for _, m := range ms {
				if m.Suffrage == "Voter" && m.Gossip == GossipAlive && m.APIAddress != "" && m.Version == "test" {
					voters++
				}
			}
			if voters != 3 {
				return fmt.Errorf("%s sees %+v", rn.cfg.NodeID, ms)
			}
			if id, _ := rn.n.Leader(); id != leader.cfg.NodeID {
				return fmt.Errorf("%s follows %q", rn.cfg.NodeID, id)
			}
		}
		return nil
	})
	if n := logs.count("bootstrapping cluster"); n < 1 {
		t.Fatal("nobody bootstrapped")
	}

	ctx := ctxT(t, 20*time.Second)
	idx, err := leader.n.Propose(ctx, addVIP(1))
	if err != nil {
		t.Fatal(err)
	}
	waitApplied := func(idx uint64, nodes ...*realNode) {
		t.Helper()
		eventually(t, 10*time.Second, "applied", func() error {
			for _, rn := range nodes {
				if rn.f.Index() < idx {
					return fmt.Errorf("%s at %d", rn.cfg.NodeID, rn.f.Index())
				}
			}
			return nil
		})
	}
	waitApplied(idx, nodes...)

	// Followers find the leader's API address through gossip.
	var follower *realNode
	for _, rn := range nodes {
		if rn != leader {
			follower = rn
		}
	}
	if id, api, err := follower.n.LeaderAPIAddress(); err != nil || id != leader.cfg.NodeID || api != leader.cfg.APIAddress {
		t.Fatalf("LeaderAPIAddress = %q %q %v", id, api, err)
	}

	// Restart the follower on the same addresses: it recovers from disk
	// and does not bootstrap again.
	restart := follower.cfg
	restart.RaftBind = follower.n.RaftAddress()
	restart.GossipBind = follower.n.GossipAddress()
	restart.Join = []string{leader.n.GossipAddress()}
	bootstraps := logs.count("bootstrapping cluster")
	follower.stop(t)
	eventually(t, 10*time.Second, "departure seen through gossip", func() error {
		for _, m := range leader.n.GossipMembers() {
			if m.Name == restart.NodeID && m.State == GossipLeft {
				return nil
			}
		}
		return fmt.Errorf("members %+v", leader.n.GossipMembers())
	})
	idx, err = leader.n.Propose(ctx, addVIP(2))
	if err != nil {
		t.Fatal(err)
	}
	back := startReal(t, logs, restart)
	if n := logs.count("node="+restart.NodeID, "existing raft state found"); n != 1 {
		t.Fatalf("restarted node logged recovery %d times", n)
	}
	waitApplied(idx, back)
	idx, err = leader.n.Propose(ctx, addVIP(3))
	if err != nil {
		t.Fatal(err)
	}
	waitApplied(idx, back)
	if n := logs.count("bootstrapping cluster"); n != bootstraps {
		t.Fatalf("bootstrap records went from %d to %d after a restart", bootstraps, n)
	}
	eventually(t, 10*time.Second, "restarted node alive in gossip", func() error {
		for _, m := range leader.n.GossipMembers() {
			if m.Name == restart.NodeID && m.State == GossipAlive && m.Meta.HasState {
				return nil
			}
		}
		return fmt.Errorf("members %+v", leader.n.GossipMembers())
	})
}

func TestJoinRetriesUntilPeerAppears(t *testing.T) {
	t.Parallel()
	logs := newLogSink(t)
	base := t.TempDir()
	// Reserve a port for the director that starts second.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	later := l.Addr().String()
	l.Close()
	cfg := func(id, gossip string, join ...string) Config {
		return Config{
			NodeID: id, DataDir: filepath.Join(base, id), RaftBind: "127.0.0.1:0", GossipBind: gossip,
			Join: join, BootstrapExpect: 2, Timing: testTiming(),
		}
	}
	first := startReal(t, logs, cfg("early", "127.0.0.1:0", later))
	eventually(t, 5*time.Second, "join retried", func() error {
		if logs.count("node=early", "cannot join gossip yet") < 2 {
			return errors.New("fewer than two failed attempts")
		}
		return nil
	})
	second := startReal(t, logs, cfg("late", later))
	eventually(t, 20*time.Second, "two-node cluster", func() error {
		for _, rn := range []*realNode{first, second} {
			ms, err := rn.n.Members()
			if err != nil {
				return err
			}
			if len(ms) != 2 || ms[0].Suffrage != "Voter" || ms[1].Suffrage != "Voter" {
				return fmt.Errorf("%s sees %+v", rn.cfg.NodeID, ms)
			}
		}
		if !first.n.IsLeader() && !second.n.IsLeader() {
			return errors.New("no leader")
		}
		return nil
	})
}

// A director started with bootstrap_expect 0 and join becomes a voter of
// the existing cluster by itself when auto_join allows it, and metadata
// updates travel through memberlist.
func TestAutoJoinOverMemberlist(t *testing.T) {
	t.Parallel()
	logs := newLogSink(t)
	base := t.TempDir()
	yes := true
	cfgFor := func(id string, expect int, join ...string) Config {
		return Config{
			NodeID: id, DataDir: filepath.Join(base, id), RaftBind: "127.0.0.1:0", GossipBind: "127.0.0.1:0",
			Join: join, BootstrapExpect: expect, AutoJoin: &yes, Timing: testTiming(),
		}
	}
	d1 := startReal(t, logs, cfgFor("d1", 2))
	d2 := startReal(t, logs, cfgFor("d2", 2, d1.n.GossipAddress()))
	eventually(t, 20*time.Second, "two-node cluster", func() error {
		if !d1.n.IsLeader() && !d2.n.IsLeader() {
			return errors.New("no leader")
		}
		return nil
	})
	d3 := startReal(t, logs, cfgFor("d3", 0, d2.n.GossipAddress()))
	if err := d3.n.SetPingScore(1, 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "d3 is a voter and its score is known", func() error {
		for _, rn := range []*realNode{d1, d2, d3} {
			ms, err := rn.n.Members()
			if err != nil {
				return err
			}
			voters := 0
			for _, m := range ms {
				if m.Suffrage == "Voter" {
					voters++
				}
			}
			if voters != 3 {
				return fmt.Errorf("%s sees %+v", rn.cfg.NodeID, ms)
			}
			if got := rn.n.PeerScores()["d3"]; got != (Score{1, 2}) {
				return fmt.Errorf("%s sees d3's score %v", rn.cfg.NodeID, got)
			}
		}
		return nil
	})
	eventually(t, 5*time.Second, "d3 added by auto-join", func() error {
		if logs.count("auto-join: director is a voter", "member=d3") != 1 {
			return errors.New("not logged")
		}
		return nil
	})
}
