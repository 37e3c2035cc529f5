package cluster

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/directorate/directorate/fsm"
)

func TestElectionAndReplication(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d-nodes", size), func(t *testing.T) {
			t.Parallel()
			c := newTestCluster(t)
			c.startN(size)
			l := c.leader()
			eventually(t, 5*time.Second, "configuration replicated", func() error {
				for _, tn := range c.running() {
					if got := tn.voters(); len(got) != size {
						return fmt.Errorf("%s voters = %v, want %d", tn.id, got, size)
					}
				}
				return nil
			})
			var idx uint64
			for i := range 5 {
				idx = c.propose(addVIP(i))
			}
			c.converged(idx)
			for _, tn := range c.running() {
				if n := vipCount(tn.f); n != 5 {
					t.Errorf("%s has %d VIPs, want 5", tn.id, n)
				}
			}

			// The FSM's refusal comes back unchanged.
			ctx := ctxT(t, 5*time.Second)
			ridx, err := l.n.Propose(ctx, addVIP(0))
			var fe *fsm.FieldError
			if !errors.Is(err, fsm.ErrConflict) || !errors.As(err, &fe) {
				t.Fatalf("duplicate VIP: err = %v, want an fsm.FieldError wrapping fsm.ErrConflict", err)
			}
			if ridx <= idx {
				t.Errorf("refused command index %d, want > %d", ridx, idx)
			}

			// A follower refuses, naming the leader.
			f := c.others(l)[0]
			if _, err := f.n.Propose(ctx, addVIP(99)); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("propose on follower: err = %v, want ErrNotLeader", err)
			}
			if id, api, err := f.n.LeaderAPIAddress(); err != nil || id != l.id || api != "api-"+l.id+":8080" {
				t.Fatalf("LeaderAPIAddress on follower = %q, %q, %v", id, api, err)
			}
			if err := f.n.VerifyLeader(ctx); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("VerifyLeader on follower: err = %v", err)
			}
			if err := l.n.VerifyLeader(ctx); err != nil {
				t.Fatalf("VerifyLeader on leader: %v", err)
			}
			if err := l.n.Barrier(ctx); err != nil {
				t.Fatalf("Barrier on leader: %v", err)
			}

			// Exactly one "became leader" event so far, on the leader.
			for _, tn := range c.running() {
				evs := tn.leadership()
				if tn == l {
					if len(evs) != 1 || !evs[0].Leader || evs[0].Term != l.n.Term() {
						t.Errorf("leader events = %+v, want one Leader event in term %d", evs, l.n.Term())
					}
				} else if len(evs) != 0 {
					t.Errorf("%s events = %+v, want none", tn.id, evs)
				}
			}

			ms, err := f.n.Members()
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != size {
				t.Fatalf("members = %+v", ms)
			}
			for _, m := range ms {
				if m.Suffrage != "Voter" || m.Gossip != GossipAlive || m.APIAddress != "api-"+m.ID+":8080" || m.Leader != (m.ID == l.id) {
					t.Errorf("member %+v", m)
				}
			}
		})
	}
}

func TestPartitionedLeader(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d-nodes", size), func(t *testing.T) {
			t.Parallel()
			c := newTestCluster(t)
			c.startN(size)
			old := c.leader()
			oldTerm := old.n.Term()
			c.propose(addVIP(1))

			c.partition(old)
			// The old leader notices it lost its quorum and says so.
			eventually(t, 5*time.Second, "old leader reports lost leadership", func() error {
				evs := old.leadership()
				if len(evs) == 0 || evs[len(evs)-1].Leader {
					return fmt.Errorf("events %+v", evs)
				}
				if old.n.IsLeader() {
					return errors.New("still IsLeader")
				}
				return nil
			})
			if evs := old.leadership(); len(evs) != 2 || evs[1].Term != oldTerm {
				t.Fatalf("old leader events = %+v, want became+lost in term %d", evs, oldTerm)
			}
			rest := c.others(old)
			nl := c.leader(rest...)
			if nl.n.Term() <= oldTerm {
				t.Fatalf("new term %d not after %d", nl.n.Term(), oldTerm)
			}
			idx := c.propose(addVIP(2), rest...)
			c.converged(idx, rest...)
			ctx := ctxT(t, time.Second)
			if _, err := old.n.Propose(ctx, addVIP(3)); !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrNotLeader) {
				t.Fatalf("partitioned old leader: propose err = %v, want ErrNoLeader or ErrNotLeader", err)
			}
			if _, _, err := old.n.LeaderAPIAddress(); !errors.Is(err, ErrNoLeader) {
				t.Fatalf("partitioned old leader: LeaderAPIAddress err = %v, want ErrNoLeader", err)
			}
			if _, err := old.n.WaitForLeader(ctxT(t, 100*time.Millisecond)); !errors.Is(err, ErrNoLeader) {
				t.Fatalf("partitioned old leader: WaitForLeader err = %v, want ErrNoLeader", err)
			}
			if vipCount(old.f) != 1 {
				t.Fatalf("partitioned node applied the majority's writes")
			}

			c.heal()
			c.leader()
			idx = c.propose(addVIP(4))
			c.converged(idx)
			if n := vipCount(old.f); n != 3 {
				t.Fatalf("healed node has %d VIPs, want 3", n)
			}
		})
	}
}

func TestRemoveAndReAdd(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	// A short trailing log makes the re-added node catch up by snapshot.
	c.trailingLogs = 1
	c.startN(3)
	l := c.leader()
	for i := range 3 {
		c.propose(addVIP(i))
	}
	victim := c.others(l)[0]
	ctx := ctxT(t, 10*time.Second)
	if err := l.n.RemoveServer(ctx, victim.id, false); err != nil {
		t.Fatalf("remove %s: %v", victim.id, err)
	}
	remaining := c.others(victim)
	// The removal may commit with the removed node's acknowledgement (the
	// old configuration's majority), so the other follower may learn of
	// it a moment later.
	eventually(t, 5*time.Second, "removal replicated", func() error {
		for _, tn := range remaining {
			if got := tn.voters(); len(got) != 2 || slices.Contains(got, victim.id) {
				return fmt.Errorf("%s voters = %v", tn.id, got)
			}
		}
		return nil
	})
	// The removed node no longer counts: cut it off entirely and the two
	// others still commit; it sees none of it and does not disturb them.
	c.partition(victim)
	termBefore := l.n.Term()
	idx := c.propose(addVIP(10), remaining...)
	c.converged(idx, remaining...)
	if hasVIP(victim.f, "vip-10") {
		t.Fatal("removed node applied a later write")
	}
	if err := l.n.RemoveServer(ctx, victim.id, false); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("second removal: err = %v, want ErrUnknownMember", err)
	}
	c.stop(victim)

	// Snapshot and truncate the log, then re-add the node with a fresh store.
	if err := l.n.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 23; i++ {
		idx = c.propose(addVIP(i))
	}
	if err := l.n.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := c.start(victim.id, 0, "")
	if err := l.n.AddVoter(ctx, fresh.id, fresh.n.RaftAddress()); err != nil {
		t.Fatalf("re-add %s: %v", fresh.id, err)
	}
	c.converged(idx)
	if n := vipCount(fresh.f); n != 7 {
		t.Fatalf("re-added node has %d VIPs, want 7", n)
	}
	if got := l.n.Term(); got != termBefore {
		t.Errorf("term moved from %d to %d: the removed or re-added node disturbed the cluster", termBefore, got)
	}
	idx = c.propose(addVIP(30))
	c.converged(idx)
	for _, tn := range c.running() {
		if got := tn.voters(); len(got) != 3 {
			t.Fatalf("%s voters = %v", tn.id, got)
		}
	}
}

func TestRemoveRefusedWhenQuorumWouldBeLost(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.startN(3)
	l := c.leader()
	c.propose(addVIP(1))
	fs := c.others(l)
	healthy, cut := fs[0], fs[1]
	c.partition(cut)

	ctx := ctxT(t, 20*time.Second)
	// Removing the healthy follower would leave {leader, cut}: quorum 2,
	// one reachable. The leader probes its voters, so a partition that
	// happened an instant ago already counts.
	if err := l.n.RemoveServer(ctx, healthy.id, false); !errors.Is(err, ErrWouldLoseQuorum) {
		t.Fatalf("removal that loses quorum: err = %v, want ErrWouldLoseQuorum", err)
	}
	if got := l.n.raft.GetConfiguration().Configuration().Servers; len(got) != 3 {
		t.Fatalf("refusal changed the configuration: %v", got)
	}
	if !l.n.IsLeader() {
		t.Fatal("leader lost leadership after a refused removal")
	}

	// Forced, the change goes in, cannot commit without cut, and the
	// cluster has no leader until cut comes back.
	forced := make(chan error, 1)
	go func() { forced <- l.n.RemoveServer(ctx, healthy.id, true) }()
	eventually(t, 5*time.Second, "forced removal makes the leader step down", func() error {
		if l.n.IsLeader() {
			return errors.New("still leader")
		}
		return nil
	})
	c.heal()
	err := <-forced
	t.Logf("forced removal returned %v", err)
	pair := []*testNode{l, cut}
	eventually(t, 10*time.Second, "leader among the new configuration", func() error {
		for _, tn := range pair {
			if tn.n.IsLeader() {
				if v := tn.voters(); !slices.Equal(v, sortedIDs(l, cut)) {
					return fmt.Errorf("voters %v", v)
				}
				return nil
			}
		}
		return errors.New("no leader")
	})
	idx := c.propose(addVIP(2), pair...)
	c.converged(idx, pair...)
}

func sortedIDs(nodes ...*testNode) []string {
	var ids []string
	for _, tn := range nodes {
		ids = append(ids, tn.id)
	}
	slices.Sort(ids)
	return ids
}

func TestRemoveUnhealthyMemberAllowed(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.startN(3)
	l := c.leader()
	cut := c.others(l)[1]
	c.partition(cut)
	c.gossip.setState(cut.id, GossipDead)
	ctx := ctxT(t, 10*time.Second)
	// Removing the unreachable node leaves two healthy voters: quorum 2.
	if err := l.n.RemoveServer(ctx, cut.id, false); err != nil {
		t.Fatalf("remove unreachable %s: %v", cut.id, err)
	}
	rest := c.others(cut)
	idx := c.propose(addVIP(1), rest...)
	c.converged(idx, rest...)

	// Now the two-node cluster must refuse to lose either member.
	other := c.others(l)
	var f *testNode
	for _, o := range other {
		if o != cut {
			f = o
		}
	}
	if err := l.n.RemoveServer(ctx, f.id, false); err != nil {
		// 2 voters -> 1: quorum 1, the leader alone is healthy, allowed.
		t.Fatalf("shrink to one voter: %v", err)
	}
	if err := l.n.RemoveServer(ctx, l.id, true); !errors.Is(err, ErrLastVoter) {
		t.Fatalf("remove last voter: err = %v, want ErrLastVoter", err)
	}
	idx = c.propose(addVIP(2), l)
	c.converged(idx, l)
}

func TestMembershipRefusals(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.startN(3)
	l := c.leader()
	f := c.others(l)[0]
	ctx := ctxT(t, 20*time.Second)

	if err := f.n.AddVoter(ctx, "x", "inmem-x"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("AddVoter on follower: %v", err)
	}
	if err := f.n.RemoveServer(ctx, l.id, false); !errors.Is(err, ErrNotLeader) {
		t.Errorf("RemoveServer on follower: %v", err)
	}
	if err := l.n.RemoveServer(ctx, "nope", false); !errors.Is(err, ErrUnknownMember) {
		t.Errorf("remove unknown: %v", err)
	}
	if err := l.n.RemoveServer(ctx, "bad id!", false); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("remove invalid id: %v", err)
	}
	if err := l.n.AddVoter(ctx, f.id, "inmem-elsewhere"); !errors.Is(err, ErrMemberExists) {
		t.Errorf("add existing id at another address: %v", err)
	}
	if err := l.n.AddVoter(ctx, "n9", f.n.RaftAddress()); !errors.Is(err, ErrMemberExists) {
		t.Errorf("add new id at an existing address: %v", err)
	}
	if err := l.n.AddVoter(ctx, f.id, f.n.RaftAddress()); err != nil {
		t.Errorf("re-add same id and address: %v", err)
	}
	if err := l.n.AddVoter(ctx, "ghost", ""); !errors.Is(err, ErrUnknownMember) {
		t.Errorf("add without address, unknown to gossip: %v", err)
	}
	// Without a forwarder the leader does not remove itself.
	if err := l.n.RemoveServer(ctx, l.id, false); !errors.Is(err, ErrLeaderRemoval) {
		t.Errorf("leader removing itself: %v", err)
	}
	// A server that never answers raft is not made a voter, and its
	// non-voter entry is rolled back.
	err := l.n.AddVoter(ctx, "ghost", "inmem-ghost")
	if !errors.Is(err, ErrWouldLoseQuorum) {
		t.Fatalf("add unreachable: %v", err)
	}
	eventually(t, 5*time.Second, "rollback", func() error {
		for _, s := range l.n.raft.GetConfiguration().Configuration().Servers {
			if s.ID == "ghost" {
				return fmt.Errorf("ghost still in configuration as %s", s.Suffrage)
			}
		}
		return nil
	})
	if got := l.voters(); len(got) != 3 {
		t.Fatalf("voters = %v", got)
	}
	// With one voter cut off, a fourth voter may join only once it has
	// answered raft: then three of four are reachable.
	spare := c.start("n4", 0, "")
	cut := c.others(l)[1]
	if cut == spare {
		cut = c.others(l)[0]
	}
	c.partition(cut)
	if err := l.n.AddVoter(ctx, spare.id, spare.n.RaftAddress()); err != nil {
		t.Fatalf("add reachable spare with one voter cut off: %v", err)
	}
	live := c.others(cut)
	idx := c.propose(addVIP(1), live...)
	c.converged(idx, live...)
	c.heal()
	idx = c.propose(addVIP(2))
	c.converged(idx)
}

func TestAddVoterFromGossip(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.startN(3)
	spare := c.start("n4", 0, "")
	l := c.leader(c.nodes[:3]...)
	ms, err := l.n.Members()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ms, func(m Member) bool { return m.ID == "n4" })
	if i < 0 || ms[i].Suffrage != "" || ms[i].RaftAddress != spare.n.RaftAddress() {
		t.Fatalf("members = %+v, want n4 listed as a gossip-only candidate", ms)
	}
	ctx := ctxT(t, 10*time.Second)
	if err := l.n.AddVoter(ctx, "n4", ""); err != nil {
		t.Fatalf("add n4 by gossip address: %v", err)
	}
	idx := c.propose(addVIP(1))
	c.converged(idx)
	if got := spare.voters(); len(got) != 4 {
		t.Fatalf("n4 sees voters %v", got)
	}
}

func TestConcurrentMembershipChanges(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.startN(3)
	for _, id := range []string{"n4", "n5", "n6"} {
		c.start(id, 0, "")
	}
	l := c.leader(c.nodes[:3]...)
	c.propose(addVIP(1), l)
	victim := c.others(l)[0]
	if victim.id == "n4" || victim.id == "n5" || victim.id == "n6" {
		t.Fatalf("unexpected follower %s", victim.id)
	}
	ctx := ctxT(t, 20*time.Second)
	type result struct {
		op  string
		err error
	}
	results := make(chan result)
	ops := []struct {
		name string
		fn   func() error
	}{
		{"add n4", func() error { return l.n.AddVoter(ctx, "n4", "inmem-n4") }},
		{"add n5", func() error { return l.n.AddVoter(ctx, "n5", "inmem-n5") }},
		{"add n6", func() error { return l.n.AddVoter(ctx, "n6", "inmem-n6") }},
		{"remove " + victim.id, func() error { return l.n.RemoveServer(ctx, victim.id, false) }},
	}
	for _, op := range ops {
		go func() { results <- result{op.name, op.fn()} }()
	}
	// Writes keep committing while the configuration changes.
	stop := make(chan struct{})
	writes := make(chan error, 1)
	go func() {
		var err error
		pace := time.NewTicker(2 * time.Millisecond)
		defer pace.Stop()
		for i := 100; ; i++ {
			select {
			case <-stop:
				writes <- err
				return
			case <-pace.C:
			}
			if _, e := l.n.Propose(ctx, addVIP(i)); e != nil && err == nil {
				err = fmt.Errorf("write %d: %w", i, e)
			}
		}
	}()
	for range ops {
		r := <-results
		if r.err != nil {
			t.Errorf("%s: %v", r.op, r.err)
		}
	}
	close(stop)
	if err := <-writes; err != nil {
		t.Errorf("writes during membership changes: %v", err)
	}
	want := []string{"n4", "n5", "n6"}
	for _, tn := range c.nodes[:3] {
		if tn != victim {
			want = append(want, tn.id)
		}
	}
	slices.Sort(want)
	if got := l.voters(); !slices.Equal(got, want) {
		t.Fatalf("voters = %v, want %v", got, want)
	}
	if !l.n.IsLeader() {
		t.Fatal("leader lost leadership during membership changes")
	}
	members := c.others(victim)
	idx := c.propose(addVIP(1000), members...)
	c.converged(idx, members...)
}

func TestChangeInProgressRefused(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	// Long timers leave a window in which the leader, cut off from its
	// followers, still leads while its configuration entry cannot commit.
	c.timing = TimingConfig{Profile: ProfileDefault, Timing: Timing{
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: time.Second, CommitTimeout: 10 * time.Millisecond,
		GossipProbeInterval: 50 * time.Millisecond, GossipProbeTimeout: 25 * time.Millisecond,
	}}
	c.startN(3)
	l := c.leader()
	c.propose(addVIP(1))
	ctx := ctxT(t, 10*time.Second)
	// Wait for the leader's heartbeat grace, so the attempt below reaches
	// the uncommitted-change check at once.
	eventually(t, 5*time.Second, "leader settled", func() error {
		_, err := l.n.leaderConfig(ctx, "probe")
		return err
	})
	l.trans.DisconnectAll()
	// Bypass the API to leave an uncommitted configuration entry.
	pending := l.n.raft.AddNonvoter("stuck", "inmem-stuck", 0, 0)
	eventually(t, time.Second, "uncommitted entry visible", func() error {
		for _, s := range l.n.raft.GetConfiguration().Configuration().Servers {
			if s.ID == "stuck" {
				return nil
			}
		}
		return errors.New("not yet")
	})
	err := l.n.RemoveServer(ctx, c.others(l)[0].id, false)
	if !errors.Is(err, ErrChangeInProgress) {
		t.Fatalf("err = %v, want ErrChangeInProgress", err)
	}
	c.heal()
	if err := pending.Error(); err != nil {
		t.Logf("pending change: %v", err)
	}
	c.leader()
}

func TestLeadershipTransfer(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.startN(3)
	l := c.leader()
	target := c.others(l)[1]
	ctx := ctxT(t, 10*time.Second)
	if err := target.n.TransferLeadership(ctx, ""); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("transfer on follower: %v", err)
	}
	if err := l.n.TransferLeadership(ctx, "nope"); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("transfer to unknown: %v", err)
	}
	if err := l.n.TransferLeadership(ctx, target.id); err != nil {
		t.Fatalf("transfer to %s: %v", target.id, err)
	}
	if nl := c.leader(); nl != target {
		t.Fatalf("leader is %s, want %s", nl.id, target.id)
	}
	eventually(t, 5*time.Second, "events", func() error {
		old, nw := l.leadership(), target.leadership()
		if len(old) != 2 || old[1].Leader || len(nw) != 1 || !nw[0].Leader || nw[0].Term <= old[0].Term {
			return fmt.Errorf("old %+v new %+v", old, nw)
		}
		return nil
	})
	// Raft's choice.
	if err := target.n.TransferLeadership(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if nl := c.leader(); nl == target {
		t.Fatal("leadership did not move")
	}
	idx := c.propose(addVIP(1))
	c.converged(idx)
}

func TestLeaderRemovesItselfViaTransfer(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.forward = true
	c.startN(3)
	l := c.leader()
	c.propose(addVIP(1))
	ctx := ctxT(t, 10*time.Second)
	if err := l.n.RemoveServer(ctx, l.id, false); err != nil {
		t.Fatalf("leader removes itself: %v", err)
	}
	rest := c.others(l)
	nl := c.leader(rest...)
	if got := nl.voters(); len(got) != 2 || slices.Contains(got, l.id) {
		t.Fatalf("voters = %v", got)
	}
	idx := c.propose(addVIP(2), rest...)
	c.converged(idx, rest...)
	// The old leader only ever gave up leadership once.
	if evs := l.leadership(); len(evs) != 2 || evs[1].Leader {
		t.Fatalf("old leader events %+v", evs)
	}
}

func TestRestartFromDisk(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.onDisk = true
	c.startN(3)
	var idx uint64
	for i := range 4 {
		idx = c.propose(addVIP(i))
	}
	c.converged(idx)
	ctx := ctxT(t, 20*time.Second)
	for _, tn := range c.running() {
		if err := tn.n.Snapshot(ctx); err != nil {
			t.Fatalf("snapshot %s: %v", tn.id, err)
		}
	}
	for i := 4; i < 7; i++ {
		idx = c.propose(addVIP(i))
	}
	c.converged(idx)
	want := snapshotOf(t, c.nodes[0].f)
	bootstraps := c.logs.count("bootstrapping cluster")
	if bootstraps < 1 || bootstraps > 3 {
		t.Fatalf("%d bootstrap records on first start", bootstraps)
	}
	dirs := map[string]string{}
	for _, tn := range c.running() {
		dirs[tn.id] = tn.dir
		c.stop(tn)
	}
	c.nodes = nil
	for _, id := range []string{"n1", "n2", "n3"} {
		c.start(id, 3, dirs[id])
	}
	c.leader()
	c.converged(idx)
	for _, tn := range c.running() {
		if got := snapshotOf(t, tn.f); got != want {
			t.Fatalf("%s state after restart differs:\n%s\nwant\n%s", tn.id, got, want)
		}
	}
	if n := c.logs.count("bootstrapping cluster"); n != bootstraps {
		t.Fatalf("a restarted node bootstrapped again (%d bootstrap records, %d before)", n, bootstraps)
	}
	if n := c.logs.count("existing raft state found"); n != 3 {
		t.Fatalf("%d recovery records, want 3", n)
	}
	idx = c.propose(addVIP(50))
	c.converged(idx)
}
