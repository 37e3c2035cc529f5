package cluster

import (
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/internal/testlog"
)

// --- fake gossip: user data ---

// SetDataDelegate, NumMembers and SendToAll make fakeGossip a dataGossip.
// SendToAll delivers at once; broadcasts and push/pull move only when a
// test calls exchangeData, so tests choose which path they exercise.
func (f *fakeGossip) SetDataDelegate(d dataDelegate) {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	f.data = d
}

func (f *fakeGossip) NumMembers() int {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	n := 0
	for _, o := range f.net.nodes {
		if o.state == GossipAlive {
			n++
		}
	}
	return n
}

func (f *fakeGossip) SendToAll(msg []byte) error {
	for _, d := range f.net.peersOf(f.name) {
		d.NotifyMsg(msg)
	}
	return nil
}

// peersOf returns the data delegates of the live members other than name.
func (g *fakeGossipNet) peersOf(name string) []dataDelegate {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []dataDelegate
	for _, n := range g.nodes {
		if n.name != name && n.state == GossipAlive && n.data != nil {
			out = append(out, n.data)
		}
	}
	return out
}

// exchangeData runs one round of broadcasts and push/pull between every
// pair of live members, as memberlist's gossip and push/pull timers do.
func (g *fakeGossipNet) exchangeData() {
	g.mu.Lock()
	var live []*fakeGossip
	for _, n := range g.nodes {
		if n.state == GossipAlive && n.data != nil {
			live = append(live, n)
		}
	}
	g.mu.Unlock()
	for _, from := range live {
		for _, b := range from.data.GetBroadcasts(0, 1400) {
			for _, to := range live {
				if to != from {
					to.data.NotifyMsg(b)
				}
			}
		}
		state := from.data.LocalState(false)
		for _, to := range live {
			if to != from {
				to.data.MergeRemoteState(state, false)
			}
		}
	}
}

// --- the view store alone ---

func newTestViews(t *testing.T, self string, at *time.Time) *healthViews {
	return newHealthViews(self, testlog.Logger(t), func() time.Time { return *at }, func() int { return 3 })
}

func viewsOf(h *healthViews, origin string) map[HealthKey]string {
	return h.views(func(o string) bool { return o == origin })[origin]
}

func TestHealthViewsVersioning(t *testing.T) {
	now := time.Unix(1000, 0)
	a := newTestViews(t, "a", &now)
	b := newTestViews(t, "b", &now)
	k1 := HealthKey{"web", "10.0.0.1:80"}
	k2 := HealthKey{"web", "10.0.0.2:80"}

	a.setLocal(map[HealthKey]string{k1: HealthUp, k2: HealthUp})
	old := a.fullState()
	a.setLocal(map[HealthKey]string{k1: HealthDown, k2: HealthUp})
	if err := b.merge(a.fullState()); err != nil {
		t.Fatal(err)
	}
	// A stale full state relayed late must not undo the newer view.
	if err := b.merge(old); err != nil {
		t.Fatal(err)
	}
	if got, want := viewsOf(b, "a"), map[HealthKey]string{k1: HealthDown, k2: HealthUp}; !maps.Equal(got, want) {
		t.Fatalf("after a stale full state: %v, want %v", got, want)
	}

	// A delta as a broadcast carries the next change.
	a.takePending()
	a.queue.Reset()
	a.setLocal(map[HealthKey]string{k1: HealthUp, k2: HealthUp})
	if msg, small := a.takePending(); msg != nil || !small {
		t.Fatalf("a one-entry change should be broadcast, got a direct message %q", msg)
	}
	bs := a.GetBroadcasts(0, 1400)
	if len(bs) != 1 {
		t.Fatalf("broadcasts: %d, want 1", len(bs))
	}
	b.NotifyMsg(bs[0])
	if got := viewsOf(b, "a")[k1]; got != HealthUp {
		t.Fatalf("after the broadcast: k1 %q, want up", got)
	}

	// A removed check disappears with the next full state, and a late
	// delta of it does not bring it back.
	a.setLocal(map[HealthKey]string{k1: HealthUp})
	_ = b.merge(a.fullState())
	b.NotifyMsg(bs[0]) // a replay of an older entry of k1 is harmless
	if got, want := viewsOf(b, "a"), map[HealthKey]string{k1: HealthUp}; !maps.Equal(got, want) {
		t.Fatalf("after removal: %v, want %v", got, want)
	}
	staleK2 := encodeHealth(wireMsg{Origins: []wireOrigin{{Origin: "a", Entries: []wireEntry{{Service: "web", Server: k2.Server, State: HealthDown, Ver: 1}}}}})
	_ = b.merge(staleK2)
	if _, ok := viewsOf(b, "a")[k2]; ok {
		t.Fatal("a stale delta brought a removed entry back")
	}

	// Others cannot overwrite a director's own views.
	forged := encodeHealth(wireMsg{Full: true, Origins: []wireOrigin{{Origin: "a", Ver: 1 << 62, Entries: nil}}})
	_ = a.merge(forged)
	if got := viewsOf(a, "a"); len(got) != 1 {
		t.Fatalf("own views overwritten by gossip: %v", got)
	}

	// A restarted director's versions start above its old ones, as long
	// as the clock moved on.
	now = now.Add(time.Second)
	a2 := newTestViews(t, "a", &now)
	a2.setLocal(map[HealthKey]string{k1: HealthDown})
	_ = b.merge(a2.fullState())
	if got := viewsOf(b, "a")[k1]; got != HealthDown {
		t.Fatalf("after a restart: k1 %q, want down", got)
	}
}

func TestHealthViewsLargeChangeGoesDirect(t *testing.T) {
	now := time.Unix(1000, 0)
	a := newTestViews(t, "a", &now)
	b := newTestViews(t, "b", &now)
	views := map[HealthKey]string{}
	for i := range maxBroadcastEntries + 1 {
		views[HealthKey{"web", fmt.Sprintf("10.0.0.%d:80", i)}] = HealthDown
	}
	a.setLocal(views)
	msg, small := a.takePending()
	if msg == nil || small {
		t.Fatal("a large change should be one direct message")
	}
	if a.queue.NumQueued() != 0 {
		t.Fatalf("a large change also queued %d broadcasts", a.queue.NumQueued())
	}
	b.NotifyMsg(msg)
	if got := viewsOf(b, "a"); !maps.Equal(got, views) {
		t.Fatalf("b has %d views of a, want %d", len(got), len(views))
	}
}

func TestHealthViewsRejectsGarbage(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newTestViews(t, "b", &now)
	if err := b.merge([]byte{99, '{'}); err == nil {
		t.Error("unknown format accepted")
	}
	if err := b.merge([]byte{healthMsgV1, '{'}); err == nil {
		t.Error("bad JSON accepted")
	}
	if err := b.merge(nil); err != nil {
		t.Errorf("empty state (a peer without views): %v", err)
	}
	// Entries a health.set would be refused for are dropped; the rest of
	// the message is kept.
	bad := encodeHealth(wireMsg{Origins: []wireOrigin{
		{Origin: "a", Entries: []wireEntry{{Service: "web", Server: "10.0.0.1:80", State: "sideways", Ver: 5}, {Service: "web", Server: "10.0.0.2:80", State: HealthUp, Ver: 5}}},
		{Origin: "bad id!", Entries: []wireEntry{{Service: "web", Server: "10.0.0.1:80", State: HealthUp, Ver: 5}}},
	}})
	if err := b.merge(bad); err == nil || !strings.Contains(err.Error(), "dropped 2") {
		t.Errorf("invalid entries: %v", err)
	}
	all := b.views(func(string) bool { return true })
	if got, want := all["a"], map[HealthKey]string{{"web", "10.0.0.2:80"}: HealthUp}; !maps.Equal(got, want) || len(all) != 2 {
		t.Errorf("after invalid entries: %v", all)
	}
}

// --- three directors in memory ---

// TestHealthAgreementInMemoryCluster runs three directors on raft's
// in-memory transport with fake gossip: views travel through gossip, the
// leader applies the agreement rule to what it received, and a director
// that sees every server down while the others see them up changes
// nothing.
func TestHealthAgreementInMemoryCluster(t *testing.T) {
	c := newTestCluster(t)
	c.startN(3)
	defer c.stopAll()
	leader := c.leader()
	keys := []HealthKey{{"web", "10.0.0.1:80"}, {"web", "10.0.0.2:80"}, {"web", "10.0.0.3:80"}}
	committed := map[HealthKey]string{}
	for _, k := range keys {
		committed[k] = HealthUp
	}
	set := func(tn *testNode, state string) {
		v := map[HealthKey]string{}
		for _, k := range keys {
			v[k] = state
		}
		tn.n.SetHealthViews(v)
	}
	others := c.others(leader)
	odd := others[0]
	set(odd, HealthDown)
	set(others[1], HealthUp)
	set(leader, HealthUp)
	// Every director's views reach the leader.
	eventually(t, 5*time.Second, "leader has every view", func() error {
		c.gossip.exchangeData()
		vs := leader.n.HealthVoters()
		if len(vs) != 3 || vs[odd.id].Views[keys[0]] != HealthDown {
			return fmt.Errorf("voters %v", vs)
		}
		return nil
	})
	if tr := Agree(committed, leader.n.HealthVoters()); len(tr) != 0 {
		t.Fatalf("one director seeing everything down changed %v", tr)
	}

	// A cut-off director does not vote even with a second one agreeing.
	if err := others[1].n.SetPingScore(0, 2); err != nil {
		t.Fatal(err)
	}
	set(others[1], HealthDown)
	eventually(t, 5*time.Second, "leader sees the cut-off director's views", func() error {
		c.gossip.exchangeData()
		v := leader.n.HealthVoters()[others[1].id]
		if !v.CutOff || v.Views[keys[0]] != HealthDown {
			return fmt.Errorf("view %+v", v)
		}
		return nil
	})
	if tr := Agree(committed, leader.n.HealthVoters()); len(tr) != 0 {
		t.Fatalf("a cut-off director's vote counted: %v", tr)
	}

	// Once it reaches its ping nodes again, two of three agree.
	if err := others[1].n.SetPingScore(2, 2); err != nil {
		t.Fatal(err)
	}
	var got []HealthTransition
	eventually(t, 5*time.Second, "two directors agree", func() error {
		got = Agree(committed, leader.n.HealthVoters())
		if len(got) != len(keys) {
			return fmt.Errorf("transitions %v", got)
		}
		return nil
	})
	for i, tr := range got {
		if tr.Key != keys[i] || tr.State != HealthDown || len(tr.Views) != 3 {
			t.Errorf("transition %d: %+v", i, tr)
		}
	}

	// A stopped director's views no longer count.
	c.stop(odd)
	eventually(t, 5*time.Second, "the stopped director's views are dropped", func() error {
		if _, ok := leader.n.HealthVoters()[odd.id]; ok {
			return fmt.Errorf("still voting")
		}
		return nil
	})
	names := slices.Sorted(maps.Keys(leader.n.HealthVoters()))
	if want := []string{leader.id, others[1].id}; !reflect.DeepEqual(names, slices.Sorted(slices.Values(want))) {
		t.Errorf("voters %v, want %v", names, want)
	}
}

// TestHealthViewsOverMemberlist sends views over real memberlist on
// loopback: a small change by broadcast, a large one by a direct send,
// and everything to a director that joins later by push/pull.
func TestHealthViewsOverMemberlist(t *testing.T) {
	t.Parallel()
	logs := newLogSink(t)
	base := t.TempDir()
	cfgFor := func(id string, join ...string) Config {
		return Config{NodeID: id, DataDir: filepath.Join(base, id), RaftBind: "127.0.0.1:0", GossipBind: "127.0.0.1:0",
			Join: join, Timing: testTiming(), Version: "test"}
	}
	d1 := startReal(t, logs, cfgFor("d1"))
	d2 := startReal(t, logs, cfgFor("d2", d1.n.GossipAddress()))
	has := func(rn *realNode, origin string, want map[HealthKey]string) func() error {
		return func() error {
			got := rn.n.HealthVoters()[origin].Views
			for k, s := range want {
				if got[k] != s {
					return fmt.Errorf("%s has %d views of %s; %v is %q, want %q", rn.cfg.NodeID, len(got), origin, k, got[k], s)
				}
			}
			return nil
		}
	}
	small := map[HealthKey]string{{"web", "10.0.0.1:80"}: HealthDown, {"web", "10.0.0.2:80"}: HealthUp}
	d1.n.SetHealthViews(small)
	eventually(t, 10*time.Second, "a small change by broadcast", has(d2, "d1", small))

	large := map[HealthKey]string{}
	for i := range 3 * maxBroadcastEntries {
		large[HealthKey{"api", fmt.Sprintf("10.1.%d.%d:80", i/250, i%250)}] = HealthDown
	}
	d2.n.SetHealthViews(large)
	eventually(t, 10*time.Second, "a large change sent directly", has(d1, "d2", large))

	d3 := startReal(t, logs, cfgFor("d3", d1.n.GossipAddress()))
	eventually(t, 10*time.Second, "d1's views at a late joiner", has(d3, "d1", small))
	eventually(t, 10*time.Second, "d2's views at a late joiner", has(d3, "d2", large))
}
