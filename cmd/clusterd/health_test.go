package main

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/hooks"
	"github.com/directorate/directorate/internal/testpoll"
	"github.com/directorate/directorate/probes"
)

// fakeHealthNode is a one-node Raft (fakeConsensus) whose gossip delivers
// the voters a test sets.
type fakeHealthNode struct {
	*fakeConsensus
	mu        sync.Mutex
	voters    map[string]cluster.Voter
	published []map[cluster.HealthKey]string
	changed   chan struct{}
	proposals int
}

func newFakeHealthNode(f *fsm.FSM, leader bool) *fakeHealthNode {
	return &fakeHealthNode{fakeConsensus: &fakeConsensus{fsm: f, leader: leader}, changed: make(chan struct{}, 1)}
}

func (n *fakeHealthNode) SetHealthViews(v map[cluster.HealthKey]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.published = append(n.published, maps.Clone(v))
}

func (n *fakeHealthNode) HealthVoters() map[string]cluster.Voter {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.voters)
}

func (n *fakeHealthNode) HealthChanged() <-chan struct{} { return n.changed }
func (n *fakeHealthNode) Term() uint64                   { return 4 }

func (n *fakeHealthNode) Propose(ctx context.Context, cmd fsm.Command) (uint64, error) {
	n.mu.Lock()
	n.proposals++
	n.mu.Unlock()
	return n.fakeConsensus.Propose(ctx, cmd)
}

func (n *fakeHealthNode) setVoters(v map[string]cluster.Voter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.voters = v
}

func (n *fakeHealthNode) lastPublished() map[cluster.HealthKey]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.published) == 0 {
		return nil
	}
	return n.published[len(n.published)-1]
}

// fakeChecks is a scheduler whose results the test sets per target.
type fakeChecks struct {
	mu     sync.Mutex
	specs  []probes.CheckSpec
	sets   int
	health map[netip.AddrPort]probes.Health
}

func (c *fakeChecks) Set(specs []probes.CheckSpec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.specs = slices.Clone(specs)
	c.sets++
}

func (c *fakeChecks) Statuses() []probes.CheckStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []probes.CheckStatus
	for _, s := range c.specs {
		h, ok := c.health[s.Target]
		if !ok {
			h = probes.HealthUnknown
		}
		out = append(out, probes.CheckStatus{Spec: s, Health: h})
	}
	return out
}

type fakeHooks struct {
	mu     sync.Mutex
	events []hooks.Event
}

func (h *fakeHooks) RunAsync(ev hooks.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

func (h *fakeHooks) got() []hooks.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

func apply(t *testing.T, c *fakeConsensus, cmds ...fsm.Command) {
	t.Helper()
	for _, cmd := range cmds {
		if _, err := c.Propose(context.Background(), cmd); err != nil {
			t.Fatalf("%s: %v", cmd.Type(), err)
		}
	}
}

var (
	rsA = netip.MustParseAddr("10.1.0.1")
	rsB = netip.MustParseAddr("10.1.0.2")
)

// healthState makes service web (quorum 2, a sorry server) and service
// api, which shares server A and its check, and has B with its own check
// switched off.
func healthState(t *testing.T, c *fakeConsensus) {
	tcp := &fsm.CheckConfig{Kind: fsm.CheckTCP, Interval: fsm.Duration(time.Second), Timeout: fsm.Duration(time.Second / 2), Rise: 1, Fall: 1}
	apply(t, c,
		fsm.AddVIP{VIP: fsm.VIP{Name: "v", Prefix: netip.MustParsePrefix("192.0.2.10/24")}},
		fsm.AddVIP{VIP: fsm.VIP{Name: "v2", Prefix: netip.MustParsePrefix("192.0.2.11/24")}},
		fsm.AddService{Service: fsm.Service{Name: "web", VIP: "v", Protocol: fsm.TCP, Port: 80, Scheduler: "wlc", Method: fsm.DR,
			Check: tcp, Quorum: 2, Sorry: &fsm.SorryServer{Address: netip.MustParseAddr("10.9.9.9"), Port: 80}}},
		fsm.AddServer{Service: "web", Server: fsm.RealServer{Address: rsA, Port: 80, Weight: 1}},
		fsm.AddServer{Service: "web", Server: fsm.RealServer{Address: rsB, Port: 80, Weight: 1}},
		fsm.AddService{Service: fsm.Service{Name: "api", VIP: "v2", Protocol: fsm.TCP, Port: 80, Scheduler: "wlc", Method: fsm.DR, Check: tcp}},
		fsm.AddServer{Service: "api", Server: fsm.RealServer{Address: rsA, Port: 80, Weight: 1}},
		fsm.AddServer{Service: "api", Server: fsm.RealServer{Address: rsB, Port: 80, Weight: 1, Check: &fsm.CheckConfig{Kind: fsm.CheckNone}}},
	)
}

var (
	webA = cluster.HealthKey{Service: "web", Server: "10.1.0.1:80"}
	webB = cluster.HealthKey{Service: "web", Server: "10.1.0.2:80"}
	apiA = cluster.HealthKey{Service: "api", Server: "10.1.0.1:80"}
)

func views(state string, keys ...cluster.HealthKey) map[cluster.HealthKey]string {
	m := map[cluster.HealthKey]string{}
	for _, k := range keys {
		m[k] = state
	}
	return m
}

func serverHealth(f *fsm.FSM, k cluster.HealthKey) (h *fsm.Health, lost bool) {
	f.Read(func(st *fsm.State) {
		svc := st.Services[k.Service]
		lost = svc.QuorumLost
		if rs := svc.Servers[k.Server]; rs != nil && rs.Health != nil {
			c := *rs.Health
			h = &c
		}
	})
	return h, lost
}

func TestChecksFromStateRunsEachCheckOnce(t *testing.T) {
	f := fsm.New()
	node := newFakeHealthNode(f, true)
	healthState(t, node.fakeConsensus)
	checks := &fakeChecks{health: map[netip.AddrPort]probes.Health{}}
	h := newHealthMonitor("d1", testLogger(t), f, node, checks, &fakeHooks{}, time.Second)
	h.pass(context.Background())
	// web's A and api's A share one check; api's B is not checked.
	if len(checks.specs) != 2 {
		t.Fatalf("scheduler got %d checks, want 2: %+v", len(checks.specs), checks.specs)
	}
	for _, s := range checks.specs {
		if s.Kind != probes.CheckTCP || s.Interval != time.Second || s.Rise != 1 || s.Target.Port() != 80 {
			t.Errorf("spec %+v", s)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("spec %v: %v", s, err)
		}
	}
	if got, want := node.lastPublished(), views(string(probes.HealthUnknown), webA, webB, apiA); !maps.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	// A pass without changes hands the scheduler nothing new.
	h.pass(context.Background())
	if checks.sets != 1 {
		t.Errorf("scheduler Set %d times for one unchanged state", checks.sets)
	}
	checks.health[netip.AddrPortFrom(rsA, 80)] = probes.HealthDown
	h.pass(context.Background())
	if got := node.lastPublished(); got[webA] != "down" || got[apiA] != "down" || got[webB] != "unknown" {
		t.Errorf("published after A failed: %v", got)
	}
}

func TestLeaderCommitsOnlyWhatAMajorityAgrees(t *testing.T) {
	f := fsm.New()
	node := newFakeHealthNode(f, true)
	healthState(t, node.fakeConsensus)
	hk := &fakeHooks{}
	h := newHealthMonitor("d1", testLogger(t), f, node, &fakeChecks{}, hk, time.Second)
	ctx := context.Background()
	all := []cluster.HealthKey{webA, webB, apiA}

	// Everyone sees everything up: the first agreed state is recorded.
	node.setVoters(map[string]cluster.Voter{
		"d1": {Views: views("up", all...)}, "d2": {Views: views("up", all...)}, "d3": {Views: views("up", all...)},
	})
	h.pass(ctx)
	if hh, _ := serverHealth(f, webA); hh == nil || hh.State != "up" || len(hh.Views) != 3 {
		t.Fatalf("web A after agreement on up: %+v", hh)
	}

	// One director sees every server down, the others up: nothing changes.
	before := snapshot(t, f)
	proposals := node.proposals
	node.setVoters(map[string]cluster.Voter{
		"d1": {Views: views("down", all...)}, "d2": {Views: views("up", all...)}, "d3": {Views: views("up", all...)},
	})
	h.pass(ctx)
	if after := snapshot(t, f); after != before || node.proposals != proposals {
		t.Fatalf("a lone director's view changed the state (%d proposals):\n%s\n%s", node.proposals-proposals, before, after)
	}

	// Two of three see A down: A goes down in both services, web loses
	// its quorum of 2 and the hook runs once.
	node.setVoters(map[string]cluster.Voter{
		"d1": {Views: views("up", all...)},
		"d2": {Views: map[cluster.HealthKey]string{webA: "down", apiA: "down", webB: "up"}},
		"d3": {Views: map[cluster.HealthKey]string{webA: "down", apiA: "down", webB: "up"}},
	})
	h.pass(ctx)
	hh, lost := serverHealth(f, webA)
	if hh == nil || hh.State != "down" || hh.Views["d1"] != "up" || hh.Views["d2"] != "down" {
		t.Fatalf("web A: %+v", hh)
	}
	if ah, _ := serverHealth(f, apiA); ah == nil || ah.State != "down" {
		t.Fatalf("api A: %+v", ah)
	}
	if !lost {
		t.Fatal("web kept its quorum with one of two servers down")
	}
	h.pass(ctx) // the hook sees the commit of the previous pass
	evs := hk.got()
	if len(evs) != 1 || evs[0].Role != hooks.RoleQuorumLost || evs[0].Service != "web" || evs[0].Node != "d1" || evs[0].Term != 4 {
		t.Fatalf("hooks after quorum loss: %+v", evs)
	}

	// Back up: committed, quorum regained, hook.
	node.setVoters(map[string]cluster.Voter{
		"d1": {Views: views("up", all...)}, "d2": {Views: views("up", all...)}, "d3": {Views: views("down", all...)},
	})
	h.pass(ctx)
	h.pass(ctx)
	if hh, lost := serverHealth(f, webA); hh.State != "up" || lost {
		t.Fatalf("web A after recovery: %+v, quorum lost %v", hh, lost)
	}
	evs = hk.got()
	if len(evs) != 2 || evs[1].Role != hooks.RoleQuorumRegained || evs[1].Service != "web" {
		t.Fatalf("hooks after recovery: %+v", evs)
	}
}

func TestFollowerPublishesButNeitherProposesNorRunsHooks(t *testing.T) {
	f := fsm.New()
	leader := newFakeHealthNode(f, true)
	healthState(t, leader.fakeConsensus)
	node := newFakeHealthNode(f, false)
	hk := &fakeHooks{}
	checks := &fakeChecks{health: map[netip.AddrPort]probes.Health{netip.AddrPortFrom(rsA, 80): probes.HealthDown}}
	h := newHealthMonitor("d2", testLogger(t), f, node, checks, hk, time.Second)
	node.setVoters(map[string]cluster.Voter{
		"d1": {Views: views("down", webA, webB)}, "d2": {Views: views("down", webA, webB)},
	})
	h.pass(context.Background())
	if node.proposals != 0 {
		t.Fatalf("a follower proposed %d times", node.proposals)
	}
	if got := node.lastPublished(); got[webA] != "down" {
		t.Fatalf("follower published %v", got)
	}
	// It becomes leader: it commits what the directors agree on, and
	// reports the quorum loss that its own commit caused.
	node.fakeConsensus.leader = true
	h.pass(context.Background())
	if hh, _ := serverHealth(f, webA); hh == nil || hh.State != "down" {
		t.Fatalf("new leader did not commit: %+v", hh)
	}
	h.pass(context.Background())
	if evs := hk.got(); len(evs) != 1 || evs[0].Role != hooks.RoleQuorumLost {
		t.Fatalf("hooks: %+v", evs)
	}
}

func TestHealthMonitorRunReactsToChecks(t *testing.T) {
	f := fsm.New()
	node := newFakeHealthNode(f, true)
	healthState(t, node.fakeConsensus)
	node.fakeConsensus.leader = false
	checks := &fakeChecks{health: map[netip.AddrPort]probes.Health{}}
	h := newHealthMonitor("d1", testLogger(t), f, node, checks, &fakeHooks{}, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.run(ctx) }()
	defer func() { cancel(); <-done }()
	checks.mu.Lock()
	checks.health[netip.AddrPortFrom(rsB, 80)] = probes.HealthUp
	checks.mu.Unlock()
	h.checkChanged(probes.CheckStatus{})
	testpoll.Poll(t, 5*time.Second, 5*time.Millisecond, "the changed check to be published", func() error {
		if p := node.lastPublished(); p[webB] != "up" {
			return fmt.Errorf("published %v", p)
		}
		return nil
	})
}

func TestHealthMonitorRunCommitsWhenViewsChange(t *testing.T) {
	f := fsm.New()
	node := newFakeHealthNode(f, true)
	healthState(t, node.fakeConsensus)
	h := newHealthMonitor("d1", testLogger(t), f, node, &fakeChecks{}, &fakeHooks{}, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.run(ctx) }()
	defer func() { cancel(); <-done }()
	node.setVoters(map[string]cluster.Voter{
		"d1": {Views: views("down", webA)}, "d2": {Views: views("down", webA)}, "d3": {Views: views("up", webA)},
	})
	node.changed <- struct{}{}
	testpoll.Until(t, 5*time.Second, 5*time.Millisecond, "the leader to commit what gossip agreed on", func() bool {
		hh, _ := serverHealth(f, webA)
		return hh != nil && hh.State == "down"
	})
}
