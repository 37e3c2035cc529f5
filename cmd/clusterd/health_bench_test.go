package main

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/internal/testlog"
	"github.com/directorate/directorate/probes"
)

// BenchmarkHealthPass measures a full pass of the leader's health
// monitor (state read, checks, views, agreement) over 1,000 services × 10
// checked servers with three directors' views and nothing to change: the
// most a burst of commits, check results and gossip costs, at most every
// 50 ms.
func BenchmarkHealthPass(b *testing.B) {
	h, ctx := benchMonitor(b)
	node := h.cluster.(*fakeHealthNode)
	proposals := node.proposals
	for b.Loop() {
		h.pass(ctx)
	}
	if node.proposals != proposals {
		b.Fatalf("steady state proposed %d times", node.proposals-proposals)
	}
}

// benchMonitor is a leader's monitor of 1,000 services × 10 checked
// servers, every director seeing every server up, after the first
// agreement was committed.
func benchMonitor(b *testing.B) (*healthMonitor, context.Context) {
	f := fsm.New()
	node := newFakeHealthNode(f, true)
	tcp := &fsm.CheckConfig{Kind: fsm.CheckTCP, Interval: fsm.Duration(time.Second), Timeout: fsm.Duration(time.Second / 2), Rise: 1, Fall: 1}
	var idx uint64
	must := func(cmd fsm.Command) {
		data, err := fsm.Encode(cmd)
		if err != nil {
			b.Fatal(err)
		}
		idx++
		if err := f.Apply(idx, data); err != nil {
			b.Fatal(err)
		}
	}
	must(fsm.AddVIP{VIP: fsm.VIP{Name: "v", Prefix: netip.MustParsePrefix("192.0.2.10/24")}})
	up := map[cluster.HealthKey]string{}
	health := map[netip.AddrPort]probes.Health{}
	for i := range 1000 {
		svc := fsm.Service{Name: fmt.Sprintf("s%d", i), VIP: "v", Protocol: fsm.TCP, Port: 1000 + i, Scheduler: "wlc", Method: fsm.NAT,
			Check: tcp, Servers: map[string]*fsm.RealServer{}}
		for j := range 10 {
			rs := &fsm.RealServer{Address: netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i % 250), byte(j + 1)}), Port: 8080, Weight: 1}
			svc.Servers[rs.Key()] = rs
			up[cluster.HealthKey{Service: svc.Name, Server: rs.Key()}] = "up"
			health[netip.AddrPortFrom(rs.Address, 8080)] = probes.HealthUp
		}
		must(fsm.AddService{Service: svc})
	}
	node.fakeConsensus.index = idx
	node.setVoters(map[string]cluster.Voter{"d1": {Views: up}, "d2": {Views: up}, "d3": {Views: up}})
	checks := &fakeChecks{health: health}
	h := newHealthMonitor("d1", testlog.Logger(b), f, node, checks, &fakeHooks{}, 10*time.Second)
	ctx := context.Background()
	h.pass(ctx) // commits the first agreed state
	h.pass(ctx)
	return h, ctx
}

// BenchmarkHealthResync is the leader's periodic pass with nothing
// changed: the agreement rule over 10,000 servers and three directors.
func BenchmarkHealthResync(b *testing.B) {
	h, ctx := benchMonitor(b)
	for b.Loop() {
		h.passFor(ctx, passResync)
	}
}
