package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

func TestNodeMetaRoundTripAndFit(t *testing.T) {
	m := NodeMeta{
		ID: "d1", RaftAddr: "10.0.0.1:7000", APIAddr: "10.0.0.1:8080", Version: "1.2.3", BootstrapExpect: 3,
		HasState: true, Leaving: true, PingScore: 2, PingMax: 3, Warning: "late peers: d2", Failback: "0123abcd",
	}
	b, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	var back NodeMeta
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != m {
		t.Fatalf("round trip: %+v, want %+v", back, m)
	}

	// The longest identifiers and addresses a director can have, with a
	// warning far over the limit in multi-byte characters: the warning is
	// cut, at a character boundary, until the whole fits.
	big := NodeMeta{
		ID:       strings.Repeat("d", maxNodeIDLen),
		RaftAddr: "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65535", APIAddr: "[fd00:1234:5678:9abc:def0:1234:5678:9abc]:65535",
		Version: strings.Repeat("v", 40), BootstrapExpect: 99, HasState: true, Leaving: true,
		PingScore: 100, PingMax: 100, Failback: "0123abcd", Warning: strings.Repeat("ü", 1000),
	}
	fitted, err := big.fit()
	if err != nil {
		t.Fatal(err)
	}
	b, err = fitted.encode()
	if err != nil || len(b) > memberlist.MetaMaxSize {
		t.Fatalf("fitted metadata is %d bytes (%v)", len(b), err)
	}
	if !utf8.ValidString(fitted.Warning) || !strings.HasSuffix(fitted.Warning, "…") || len(fitted.Warning) > maxWarningLen || len(fitted.Warning) < 50 {
		t.Fatalf("warning cut to %d bytes: %q", len(fitted.Warning), fitted.Warning)
	}
	short := NodeMeta{ID: "d1", Warning: "fine"}
	if f, err := short.fit(); err != nil || f != short {
		t.Fatalf("short metadata changed: %+v %v", f, err)
	}
	// Without a warning to cut, oversized metadata is refused.
	big.Warning, big.APIAddr = "", strings.Repeat("x", 600)
	if _, err := big.fit(); err == nil {
		t.Fatal("oversized metadata accepted")
	}
	if got := cutWarning("abc", 2); got != "" {
		t.Fatalf("cut to less than the ellipsis: %q", got)
	}
}

func TestScoreLess(t *testing.T) {
	cases := []struct {
		a, b Score
		less bool
	}{
		{Score{1, 2}, Score{2, 2}, true},
		{Score{2, 2}, Score{1, 2}, false},
		{Score{2, 2}, Score{2, 2}, false},
		{Score{1, 2}, Score{2, 4}, false}, // the same share
		{Score{2, 3}, Score{3, 4}, true},
		{Score{0, 1}, Score{1, 3}, true},
	}
	for _, tc := range cases {
		if got := tc.a.Less(tc.b); got != tc.less {
			t.Errorf("%v.Less(%v) = %t, want %t", tc.a, tc.b, got, tc.less)
		}
	}
}

func TestHAConfigValidation(t *testing.T) {
	base := func() Config {
		return Config{NodeID: "a", DataDir: "/d", RaftBind: "127.0.0.1:1", GossipBind: "127.0.0.1:2"}
	}
	cases := []struct {
		name  string
		set   func(*Config)
		field string
	}{
		{"negative cleanup", func(c *Config) { c.DeadDirectorCleanup = -time.Second }, "dead_director_cleanup"},
		{"tiny cleanup", func(c *Config) { c.DeadDirectorCleanup = 5 * time.Millisecond }, "dead_director_cleanup"},
		{"negative warn", func(c *Config) { c.WarnTime = -1 }, "warn_time"},
		{"warn below heartbeat", func(c *Config) { c.WarnTime = 100 * time.Millisecond }, "warn_time"},
		{"failback without preferred", func(c *Config) { c.AutoFailback = true }, "preferred"},
		{"bad preferred id", func(c *Config) { c.Preferred = []string{"ok", "not ok"} }, "preferred[1]"},
		{"duplicate preferred", func(c *Config) { c.Preferred = []string{"a", "b", "a"} }, "preferred[2]"},
		{"negative hold", func(c *Config) { c.FailbackHold = -time.Second }, "failback_hold"},
		{"hold below heartbeat", func(c *Config) { c.FailbackHold = time.Millisecond }, "failback_hold"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.set(&c)
			_, err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("err = %v, want it to name %s", err, tc.field)
			}
		})
	}
	c := base()
	yes := true
	c.AutoJoin, c.DeadDirectorCleanup, c.WarnTime = &yes, 10*time.Minute, time.Second
	c.AutoFailback, c.Preferred, c.FailbackHold = true, []string{"a", "b"}, 30*time.Second
	tm, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	// Defaults.
	d := base()
	if got := d.warnTime(tm); got != 2*tm.HeartbeatTimeout {
		t.Errorf("default warn_time %s, want 2 × heartbeat_timeout", got)
	}
	if got := d.failbackHold(); got != defaultFailbackHold {
		t.Errorf("default failback_hold %s", got)
	}
	if d.failbackKey() != "" {
		t.Error("fingerprint announced with auto_failback off")
	}
	other := c
	other.Preferred = []string{"b", "a"}
	if k1, k2 := c.failbackKey(), other.failbackKey(); k1 == "" || k1 == k2 {
		t.Errorf("fingerprints %q and %q of different preferred lists", k1, k2)
	}
}

// memberOf returns node id as seen from tn.
func memberOf(tn *testNode, id string) (Member, error) {
	ms, err := tn.n.Members()
	if err != nil {
		return Member{}, err
	}
	i := slices.IndexFunc(ms, func(m Member) bool { return m.ID == id })
	if i < 0 {
		return Member{}, fmt.Errorf("%s does not list %s", tn.id, id)
	}
	return ms[i], nil
}

func TestPingScoreAndWarningGossiped(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.startN(3)
	c.leader()
	n1, n2 := c.node("n1"), c.node("n2")

	if err := n1.n.SetPingScore(4, 3); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("score above max: %v", err)
	}
	if err := n1.n.SetPingScore(-1, 3); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("negative score: %v", err)
	}
	if err := n1.n.SetPingScore(2, 3); err != nil {
		t.Fatal(err)
	}
	n1.n.SetWarning("ping group dmz unreachable")
	// The setter's own view is current at once.
	if got := n1.n.PeerScores()["n1"]; got != (Score{2, 3}) {
		t.Fatalf("own score %v", got)
	}
	eventually(t, 5*time.Second, "score and warning gossiped", func() error {
		m, err := memberOf(n2, "n1")
		if err != nil {
			return err
		}
		if m.PingScore != 2 || m.PingMax != 3 || m.Warning != "ping group dmz unreachable" {
			return fmt.Errorf("n2 sees %+v", m)
		}
		if got := n2.n.PeerScores(); len(got) != 1 || got["n1"] != (Score{2, 3}) {
			return fmt.Errorf("n2 PeerScores %v", got)
		}
		return nil
	})

	// A burst of updates is coalesced into a few announcements that end
	// with the last values.
	_, before := c.gossip.metaOf("n1")
	start := time.Now()
	for i := range 200 {
		if err := n1.n.SetPingScore(i%4, 3); err != nil {
			t.Fatal(err)
		}
	}
	if err := n1.n.SetPingScore(3, 3); err != nil {
		t.Fatal(err)
	}
	n1.n.SetWarning("")
	var sets int
	eventually(t, 5*time.Second, "burst announced", func() error {
		var m NodeMeta
		m, sets = c.gossip.metaOf("n1")
		if m.PingScore != 3 || m.PingMax != 3 || m.Warning != "" {
			return fmt.Errorf("announced %+v", m)
		}
		return nil
	})
	// At most one announcement per gossip interval, plus the one at the
	// start of the burst.
	limit := 2 + int(time.Since(start)/n1.n.timing.GossipInterval)
	if got := sets - before; got > limit {
		t.Fatalf("%d announcements for a burst of 202 updates, want at most %d", got, limit)
	}
	if got := n2.n.PeerScores()["n1"]; got != (Score{3, 3}) {
		t.Fatalf("n2 sees n1's score %v", got)
	}
}

// waitVoters waits until tn's configuration has exactly the voters want.
func waitVoters(t *testing.T, tn *testNode, within time.Duration, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	eventually(t, within, "voters "+strings.Join(want, ","), func() error {
		if got := tn.voters(); !slices.Equal(got, want) {
			return fmt.Errorf("%s voters = %v", tn.id, got)
		}
		return nil
	})
}

// waitLog waits until some record contains all of subs.
func (c *testCluster) waitLog(within time.Duration, subs ...string) {
	c.t.Helper()
	c.logs.wait(c.t, within, subs...)
}

func TestAutoJoin(t *testing.T) {
	t.Parallel()
	t.Run("default fills up to bootstrap_expect", func(t *testing.T) {
		t.Parallel()
		c := newTestCluster(t)
		c.startN(3)
		l := c.leader()
		removed := c.others(l)[0]
		ctx := ctxT(t, 10*time.Second)
		if err := l.n.RemoveServer(ctx, removed.id, false); err != nil {
			t.Fatal(err)
		}
		// The removed director keeps running with its raft state: it is
		// not re-added behind the operator's back.
		c.waitLog(5*time.Second, "not added to raft automatically", "member="+removed.id, "already has raft state")
		// A new director takes the free place.
		stay := c.others(l)[1]
		n4 := c.start("n4", 0, "")
		waitVoters(t, l, 10*time.Second, l.id, stay.id, n4.id)
		if c.logs.count("auto-join: adding director as a voter", "member=n4", "bootstrap_expect 3") != 1 {
			t.Fatal("n4 not added by the bootstrap_expect rule")
		}
		// The cluster is at bootstrap_expect: the next one waits for an
		// operator.
		n5 := c.start("n5", 0, "")
		c.waitLog(5*time.Second, "auto_join does not allow adding it", "member=n5")
		if got := l.voters(); !slices.Equal(got, sortedIDs(l, stay, n4)) {
			t.Fatalf("voters %v", got)
		}
		if err := l.n.AddVoter(ctx, "n5", ""); err != nil {
			t.Fatalf("operator adds n5: %v", err)
		}
		members := []*testNode{l, stay, n4, n5}
		idx := c.propose(addVIP(1), members...)
		c.converged(idx, members...)
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		c := newTestCluster(t)
		no := false
		c.configure = func(cfg *Config) { cfg.AutoJoin = &no }
		c.startN(3)
		l := c.leader()
		f := c.others(l)[0]
		ctx := ctxT(t, 10*time.Second)
		if err := l.n.RemoveServer(ctx, f.id, false); err != nil {
			t.Fatal(err)
		}
		c.stop(f)
		// Fewer voters than bootstrap_expect, but auto_join is off.
		c.start("n4", 0, "")
		c.waitLog(5*time.Second, "auto_join does not allow adding it", "member=n4", "auto_join is false")
		if got := l.voters(); len(got) != 2 || slices.Contains(got, "n4") {
			t.Fatalf("voters %v", got)
		}
	})
	t.Run("on adds concurrent joiners one at a time", func(t *testing.T) {
		t.Parallel()
		c := newTestCluster(t)
		yes := true
		c.configure = func(cfg *Config) { cfg.AutoJoin = &yes }
		c.startN(3)
		l := c.leader()
		for _, id := range []string{"n4", "n5", "n6"} {
			c.start(id, 0, "")
		}
		waitVoters(t, l, 20*time.Second, "n1", "n2", "n3", "n4", "n5", "n6")
		eventually(t, 5*time.Second, "additions reported", func() error {
			if n := c.logs.count("auto-join: director is a voter"); n < 3 {
				return fmt.Errorf("%d reported", n)
			}
			return nil
		})
		// The additions ran strictly one after the other.
		var seq []string
		for _, line := range c.logs.snapshot() {
			switch {
			case strings.Contains(line, "auto-join: adding director"):
				seq = append(seq, "add")
			case strings.Contains(line, "auto-join: director is a voter"):
				seq = append(seq, "done")
			}
		}
		if want := []string{"add", "done", "add", "done", "add", "done"}; !slices.Equal(seq, want) {
			t.Fatalf("auto-join sequence %v, want %v", seq, want)
		}
		if n := c.logs.count("cannot add director"); n != 0 {
			t.Fatalf("%d failed additions", n)
		}
		idx := c.propose(addVIP(1))
		c.converged(idx)
	})
}

func TestDeadDirectorCleanup(t *testing.T) {
	t.Parallel()
	const period = time.Second
	t.Run("on", func(t *testing.T) {
		t.Parallel()
		c := newTestCluster(t)
		c.configure = func(cfg *Config) { cfg.DeadDirectorCleanup = period }
		c.startN(5)
		l := c.leader()
		fs := c.others(l)
		alive, dead1, dead2, dead3 := fs[0], fs[1], fs[2], fs[3]
		// A director cut off from raft but alive in gossip is partitioned,
		// not dead: it must survive although it is silent longer than
		// the dead one below.
		c.partition(alive)
		stopped := time.Now()
		c.stop(dead1)
		waitVoters(t, l, 10*time.Second, l.id, alive.id, dead2.id, dead3.id)
		if took := time.Since(stopped); took < period {
			t.Fatalf("removed after %s, before the %s period", took, period)
		}
		passes := l.n.reconcilePasses.Load()
		eventually(t, 5*time.Second, "two more passes", func() error {
			if l.n.reconcilePasses.Load() < passes+2 {
				return errors.New("waiting")
			}
			return nil
		})
		if !slices.Contains(l.voters(), alive.id) || c.logs.count("down in gossip", "member="+alive.id) != 0 {
			t.Fatalf("partitioned but alive director treated as dead; voters %v", l.voters())
		}
		c.heal()

		// 4 → 3 voters is allowed; 3 → 2 is below the floor.
		c.stop(dead2)
		waitVoters(t, l, 10*time.Second, l.id, alive.id, dead3.id)
		c.stop(dead3)
		c.waitLog(10*time.Second, "never leaves fewer voters than its floor", "member="+dead3.id)
		if got := l.voters(); len(got) != 3 || !slices.Contains(got, dead3.id) {
			t.Fatalf("voters %v", got)
		}
		idx := c.propose(addVIP(1), l, alive)
		c.converged(idx, l, alive)
	})
	t.Run("down in gossip but answering raft", func(t *testing.T) {
		t.Parallel()
		c := newTestCluster(t)
		c.configure = func(cfg *Config) { cfg.DeadDirectorCleanup = period }
		c.startN(4)
		l := c.leader()
		fs := c.others(l)
		gossipOnly, dead := fs[0], fs[1]
		// Gossip loses gossipOnly (say, UDP is filtered) while raft still
		// reaches it; dead is down for real from the same moment.
		c.gossip.setState(gossipOnly.id, GossipDead)
		c.stop(dead)
		waitVoters(t, l, 10*time.Second, l.id, gossipOnly.id, fs[2].id)
		c.waitLog(5*time.Second, "answers raft: its removal is postponed", "member="+gossipOnly.id)
		if n := c.logs.count("removing director from raft", "member="+gossipOnly.id); n != 0 {
			t.Fatalf("director that answers raft removed")
		}
	})
	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		off, on := newTestCluster(t), newTestCluster(t)
		on.configure = func(cfg *Config) { cfg.DeadDirectorCleanup = period }
		off.startN(4)
		on.startN(4)
		offL, onL := off.leader(), on.leader()
		off.stop(off.others(offL)[0])
		on.stop(on.others(onL)[0])
		// Once the cluster with the cleanup removed its dead director,
		// the one without has had as long, and more passes.
		eventually(t, 10*time.Second, "cleanup on removes", func() error {
			if got := onL.voters(); len(got) != 3 {
				return fmt.Errorf("voters %v", got)
			}
			return nil
		})
		passes := offL.n.reconcilePasses.Load()
		eventually(t, 5*time.Second, "two more passes", func() error {
			if offL.n.reconcilePasses.Load() < passes+2 {
				return errors.New("waiting")
			}
			return nil
		})
		if got := offL.voters(); len(got) != 4 {
			t.Fatalf("cleanup off removed a director: voters %v", got)
		}
		if n := off.logs.count("dead_director_cleanup"); n != 0 {
			t.Fatalf("cleanup off logged %d cleanup records", n)
		}
	})
}

func TestWarnTime(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	// Well above the heartbeat timeout, so that -race scheduling on two
	// cores never makes a connected follower late.
	c.configure = func(cfg *Config) { cfg.WarnTime = 300 * time.Millisecond }
	c.startN(3)
	l := c.leader()
	fs := c.others(l)
	cut, ok := fs[0], fs[1]
	if got := ok.n.LatePeers(); got != nil {
		t.Fatalf("follower LatePeers %v", got)
	}
	term := l.n.Term()
	c.partition(cut)
	eventually(t, 5*time.Second, "late peer reported", func() error {
		if got := l.n.LatePeers(); !slices.Equal(got, []string{cut.id}) {
			return fmt.Errorf("LatePeers %v", got)
		}
		m, err := memberOf(ok, l.id)
		if err != nil {
			return err
		}
		if m.Warning != "late peers: "+cut.id {
			return fmt.Errorf("leader's gossiped warning %q", m.Warning)
		}
		return nil
	})
	// The episode lasts many checks but warns once.
	passes := l.n.watchPasses.Load()
	eventually(t, 5*time.Second, "more checks", func() error {
		if l.n.watchPasses.Load() < passes+5 {
			return errors.New("waiting")
		}
		return nil
	})
	c.heal()
	eventually(t, 5*time.Second, "late peer recovered", func() error {
		if got := l.n.LatePeers(); len(got) != 0 {
			return fmt.Errorf("LatePeers %v", got)
		}
		m, err := memberOf(ok, l.id)
		if err != nil {
			return err
		}
		if m.Warning != "" {
			return fmt.Errorf("leader's gossiped warning %q", m.Warning)
		}
		return nil
	})
	if l.n.Term() != term {
		t.Fatalf("leadership changed (term %d → %d): the test needs one leadership", term, l.n.Term())
	}
	if n := c.logs.count("late peer: no answer", "member="+cut.id); n != 1 {
		t.Errorf("%d late-peer warnings for %s, want 1", n, cut.id)
	}
	if n := c.logs.count("late peer answers again", "member="+cut.id); n != 1 {
		t.Errorf("%d recoveries for %s, want 1", n, cut.id)
	}
	if n := c.logs.count("late peer", "member="+ok.id); n != 0 {
		t.Errorf("%d late-peer records for the connected %s", n, ok.id)
	}
}

func TestContactTransportTracksMatchIndex(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.startN(3)
	var idx uint64
	for i := range 40 {
		idx = c.propose(addVIP(i))
	}
	l := c.leader()
	term := l.n.Term()
	eventually(t, 5*time.Second, "followers' match index", func() error {
		for _, f := range c.others(l) {
			if m := l.n.trans.matchIndex(raft.ServerID(f.id), term); m < idx || m > l.n.raft.LastIndex() {
				return fmt.Errorf("%s match %d, want %d..%d", f.id, m, idx, l.n.raft.LastIndex())
			}
		}
		return nil
	})
	if m := l.n.trans.matchIndex(raft.ServerID(c.others(l)[0].id), term+1); m != 0 {
		t.Fatalf("match %d for a term without replication", m)
	}
	if c.logs.count("pipelining replication") == 0 {
		t.Fatal("replication never pipelined: the pipeline path is untested")
	}
}

// ensureLeader makes id the leader.
func (c *testCluster) ensureLeader(id string) *testNode {
	c.t.Helper()
	eventually(c.t, 10*time.Second, id+" leads", func() error {
		l := c.leader()
		if l.id == id {
			return nil
		}
		return l.n.TransferLeadership(ctxT(c.t, 5*time.Second), id)
	})
	return c.node(id)
}

func TestAutoFailback(t *testing.T) {
	t.Parallel()
	const hold = 600 * time.Millisecond
	failbackCfg := func(on bool) func(*Config) {
		return func(cfg *Config) {
			cfg.AutoFailback, cfg.Preferred, cfg.FailbackHold = on, []string{"n1"}, hold
		}
	}
	t.Run("preferred director returns", func(t *testing.T) {
		t.Parallel()
		c := newTestCluster(t)
		c.onDisk = true
		c.failback = true
		c.configure = failbackCfg(true)
		c.startN(3)
		// Whoever wins the first election hands over to n1 after the hold.
		eventually(t, 10*time.Second, "n1 leads", func() error {
			if l := c.leader(); l.id != "n1" {
				return fmt.Errorf("%s leads", l.id)
			}
			return nil
		})
		n1 := c.node("n1")
		dir := n1.dir
		c.stop(n1)
		stand := c.leader()
		c.propose(addVIP(1))
		back := time.Now()
		c.start("n1", 3, dir)
		eventually(t, 10*time.Second, "leadership fails back to n1", func() error {
			if l := c.leader(); l.id != "n1" {
				return fmt.Errorf("%s leads", l.id)
			}
			return nil
		})
		reqs := stand.failbackRequests()
		if len(reqs) == 0 {
			t.Fatalf("%s made no failback request", stand.id)
		}
		last := reqs[len(reqs)-1]
		if last.req.To != "n1" || last.req.HealthyFor < hold {
			t.Fatalf("request %+v", last.req)
		}
		if early := last.at.Sub(back); early < hold {
			t.Fatalf("failback requested %s after n1 returned, before the %s hold", early, hold)
		}
		idx := c.propose(addVIP(2))
		c.converged(idx)
	})
	t.Run("flapping preferred director", func(t *testing.T) {
		t.Parallel()
		c := newTestCluster(t)
		c.failback = true
		c.configure = failbackCfg(true)
		c.startN(3)
		l := c.ensureLeader("n2")
		// n1 flaps in gossip faster than the hold time.
		stop := make(chan struct{})
		flapped := make(chan struct{})
		go func() {
			defer close(flapped)
			tick := time.NewTicker(hold / 4)
			defer tick.Stop()
			state := GossipDead
			for {
				c.gossip.setState("n1", state)
				select {
				case <-stop:
					c.gossip.setState("n1", GossipAlive)
					return
				case <-tick.C:
				}
				if state == GossipDead {
					state = GossipAlive
				} else {
					state = GossipDead
				}
			}
		}()
		c.waitLog(5*time.Second, "preferred director faltered", "member=n1")
		// Three hold times' worth of checks.
		passes := l.n.watchPasses.Load()
		need := passes + uint64(3*hold/l.n.watchInterval())
		eventually(t, 20*time.Second, "checks during flapping", func() error {
			if l.n.watchPasses.Load() < need {
				return errors.New("waiting")
			}
			return nil
		})
		close(stop)
		<-flapped
		if reqs := l.failbackRequests(); len(reqs) != 0 {
			t.Fatalf("failback requested while n1 flapped: %+v", reqs)
		}
		if got := c.leader(); got != l {
			t.Fatalf("%s leads", got.id)
		}
		// Once n1 holds still, leadership does fail back.
		eventually(t, 10*time.Second, "n1 leads", func() error {
			if l := c.leader(); l.id != "n1" {
				return fmt.Errorf("%s leads", l.id)
			}
			return nil
		})
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		c := newTestCluster(t)
		c.failback = true
		c.configure = failbackCfg(false)
		c.startN(3)
		l := c.ensureLeader("n2")
		passes := l.n.watchPasses.Load()
		need := passes + uint64(3*hold/l.n.watchInterval())
		eventually(t, 20*time.Second, "checks", func() error {
			if l.n.watchPasses.Load() < need {
				return errors.New("waiting")
			}
			return nil
		})
		if reqs := l.failbackRequests(); len(reqs) != 0 {
			t.Fatalf("failback requested with auto_failback off: %+v", reqs)
		}
		if got := c.leader(); got != l {
			t.Fatalf("%s leads", got.id)
		}
		if c.logs.count("auto_failback") != 0 {
			t.Fatal("auto_failback logged while off")
		}
	})
}

// blockingTransport answers AppendEntries only when released.
type blockingTransport struct {
	*raft.InmemTransport
	entered, release chan struct{}
}

func (b *blockingTransport) AppendEntries(_ raft.ServerID, _ raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	b.entered <- struct{}{}
	<-b.release
	resp.Term, resp.Success = args.Term, true
	return nil
}

// Contact is dated when the request left, so an answer that arrives after
// a partition began is no evidence of reachability after it.
func TestContactDatedAtSend(t *testing.T) {
	_, inmem := raft.NewInmemTransport("inmem-a")
	bt := &blockingTransport{InmemTransport: inmem, entered: make(chan struct{}), release: make(chan struct{})}
	ct, err := newContactTransport(bt)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() {
		done <- ct.AppendEntries("b", "inmem-b", &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 7}, &raft.AppendEntriesResponse{})
	}()
	<-bt.entered
	inFlight := time.Now()
	close(bt.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c := ct.lastContact("b"); c.IsZero() || !c.Before(inFlight) {
		t.Fatalf("contact %v, want the send time, before %v", c, inFlight)
	}
	if m := ct.matchIndex("b", 3); m != 7 {
		t.Fatalf("match %d, want 7", m)
	}
}
