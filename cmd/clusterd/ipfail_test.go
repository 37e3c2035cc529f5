package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/probes"
)

type fakeMonitor struct {
	mu sync.Mutex
	s  probes.Score
	ch chan probes.Score
}

func (m *fakeMonitor) Score() probes.Score          { m.mu.Lock(); defer m.mu.Unlock(); return m.s }
func (m *fakeMonitor) Changes() <-chan probes.Score { return m.ch }
func (m *fakeMonitor) set(v, maxScore int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s = probes.Score{Value: v, Max: maxScore, Ready: true}
}

type fakePeers struct {
	leader    bool
	peers     map[string]cluster.Score
	announced []string
}

func (f *fakePeers) ID() string     { return "d1" }
func (f *fakePeers) IsLeader() bool { return f.leader }
func (f *fakePeers) SetPingScore(v, m int) error {
	f.announced = append(f.announced, fmt.Sprintf("%d/%d", v, m))
	return nil
}
func (f *fakePeers) PeerScores() map[string]cluster.Score { return f.peers }

func newTestIPFail(t *testing.T) (*ipfail, *fakeMonitor, *fakePeers, *[]string) {
	arb, err := probes.NewArbiter(probes.ArbiterOptions{Hysteresis: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mon := &fakeMonitor{ch: make(chan probes.Score)}
	peers := &fakePeers{leader: true, peers: map[string]cluster.Score{}}
	var acts []string
	p := &ipfail{log: testLogger(t), monitor: mon, node: peers, arbiter: arb, interval: time.Second,
		handOver: func(_ context.Context, to string, release bool) {
			acts = append(acts, fmt.Sprintf("hand over to %s release=%t", to, release))
		},
		reclaim: func() { acts = append(acts, "reclaim") }}
	return p, mon, peers, &acts
}

func TestIPFailHandsOverAfterHysteresis(t *testing.T) {
	p, mon, peers, acts := newTestIPFail(t)
	ctx := context.Background()
	mon.set(1, 2)
	peers.peers = map[string]cluster.Score{"d1": {Value: 1, Max: 2}, "d2": {Value: 2, Max: 2}, "d3": {Value: 1, Max: 2}}
	t0 := time.Unix(1000, 0)
	p.decide(ctx, t0)
	p.decide(ctx, t0.Add(4*time.Second))
	if len(*acts) != 0 {
		t.Fatalf("handed over before the hysteresis ran out: %v", *acts)
	}
	p.decide(ctx, t0.Add(6*time.Second))
	if !slices.Equal(*acts, []string{"hand over to d2 release=false"}) {
		t.Fatalf("got %v", *acts)
	}
}

func TestIPFailLeaderThatReachesNothingReleasesAtOnce(t *testing.T) {
	p, mon, peers, acts := newTestIPFail(t)
	ctx := context.Background()
	mon.set(0, 2)
	peers.peers = map[string]cluster.Score{"d2": {Value: 1, Max: 2}}
	p.decide(ctx, time.Unix(1000, 0))
	if !slices.Equal(*acts, []string{"hand over to d2 release=true"}) {
		t.Fatalf("got %v", *acts)
	}
	// The transfer failed (still leader): it tries again, without the
	// VIPs, while it reaches nothing, and takes them back once it does.
	p.decide(ctx, time.Unix(1001, 0))
	mon.set(2, 2)
	p.decide(ctx, time.Unix(1002, 0))
	if !slices.Equal(*acts, []string{"hand over to d2 release=true", "hand over to d2 release=true", "reclaim"}) {
		t.Fatalf("got %v", *acts)
	}
}

func TestIPFailFollowersOnlyAnnounce(t *testing.T) {
	p, mon, peers, acts := newTestIPFail(t)
	peers.leader = false
	mon.set(0, 2)
	peers.peers = map[string]cluster.Score{"d2": {Value: 2, Max: 2}}
	p.decide(context.Background(), time.Unix(1000, 0))
	if len(*acts) != 0 {
		t.Fatalf("a follower acted: %v", *acts)
	}
	p.announce(probes.Score{Value: 1, Max: 2, Ready: false})
	p.announce(probes.Score{Value: 2, Max: 2, Ready: true})
	if !slices.Equal(peers.announced, []string{"2/2"}) {
		t.Fatalf("announced %v: an unready score must not be announced", peers.announced)
	}
}
