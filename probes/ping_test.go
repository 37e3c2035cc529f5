package probes_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/directorate/directorate/probes"
)

func TestHysteresis(t *testing.T) {
	const T, F = true, false
	R, U := probes.Reachable, probes.Unreachable
	for _, tc := range []struct {
		name       string
		rise, fall int
		results    []bool
		want       []probes.Reachability // after each probe
	}{
		{"first success decides", 2, 3, []bool{T}, []probes.Reachability{R}},
		{"first failure decides", 2, 3, []bool{F}, []probes.Reachability{U}},
		{"fall needs failures in a row", 2, 3,
			[]bool{T, F, F, T, F, F, F, F},
			[]probes.Reachability{R, R, R, R, R, R, U, U}},
		{"rise needs successes in a row", 2, 3,
			[]bool{F, T, F, T, T, T},
			[]probes.Reachability{U, U, U, U, R, R}},
		{"down and up again", 2, 3,
			[]bool{T, F, F, F, T, T, F},
			[]probes.Reachability{R, R, R, U, U, R, R}},
		{"rise and fall of one follow every result", 1, 1,
			[]bool{T, F, T, T, F},
			[]probes.Reachability{R, U, R, R, U}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := addr("192.0.2.1")
			r := newRig(t, probes.PingConfig{Nodes: []string{a.String()}},
				probes.PingOptions{Interval: time.Second, Rise: tc.rise, Fall: tc.fall, Jitter: -1})
			r.pinger.Script(a, tc.results...)
			r.start() // the first probe is due at once
			for i, want := range tc.want {
				if i > 0 {
					r.runFor(time.Second)
				}
				if n := r.pinger.CallsTo(a); n != i+1 {
					t.Fatalf("after probe %d: %d pings, want %d", i+1, n, i+1)
				}
				s := r.m.Score()
				got := s.Nodes[0]
				if got.State != want {
					t.Fatalf("after probe %d (%v): state %s, want %s", i+1, tc.results[:i+1], got.State, want)
				}
				wantValue := 0
				if want == probes.Reachable {
					wantValue = 1
				}
				if s.Value != wantValue || s.Max != 1 || !s.Ready {
					t.Fatalf("after probe %d: score %d/%d ready %v, want %d/1 ready", i+1, s.Value, s.Max, s.Ready, wantValue)
				}
				if tc.results[i] != (got.LastError == "") {
					t.Fatalf("after probe %d: last error %q for result %v", i+1, got.LastError, tc.results[i])
				}
			}
		})
	}
}

func TestScoreCountsNodesAndGroups(t *testing.T) {
	n1, n2 := addr("192.0.2.1"), addr("2001:db8::1")
	a, b := addr("198.51.100.1"), addr("198.51.100.2")
	c := addr("203.0.113.1")
	cfg := probes.PingConfig{
		Nodes:  []string{n1.String(), n2.String()},
		Groups: map[string][]string{"uplinks": {a.String(), b.String()}, "dns": {c.String()}},
	}
	r := newRig(t, cfg, probes.PingOptions{Interval: time.Second, Rise: 1, Fall: 1, Jitter: -1})

	before := r.m.Score()
	if before.Value != 0 || before.Max != 4 || before.Ready {
		t.Fatalf("before Run: %d/%d ready %v, want 0/4 not ready", before.Value, before.Max, before.Ready)
	}
	for _, x := range []netip.Addr{n1, n2, a, b, c} {
		r.pinger.SetReachable(x, true)
	}
	r.start()
	r.runFor(time.Second) // every target probed once

	type want struct {
		value  int
		groups map[string]probes.Reachability
	}
	check := func(step string, w want) {
		t.Helper()
		s := r.m.Score()
		if !s.Ready || s.Max != 4 || s.Value != w.value {
			t.Fatalf("%s: score %d/%d ready %v, want %d/4 ready", step, s.Value, s.Max, s.Ready, w.value)
		}
		if len(s.Groups) != 2 || s.Groups[0].Name != "dns" || s.Groups[1].Name != "uplinks" {
			t.Fatalf("%s: groups %+v, want dns then uplinks", step, s.Groups)
		}
		for _, g := range s.Groups {
			if g.State != w.groups[g.Name] {
				t.Errorf("%s: group %s %s, want %s", step, g.Name, g.State, w.groups[g.Name])
			}
		}
		if s.Nodes[0].Addr != n1 || s.Nodes[1].Addr != n2 {
			t.Errorf("%s: nodes %v %v out of configuration order", step, s.Nodes[0].Addr, s.Nodes[1].Addr)
		}
		if m := s.Groups[1].Members; len(m) != 2 || m[0].Addr != a || m[1].Addr != b {
			t.Errorf("%s: uplinks members %+v, want %s then %s", step, m, a, b)
		}
	}
	R, U := probes.Reachable, probes.Unreachable
	check("all up", want{4, map[string]probes.Reachability{"dns": R, "uplinks": R}})

	r.pinger.SetReachable(a, false)
	r.runFor(time.Second)
	check("one uplink down", want{4, map[string]probes.Reachability{"dns": R, "uplinks": R}})

	r.pinger.SetReachable(b, false)
	r.runFor(time.Second)
	check("both uplinks down", want{3, map[string]probes.Reachability{"dns": R, "uplinks": U}})

	r.pinger.SetReachable(n2, false)
	r.pinger.SetReachable(c, false)
	r.runFor(time.Second)
	check("a node and dns down", want{1, map[string]probes.Reachability{"dns": U, "uplinks": U}})

	r.pinger.SetReachable(b, true)
	r.runFor(time.Second)
	check("an uplink back", want{2, map[string]probes.Reachability{"dns": U, "uplinks": R}})
}

func TestGroupReadiness(t *testing.T) {
	a, b := addr("198.51.100.1"), addr("198.51.100.2")
	cfg := probes.PingConfig{Groups: map[string][]string{"g": {a.String(), b.String()}}}
	r := newRig(t, cfg, probes.PingOptions{Interval: time.Second, Jitter: -1})
	r.pinger.SetReachable(a, false)
	r.pinger.SetReachable(b, true)
	r.start() // a probed at 0 s, b at 0.5 s
	s := r.m.Score()
	if g := s.Groups[0]; g.State != probes.Unknown || s.Ready || s.Value != 0 {
		t.Fatalf("one member unreachable, one unknown: group %s ready %v value %d, want unknown, not ready, 0", g.State, s.Ready, s.Value)
	}
	r.runFor(500 * time.Millisecond)
	s = r.m.Score()
	if g := s.Groups[0]; g.State != probes.Reachable || !s.Ready || s.Value != 1 {
		t.Fatalf("a member reachable: group %s ready %v value %d, want reachable, ready, 1", g.State, s.Ready, s.Value)
	}

	// A group with a reachable member is ready even while another member
	// is still unknown.
	r2 := newRig(t, cfg, probes.PingOptions{Interval: time.Second, Jitter: -1})
	r2.pinger.SetReachable(a, true)
	r2.start()
	if s := r2.m.Score(); !s.Ready || s.Value != 1 || s.Groups[0].Members[1].State != probes.Unknown {
		t.Fatalf("first member reachable, second unknown: %+v, want ready with value 1", s)
	}
}

func TestNoTargets(t *testing.T) {
	r := newRig(t, probes.PingConfig{}, probes.PingOptions{})
	if s := r.m.Score(); s.Value != 0 || s.Max != 0 || !s.Ready {
		t.Fatalf("no ping nodes: %+v, want 0/0 ready", s)
	}
	r.start()
	r.stop()
	if _, open := <-r.m.Changes(); open {
		t.Fatal("Changes still open after Run returned")
	}
}

func TestChangesCarryNewestScore(t *testing.T) {
	a, b := addr("192.0.2.1"), addr("192.0.2.2")
	r := newRig(t, probes.PingConfig{Nodes: []string{a.String(), b.String()}},
		probes.PingOptions{Interval: time.Second, Rise: 1, Fall: 2, Jitter: -1})
	r.pinger.SetReachable(a, true)
	r.pinger.SetReachable(b, true)
	r.start()
	select {
	case s := <-r.m.Changes():
		if s.Value != 1 || s.Ready {
			t.Fatalf("after the first probe: %d ready %v, want 1, not ready", s.Value, s.Ready)
		}
	default:
		t.Fatal("no change after a's first probe")
	}
	// Two changes (b's first result, then nothing else) leave one score.
	r.runFor(time.Second)
	s := <-r.m.Changes()
	if s.Value != 2 || !s.Ready {
		t.Fatalf("after b's first probe: %d ready %v, want 2 ready", s.Value, s.Ready)
	}
	select {
	case s := <-r.m.Changes():
		t.Fatalf("a probe that changed nothing published %+v", s)
	default:
	}

	// Two changes while nobody reads: only the newest is kept.
	r.pinger.SetReachable(a, false)
	r.pinger.SetReachable(b, false)
	r.runFor(2 * time.Second) // a then b go down at their second failure
	s = <-r.m.Changes()
	if s.Value != 0 {
		t.Fatalf("newest score %d, want 0", s.Value)
	}
	select {
	case s := <-r.m.Changes():
		t.Fatalf("stale score %d still queued", s.Value)
	default:
	}
	// A failure that does not reach fall changes nothing.
	r.pinger.SetReachable(a, true)
	r.runFor(time.Second)
	if s := <-r.m.Changes(); s.Value != 1 || s.Nodes[0].State != probes.Reachable {
		t.Fatalf("after a came back: %+v", s)
	}
}

func TestProbesSpreadAcrossInterval(t *testing.T) {
	const n = 50
	var nodes []string
	for i := range n {
		nodes = append(nodes, fmt.Sprintf("198.51.100.%d", i+1))
	}
	r := newRig(t, probes.PingConfig{Nodes: nodes},
		probes.PingOptions{Interval: time.Second, Timeout: 300 * time.Millisecond, Jitter: -1})
	r.start()
	r.runFor(3*time.Second - time.Nanosecond) // three rounds

	calls := r.pinger.Calls()
	if len(calls) != 3*n {
		t.Fatalf("%d pings in three intervals, want %d", len(calls), 3*n)
	}
	perInstant := map[time.Time]int{}
	for _, c := range calls {
		perInstant[c.At]++
		if perInstant[c.At] > 1 {
			t.Fatalf("two pings at %s: probes burst", c.At.Sub(t0))
		}
		if c.Timeout != 300*time.Millisecond {
			t.Fatalf("ping timeout %s, want the configured 300ms", c.Timeout)
		}
	}
	for i, node := range nodes {
		var at []time.Duration
		for _, c := range calls {
			if c.Addr == addr(node) {
				at = append(at, c.At.Sub(t0))
			}
		}
		off := time.Duration(i) * time.Second / n
		want := []time.Duration{off, off + time.Second, off + 2*time.Second}
		if !slices.Equal(at, want) {
			t.Fatalf("%s probed at %v, want %v", node, at, want)
		}
	}
}

func TestJitterStaysInBoundsWithoutDrift(t *testing.T) {
	a := addr("192.0.2.1")
	const jitter = 300 * time.Millisecond
	r := newRig(t, probes.PingConfig{Nodes: []string{a.String()}},
		probes.PingOptions{Interval: time.Second, Timeout: 500 * time.Millisecond, Jitter: jitter})
	r.pinger.SetReachable(a, true)
	r.start()
	r.runFor(20*time.Second - time.Nanosecond)
	calls := r.pinger.Calls()
	if len(calls) != 20 {
		t.Fatalf("%d pings in 20 intervals, want 20", len(calls))
	}
	offsets := map[time.Duration]bool{}
	for k, c := range calls {
		off := c.At.Sub(t0) - time.Duration(k)*time.Second
		if off < 0 || off >= jitter {
			t.Fatalf("ping %d at %s: %s off its slot, want within [0, %s)", k, c.At.Sub(t0), off, jitter)
		}
		offsets[off] = true
	}
	if len(offsets) < 2 {
		t.Fatalf("every ping at the same offset %v: no jitter", offsets)
	}
}

func TestSlowTargetDoesNotDelayOthers(t *testing.T) {
	slow, fast := addr("192.0.2.1"), addr("192.0.2.2")
	r := newRig(t, probes.PingConfig{Nodes: []string{slow.String(), fast.String()}},
		probes.PingOptions{Interval: time.Second, Jitter: -1})
	release := r.pinger.Block(slow)
	r.pinger.SetReachable(fast, true)
	r.start()
	waitFor(t, "the slow ping to block", func() bool { return r.pinger.Blocked() == 1 })
	r.runFor(5 * time.Second) // fast: 0.5 s, 1.5 s ... 5.5 s is not yet due

	if n := r.pinger.CallsTo(fast); n != 5 {
		t.Fatalf("fast target pinged %d times in 5 s while the slow one hung, want 5", n)
	}
	if n := r.pinger.CallsTo(slow); n != 1 {
		t.Fatalf("slow target pinged %d times, want 1 (still in flight)", n)
	}
	if s := r.m.Score(); s.Nodes[1].State != probes.Reachable || s.Nodes[0].State != probes.Unknown {
		t.Fatalf("states %s/%s, want unknown/reachable", s.Nodes[0].State, s.Nodes[1].State)
	}

	// When it returns, it skips the slots it missed instead of firing
	// them back to back: one probe for the current slot, then on schedule.
	r.pinger.Script(slow, true, true)
	release()
	waitFor(t, "the slow ping to return", func() bool { return r.pinger.Blocked() == 0 })
	r.settle()
	if n := r.pinger.CallsTo(slow); n != 2 {
		t.Fatalf("slow target pinged %d times after it returned, want 2 (the missed slots skipped)", n)
	}
	r.runFor(time.Second)
	if n := r.pinger.CallsTo(slow); n != 3 {
		t.Fatalf("slow target pinged %d times a second later, want 3", n)
	}
}

func TestShutdownIsNotAFailure(t *testing.T) {
	a := addr("192.0.2.1")
	r := newRig(t, probes.PingConfig{Nodes: []string{a.String()}}, probes.PingOptions{Jitter: -1})
	r.pinger.Block(a)
	r.start()
	waitFor(t, "the ping to block", func() bool { return r.pinger.Blocked() == 1 })
	r.stop()
	if s := r.m.Score(); s.Nodes[0].State != probes.Unknown || s.Nodes[0].Failures != 0 {
		t.Fatalf("a ping cut short by shutdown was recorded: %+v", s.Nodes[0])
	}
	if err := r.m.Run(t.Context()); err == nil {
		t.Fatal("a second Run succeeded")
	}
}

func TestTargetStateDetails(t *testing.T) {
	a := addr("192.0.2.1")
	r := newRig(t, probes.PingConfig{Nodes: []string{a.String()}},
		probes.PingOptions{Interval: time.Second, Jitter: -1})
	r.pinger.Script(a, true)
	r.start()
	st := r.m.Score().Nodes[0]
	if st.State != probes.Reachable || st.RTT != time.Millisecond || !st.Since.Equal(t0) || !st.LastProbe.Equal(t0) || st.Successes != 1 {
		t.Fatalf("after a success: %+v", st)
	}
	r.runFor(time.Second) // unscripted: times out
	st = r.m.Score().Nodes[0]
	if st.State != probes.Reachable || st.Failures != 1 || st.Successes != 0 || st.LastError == "" ||
		!st.Since.Equal(t0) || !st.LastProbe.Equal(t0.Add(time.Second)) || st.RTT != time.Millisecond {
		t.Fatalf("after one failure: %+v", st)
	}
}
