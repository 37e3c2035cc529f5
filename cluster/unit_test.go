package cluster

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"gopkg.in/yaml.v3"
)

func TestProfilesAreValid(t *testing.T) {
	for _, name := range []string{ProfileDefault, ProfileFast, ""} {
		tm, err := Profile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := tm.Validate(); err != nil {
			t.Errorf("profile %q: %v", name, err)
		}
	}
	if _, err := Profile("slow"); err == nil || !strings.Contains(err.Error(), "timing.profile") {
		t.Fatalf("unknown profile: err = %v", err)
	}
}

func TestTimingYAMLOverride(t *testing.T) {
	var c TimingConfig
	in := "profile: fast\nheartbeat_timeout: 150ms\nelection_timeout: 1s\ngossip_suspicion_mult: 5\n"
	if err := yaml.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	got, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	fast, _ := Profile(ProfileFast)
	want := fast
	want.HeartbeatTimeout = 150 * time.Millisecond
	want.ElectionTimeout = time.Second
	want.GossipSuspicionMult = 5
	if got != want {
		t.Fatalf("resolved %+v\nwant %+v", got, want)
	}
	// Units are required: a bare number is refused rather than read as
	// nanoseconds.
	if err := yaml.Unmarshal([]byte("heartbeat_timeout: 500\n"), &c); err == nil {
		t.Fatal("bare integer duration accepted")
	}
}

func TestTimingValidationNamesFields(t *testing.T) {
	def, _ := Profile(ProfileDefault)
	cases := []struct {
		name  string
		patch Timing
		field string
	}{
		{"lease above heartbeat", Timing{LeaderLeaseTimeout: 300 * time.Millisecond}, "timing.leader_lease_timeout"},
		{"election below heartbeat", Timing{HeartbeatTimeout: 150 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond}, "timing.election_timeout"},
		{"commit not below heartbeat", Timing{CommitTimeout: 200 * time.Millisecond}, "timing.commit_timeout"},
		{"negative heartbeat", Timing{HeartbeatTimeout: -time.Second}, "timing.heartbeat_timeout"},
		{"tiny election", Timing{ElectionTimeout: time.Millisecond}, "timing.election_timeout"},
		{"probe timeout not below interval", Timing{GossipProbeTimeout: 2 * time.Second}, "timing.gossip_probe_timeout"},
		{"suspicion mult", Timing{GossipSuspicionMult: -1}, "timing.gossip_suspicion_mult"},
		{"suspicion max mult", Timing{GossipSuspicionMaxTimeoutMult: -2}, "timing.gossip_suspicion_max_timeout_mult"},
		{"gossip interval", Timing{GossipInterval: -time.Millisecond}, "timing.gossip_interval"},
		{"push pull", Timing{GossipPushPullInterval: -time.Second}, "timing.gossip_push_pull_interval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := TimingConfig{Timing: tc.patch}.Resolve()
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want one naming %s", err, tc.field)
			}
		})
	}
	// All problems are reported at once.
	bad := def.Override(Timing{LeaderLeaseTimeout: time.Second, GossipSuspicionMult: -1})
	err := bad.Validate()
	if err == nil || !strings.Contains(err.Error(), "leader_lease_timeout") || !strings.Contains(err.Error(), "gossip_suspicion_mult") {
		t.Fatalf("err = %v", err)
	}
}

func TestBounds(t *testing.T) {
	def, _ := Profile(ProfileDefault)
	b := def.Bounds(3)
	check := func(name string, got, want time.Duration) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	check("leader loss", b.LeaderLossDetected, 400*time.Millisecond)
	check("split vote", b.SplitVoteRetry, 400*time.Millisecond)
	check("partitioned leader", b.PartitionedLeaderStepsDown, 100*time.Millisecond)
	check("margin", b.LeaseMargin, 100*time.Millisecond)
	check("commit lag", b.FollowerCommitLag, 100*time.Millisecond)
	// memberlist LAN values on 3 nodes: nobody can confirm, so the minimum
	// applies: 1 s + 0.5 s + 4 s, the "about 6 s" of DESIGN.md.
	check("suspicion min", b.GossipSuspicionMin, 4*time.Second)
	check("suspicion max", b.GossipSuspicionMax, 4*time.Second)
	check("dead typical", b.GossipDeadTypical, 5500*time.Millisecond)

	fast, _ := Profile(ProfileFast)
	b = fast.Bounds(3)
	check("fast leader loss", b.LeaderLossDetected, 200*time.Millisecond)
	check("fast partitioned leader", b.PartitionedLeaderStepsDown, 50*time.Millisecond)
	check("fast suspicion min", b.GossipSuspicionMin, 600*time.Millisecond)
	check("fast suspicion max", b.GossipSuspicionMax, 3600*time.Millisecond)
	check("fast dead typical", b.GossipDeadTypical, 900*time.Millisecond)
	if b.GossipSuspicionExpectConfirmations != 1 {
		t.Errorf("fast confirmations = %d", b.GossipSuspicionExpectConfirmations)
	}
	// Suspicion grows with log10 of the cluster size.
	check("100 nodes", def.Bounds(100).GossipSuspicionMin, 8*time.Second)
	if def.Bounds(0).Members != 3 {
		t.Error("default cluster size is not 3")
	}

	var out bytes.Buffer
	if err := WriteTable(&out, ProfileDefault, def, def.Bounds(3)); err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(out.String(), "\n") {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{
		"leader_lease_timeout 100ms",
		"partitioned leader steps down (VIPs released) ≤ 100ms leader_lease_timeout",
		"failed node declared dead (gossip) ≈ 5.5s (worst 5.5s) suspected + suspicion timeout",
	} {
		if !lines[want] {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		name   string
		cfg    Config
		fields []string
	}{
		{"empty", Config{}, []string{"node_id", "data_dir", "raft_bind", "gossip_bind"}},
		{"bad id", Config{NodeID: "a b", DataDir: "/d", RaftBind: "127.0.0.1:1", GossipBind: "127.0.0.1:2"}, []string{"node_id"}},
		{"long id", Config{NodeID: strings.Repeat("a", 65), DataDir: "/d", RaftBind: "127.0.0.1:1", GossipBind: "127.0.0.1:2"}, []string{"node_id"}},
		{"wildcard bind", Config{NodeID: "a", DataDir: "/d", RaftBind: "0.0.0.0:7000", GossipBind: ":7001"}, []string{"raft_advertise"}},
		{"wildcard advertise", Config{NodeID: "a", DataDir: "/d", RaftBind: "0.0.0.0:7000", RaftAdvertise: "0.0.0.0:7000", GossipBind: ":7001"}, []string{"raft_advertise"}},
		{"bad join", Config{NodeID: "a", DataDir: "/d", RaftBind: "127.0.0.1:1", GossipBind: "127.0.0.1:2", Join: []string{"10.0.0.1"}}, []string{"join[0]"}},
		{"bad port", Config{NodeID: "a", DataDir: "/d", RaftBind: "127.0.0.1:99999", GossipBind: "127.0.0.1:2"}, []string{"raft_bind"}},
		{"negative expect", Config{NodeID: "a", DataDir: "/d", RaftBind: "127.0.0.1:1", GossipBind: "127.0.0.1:2", BootstrapExpect: -1}, []string{"bootstrap_expect"}},
		{"bad api", Config{NodeID: "a", DataDir: "/d", RaftBind: "127.0.0.1:1", GossipBind: "127.0.0.1:2", APIAddress: "nohost"}, []string{"api_address"}},
		{"timing", Config{NodeID: "a", DataDir: "/d", RaftBind: "127.0.0.1:1", GossipBind: "127.0.0.1:2", Timing: TimingConfig{Profile: "warp"}}, []string{"timing.profile"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, f := range tc.fields {
				if !strings.Contains(err.Error(), f+":") {
					t.Errorf("err = %v, want it to name %s", err, f)
				}
			}
		})
	}
	good := Config{NodeID: "d1", DataDir: "/d", RaftBind: "0.0.0.0:7000", RaftAdvertise: "10.0.0.1:7000", GossipBind: ":7001", Join: []string{"10.0.0.2:7001"}, BootstrapExpect: 3}
	tm, err := good.Validate()
	if err != nil {
		t.Fatal(err)
	}
	if def, _ := Profile(ProfileDefault); tm != def {
		t.Fatalf("timing %+v", tm)
	}
	if _, err := New(good, nil); err == nil {
		t.Fatal("New without an FSM succeeded")
	}
}

func TestNodeMetaLimit(t *testing.T) {
	m := NodeMeta{ID: "d1", RaftAddr: "10.0.0.1:7000", APIAddr: strings.Repeat("x", 600)}
	if _, err := m.encode(); err == nil {
		t.Fatal("oversized metadata accepted")
	}
	m.APIAddr = "10.0.0.1:8080"
	if _, err := m.encode(); err != nil {
		t.Fatal(err)
	}
}

func TestLogAdapters(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHclog(l, "raft")
	h.Warn("failed to contact", "server-id", "n2")
	h.Trace("too detailed")
	h.Named("snapshots").Info("snapshot complete", "index", 7)
	newStdLogger(l).Printf("[WARN] memberlist: Refuting a suspect message (from: n2)")
	newStdLogger(l).Printf("[DEBUG] memberlist: Stream connection")
	newStdLogger(l).Printf("no level here")
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="failed to contact" component=raft server-id=n2`,
		`level=INFO msg="snapshot complete" component=raft subsystem=raft.snapshots index=7`,
		`level=WARN msg="memberlist: Refuting a suspect message (from: n2)"`,
		`level=DEBUG msg="memberlist: Stream connection"`,
		`level=INFO msg="no level here"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "too detailed") {
		t.Error("trace logged at debug level")
	}
	if !h.IsDebug() || h.IsTrace() || h.GetLevel() != hclog.Debug {
		t.Error("levels not derived from the slog handler")
	}
}

// scriptedRaft plays raft for the leadership loop: the test decides the
// state, the term and when each barrier completes.
type scriptedRaft struct {
	mu       sync.Mutex
	state    raft.RaftState
	term     uint64
	barriers chan chan error
}

type scriptedFuture struct{ done chan error }

func (f scriptedFuture) Error() error { return <-f.done }

func (s *scriptedRaft) Barrier(time.Duration) raft.Future {
	done := make(chan error, 1)
	s.barriers <- done
	return scriptedFuture{done}
}

func (s *scriptedRaft) set(state raft.RaftState, term uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.term = state, term
}

func (s *scriptedRaft) State() raft.RaftState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *scriptedRaft) CurrentTerm() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.term
}

func (s *scriptedRaft) AppliedIndex() uint64 { return 42 }

func TestLeadershipEvents(t *testing.T) {
	sr := &scriptedRaft{barriers: make(chan chan error)}
	n := &Node{
		log:      newLogSink(t).logger(),
		timing:   Timing{HeartbeatTimeout: 20 * time.Millisecond, ElectionTimeout: 20 * time.Millisecond},
		lr:       sr,
		notifyCh: make(chan bool, 16),
		events:   make(chan LeadershipEvent),
		raftDown: make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go n.leadershipLoop()
	barrier := func() chan error {
		t.Helper()
		select {
		case b := <-sr.barriers:
			return b
		case <-time.After(5 * time.Second):
			t.Fatal("no barrier requested")
			return nil
		}
	}
	next := func() LeadershipEvent {
		t.Helper()
		select {
		case ev, ok := <-n.events:
			if !ok {
				t.Fatal("events closed")
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no leadership event")
			return LeadershipEvent{}
		}
	}

	// Leadership lost while the barrier is pending: never reported.
	sr.set(raft.Leader, 5)
	n.notifyCh <- true
	b := barrier()
	sr.set(raft.Follower, 5)
	n.notifyCh <- false
	b <- nil

	// The next leadership is reported only after its barrier.
	sr.set(raft.Leader, 6)
	n.notifyCh <- true
	b = barrier()
	select {
	case ev := <-n.events:
		t.Fatalf("event %+v before the barrier completed", ev)
	default:
	}
	if n.ready.Load() {
		t.Fatal("ready before the barrier completed")
	}
	b <- nil
	if ev := next(); ev != (LeadershipEvent{Leader: true, Term: 6, Index: 42}) {
		t.Fatalf("event %+v, want leader in term 6 (not the stale term 5)", ev)
	}
	if !n.ready.Load() {
		t.Fatal("not ready after the barrier")
	}
	sr.set(raft.Follower, 7)
	n.notifyCh <- false
	if ev := next(); ev.Leader || ev.Term != 6 {
		t.Fatalf("event %+v, want lost leadership of term 6", ev)
	}

	// A failed barrier is retried while leadership lasts.
	sr.set(raft.Leader, 8)
	n.notifyCh <- true
	barrier() <- errors.New("disk hiccup")
	barrier() <- nil
	if ev := next(); !ev.Leader || ev.Term != 8 {
		t.Fatalf("event %+v, want leader in term 8", ev)
	}

	// Events queue while nobody reads, and a leader shutting down reports
	// the loss before the channel closes.
	sr.set(raft.Follower, 8)
	n.notifyCh <- false
	sr.set(raft.Leader, 9)
	n.notifyCh <- true
	barrier() <- nil
	deadline := make(chan struct{})
	n.flushDone = deadline
	// Let the loop queue the term-9 event before raft "shuts down".
	eventually(t, 5*time.Second, "term 9 leadership established", func() error {
		if !n.ready.Load() {
			return errors.New("not ready")
		}
		return nil
	})
	close(n.raftDown)
	var got []LeadershipEvent
	for ev := range n.events {
		got = append(got, ev)
	}
	want := []LeadershipEvent{{false, 8, 42}, {true, 9, 42}, {false, 9, 42}}
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %+v, want %+v", got, want)
		}
	}
	close(deadline)
	<-n.loopDone
}

func TestBootstrapRules(t *testing.T) {
	type member struct {
		name, state string
		expect      int
		hasState    bool
	}
	alive := func(name string, expect int) member { return member{name, GossipAlive, expect, false} }
	cases := []struct {
		name    string
		members []member
		want    []string // voter IDs, nil: must not bootstrap
		why     string
	}{
		{"exactly expect", []member{alive("c", 3), alive("a", 3), alive("b", 3)}, []string{"a", "b", "c"}, ""},
		{"too few", []member{alive("a", 3), alive("b", 3)}, nil, "2 of 3"},
		{"too many", []member{alive("a", 3), alive("b", 3), alive("c", 3), alive("d", 3)}, nil, "refusing to guess"},
		{"disagreeing expect", []member{alive("a", 3), alive("b", 3), alive("c", 5)}, nil, "bootstrap_expect 5"},
		{"standby members ignored", []member{alive("a", 3), alive("b", 3), alive("c", 3), alive("d", 0)}, []string{"a", "b", "c"}, ""},
		{"dead members not counted", []member{alive("a", 3), alive("b", 3), {"c", GossipDead, 3, false}}, nil, "2 of 3"},
		{"existing cluster", []member{alive("a", 3), alive("b", 3), alive("c", 3), {"z", GossipDead, 3, true}}, nil, "already has raft state"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			net := newFakeGossipNet()
			for _, m := range tc.members {
				g := net.join(m.name)
				g.meta = NodeMeta{ID: m.name, RaftAddr: "inmem-" + m.name, BootstrapExpect: m.expect, HasState: m.hasState}
				g.state = m.state
			}
			n := &Node{cfg: Config{BootstrapExpect: 3}, id: "a", gossip: net.nodes["a"]}
			servers, why := n.bootstrapServers()
			var got []string
			for _, s := range servers {
				if s.Suffrage != raft.Voter || string(s.Address) != "inmem-"+string(s.ID) {
					t.Errorf("server %+v", s)
				}
				got = append(got, string(s.ID))
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("voters %v (%s), want %v", got, why, tc.want)
			}
			if !strings.Contains(why, tc.why) {
				t.Fatalf("reason %q, want it to mention %q", why, tc.why)
			}
		})
	}
}
