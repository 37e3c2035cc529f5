package probes_test

import (
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/probes"
)

func score(value, max int) probes.Score { return probes.Score{Value: value, Max: max, Ready: true} }

func TestMustRelease(t *testing.T) {
	for _, tc := range []struct {
		name   string
		leader probes.Score
		best   int
		want   bool
	}{
		{"leader reaches nothing, a peer does", score(0, 3), 1, true},
		{"leader reaches nothing, neither do peers", score(0, 3), 0, false},
		{"leader reaches something", score(1, 3), 3, false},
		{"no ping nodes configured", score(0, 0), 1, false},
		{"leader's score not ready yet", probes.Score{Value: 0, Max: 3}, 2, false},
	} {
		if got := probes.MustRelease(tc.leader, tc.best); got != tc.want {
			t.Errorf("%s: MustRelease = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestArbiter(t *testing.T) {
	const H = 10 * time.Second
	type obs struct {
		at     time.Duration // since t0
		leader probes.Score
		peers  []probes.PeerScore // At zero means "fresh at this observation"
		target string
		reason string // substring of Reason when target is set
		rel    bool
	}
	p := func(id string, s int) probes.PeerScore { return probes.PeerScore{ID: id, Score: s} }
	for _, tc := range []struct {
		name   string
		maxAge time.Duration
		steps  []obs
	}{
		{name: "strictly better for the hysteresis period", steps: []obs{
			{at: 0, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2), p("c", 1)}},
			{at: 5 * time.Second, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2), p("c", 1)}},
			{at: H - time.Nanosecond, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2), p("c", 1)}},
			{at: H, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2), p("c", 1)}, target: "b", reason: "b has reached more ping nodes than the leader (2 > 1) for 10s"},
		}},
		{name: "equal is not better", steps: []obs{
			{at: 0, leader: score(2, 3), peers: []probes.PeerScore{p("b", 2)}},
			{at: time.Hour, leader: score(2, 3), peers: []probes.PeerScore{p("b", 2)}},
		}},
		{name: "a dip restarts the period", steps: []obs{
			{at: 0, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}},
			{at: 8 * time.Second, leader: score(2, 2), peers: []probes.PeerScore{p("b", 2)}},
			{at: 9 * time.Second, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}},
			{at: 18 * time.Second, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}},
			{at: 19 * time.Second, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}, target: "b"},
		}},
		{name: "a follower missing from one observation restarts", steps: []obs{
			{at: 0, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}},
			{at: 5 * time.Second, leader: score(1, 2), peers: nil},
			{at: 10 * time.Second, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}},
			{at: 19 * time.Second, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}},
			{at: 20 * time.Second, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}, target: "b"},
		}},
		{name: "leader improving but still worse keeps the period", steps: []obs{
			{at: 0, leader: score(0, 3), peers: []probes.PeerScore{}},
			{at: 0, leader: score(1, 3), peers: []probes.PeerScore{p("b", 3)}},
			{at: 5 * time.Second, leader: score(2, 3), peers: []probes.PeerScore{p("b", 3)}},
			{at: H, leader: score(2, 3), peers: []probes.PeerScore{p("b", 3)}, target: "b"},
		}},
		{name: "highest score wins among those that waited", steps: []obs{
			{at: 0, leader: score(1, 5), peers: []probes.PeerScore{p("b", 2), p("c", 4)}},
			{at: H, leader: score(1, 5), peers: []probes.PeerScore{p("b", 2), p("c", 4)}, target: "c"},
		}},
		{name: "a better follower that has not waited yields to one that has", steps: []obs{
			{at: 0, leader: score(1, 5), peers: []probes.PeerScore{p("b", 2)}},
			{at: 5 * time.Second, leader: score(1, 5), peers: []probes.PeerScore{p("b", 2), p("c", 4)}},
			{at: H, leader: score(1, 5), peers: []probes.PeerScore{p("b", 2), p("c", 4)}, target: "b"},
			{at: H + 5*time.Second, leader: score(1, 5), peers: []probes.PeerScore{p("b", 2), p("c", 4)}, target: "c"},
		}},
		{name: "equal scores: longest better wins", steps: []obs{
			{at: 0, leader: score(1, 3), peers: []probes.PeerScore{p("c", 2)}},
			{at: time.Second, leader: score(1, 3), peers: []probes.PeerScore{p("b", 2), p("c", 2)}},
			{at: 20 * time.Second, leader: score(1, 3), peers: []probes.PeerScore{p("b", 2), p("c", 2)}, target: "c"},
		}},
		{name: "equal scores and times: lowest ID wins", steps: []obs{
			{at: 0, leader: score(1, 3), peers: []probes.PeerScore{p("d", 2), p("c", 2), p("e", 2)}},
			{at: H, leader: score(1, 3), peers: []probes.PeerScore{p("e", 2), p("d", 2), p("c", 2)}, target: "c"},
		}},
		{name: "leader reaching nothing releases at once", steps: []obs{
			{at: 0, leader: score(0, 2), peers: []probes.PeerScore{p("b", 0), p("c", 1), p("d", 2)}, target: "d", rel: true,
				reason: "leader reaches none of its 2 ping nodes and groups; d reaches 2"},
		}},
		{name: "nobody reaches anything", steps: []obs{
			{at: 0, leader: score(0, 2), peers: []probes.PeerScore{p("b", 0)}},
			{at: time.Hour, leader: score(0, 2), peers: []probes.PeerScore{p("b", 0)}},
		}},
		{name: "an unready leader decides nothing and restarts", steps: []obs{
			{at: 0, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}},
			{at: 5 * time.Second, leader: probes.Score{Value: 0, Max: 2}, peers: []probes.PeerScore{p("b", 2)}},
			{at: H, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}},
			{at: 2 * H, leader: score(1, 2), peers: []probes.PeerScore{p("b", 2)}, target: "b"},
		}},
		{name: "stale follower scores are ignored", maxAge: 3 * time.Second, steps: []obs{
			{at: 0, leader: score(1, 2), peers: []probes.PeerScore{{ID: "b", Score: 2, At: t0}}},
			{at: H, leader: score(1, 2), peers: []probes.PeerScore{{ID: "b", Score: 2, At: t0}}},
			{at: H, leader: score(0, 2), peers: []probes.PeerScore{{ID: "b", Score: 2, At: t0}}},
			{at: H + time.Second, leader: score(0, 2), peers: []probes.PeerScore{{ID: "b", Score: 2, At: t0.Add(H - 2*time.Second)}}, target: "b", rel: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := probes.NewArbiter(probes.ArbiterOptions{Hysteresis: H, MaxAge: tc.maxAge})
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range tc.steps {
				now := t0.Add(o.at)
				peers := make([]probes.PeerScore, len(o.peers))
				for j, ps := range o.peers {
					if ps.At.IsZero() {
						ps.At = now
					}
					peers[j] = ps
				}
				d := a.Observe(now, o.leader, peers)
				if d.Target != o.target || d.Release != o.rel {
					t.Fatalf("step %d (%s): %+v, want target %q release %v", i, o.at, d, o.target, o.rel)
				}
				if o.target != "" && !strings.Contains(d.Reason, o.reason) {
					t.Fatalf("step %d: reason %q lacks %q", i, d.Reason, o.reason)
				}
				if o.target == "" && d.Reason != "" {
					t.Fatalf("step %d: reason %q without a decision", i, d.Reason)
				}
			}
		})
	}
}

func TestArbiterReset(t *testing.T) {
	a, err := probes.NewArbiter(probes.ArbiterOptions{Hysteresis: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	peers := func(at time.Time) []probes.PeerScore { return []probes.PeerScore{{ID: "b", Score: 2, At: at}} }
	a.Observe(t0, score(1, 2), peers(t0))
	a.Reset()
	if d := a.Observe(t0.Add(time.Second), score(1, 2), peers(t0.Add(time.Second))); d.Target != "" {
		t.Fatalf("after Reset the old run counted: %+v", d)
	}
	if d := a.Observe(t0.Add(2*time.Second), score(1, 2), peers(t0.Add(2*time.Second))); d.Target != "b" {
		t.Fatalf("a full period after Reset: %+v, want b", d)
	}
}

func TestNewArbiterValidates(t *testing.T) {
	for _, tc := range []struct {
		opts probes.ArbiterOptions
		want string
	}{
		{probes.ArbiterOptions{}, "hysteresis: 0s must be positive"},
		{probes.ArbiterOptions{Hysteresis: -time.Second}, "hysteresis: -1s must be positive"},
		{probes.ArbiterOptions{Hysteresis: time.Second, MaxAge: -1}, "max_age: -1ns is negative"},
	} {
		if _, err := probes.NewArbiter(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewArbiter(%+v) = %v, want error containing %q", tc.opts, err, tc.want)
		}
	}
}
