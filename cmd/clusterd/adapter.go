package main

import (
	"context"
	"fmt"
	"sort"

	"github.com/cloudflare/ipvs"
	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/lvs"
	"github.com/directorate/directorate/vip"
	"github.com/hashicorp/raft"
)

// nodeConsensus adapts a cluster.Node to what the API needs.
type nodeConsensus struct {
	node *cluster.Node
	d    *daemon
}

func (c nodeConsensus) Propose(ctx context.Context, cmd fsm.Command) (uint64, error) {
	return c.node.Propose(ctx, cmd)
}

func (c nodeConsensus) IsLeader() bool { return c.node.IsLeader() }

func (c nodeConsensus) LeaderAPI() (string, string, bool) {
	id, addr, err := c.node.LeaderAPIAddress()
	return id, addr, err == nil
}

func (c nodeConsensus) VerifyLeader(ctx context.Context) error { return c.node.VerifyLeader(ctx) }

func (c nodeConsensus) AddVoter(ctx context.Context, id, addr string) error {
	return c.node.AddVoter(ctx, id, addr)
}

func (c nodeConsensus) RemoveServer(ctx context.Context, id string, force bool) error {
	return c.node.RemoveServer(ctx, id, force)
}

// TransferLeadership is a planned handover: the VIPs are released first, so
// the old and the new leader never hold them together, and the new leader
// claims them as soon as its barrier completes. If the transfer fails this
// director is still the leader and claims them again.
func (c nodeConsensus) TransferLeadership(ctx context.Context, to string) error {
	if to == c.node.ID() {
		return nil // already there: nothing to hand over
	}
	c.d.duties.stepDown(ctx, "leadership transfer")
	err := c.node.TransferLeadership(ctx, to)
	if err != nil && c.node.IsLeader() {
		c.d.duties.becomeLeader(cluster.LeadershipEvent{Leader: true, Term: c.node.Term(), Index: c.node.AppliedIndex()})
	}
	return err
}

func (c nodeConsensus) Members(context.Context) ([]api.Member, error) {
	ms, err := c.node.Members()
	if err != nil {
		return nil, err
	}
	meta := map[string]cluster.NodeMeta{}
	for _, g := range c.node.GossipMembers() {
		meta[g.Name] = g.Meta
	}
	out := make([]api.Member, 0, len(ms))
	for _, m := range ms {
		g := meta[m.ID]
		out = append(out, api.Member{ID: m.ID, Address: m.RaftAddress, Suffrage: m.Suffrage, Leader: m.Leader,
			APIAddress: m.APIAddress, Gossip: m.Gossip, PingScore: g.PingScore, PingMax: g.PingMax, Warning: g.Warning})
	}
	return out, nil
}

func (c nodeConsensus) Status() api.Status {
	n := c.node
	leader, leaderAddr := n.Leader()
	st := api.Status{
		Node: n.ID(), Version: version, State: n.State(), Leader: leader, LeaderAddr: leaderAddr,
		Term: n.Term(), Index: c.d.fsm.Index(), Backend: c.d.backend.Name(),
		LastReconcile: c.d.lastReconcile(),
	}
	if n.State() != raft.Leader.String() {
		st.LastLeaderContact = n.LastContact()
	}
	if ms, err := n.Members(); err == nil {
		for _, m := range ms {
			if m.Suffrage == raft.Voter.String() {
				st.Voters++
			}
		}
	}
	held := map[string]vip.Held{}
	for _, h := range c.d.vips.Held() {
		held[h.VIP.Name] = h
	}
	if c.d.ping != nil {
		s := c.d.ping.Score()
		st.Ping = &api.PingScore{Value: s.Value, Max: s.Max, Ready: s.Ready}
	}
	st.LatePeers = n.LatePeers()
	c.d.fsm.Read(func(s *fsm.State) {
		for _, v := range s.VIPs {
			// This director knows what it holds itself; of the others it
			// knows only that the leader is the one that should.
			h := api.VIPHolder{Name: v.Name, Prefix: v.Prefix}
			if mine, ok := held[v.Name]; ok {
				h.Holder, h.Renewed, h.Expires = n.ID(), mine.Renewed, mine.Expires
			} else if leader != "" && leader != n.ID() {
				h.Holder = leader
			}
			st.VIPs = append(st.VIPs, h)
		}
		st.Services = len(s.Services)
		for _, svc := range s.Services {
			st.Servers += len(svc.Servers)
		}
	})
	sort.Slice(st.VIPs, func(i, j int) bool { return st.VIPs[i].Name < st.VIPs[j].Name })
	return st
}

// toIPVSReport converts lvs's report into the API's wire form.
func toIPVSReport(node, backend string, index uint64, rep lvs.Report) api.IPVSReport {
	out := api.IPVSReport{Node: node, Backend: backend, Index: index, InSync: rep.InSync,
		Services: make([]api.IPVSService, 0, len(rep.Services))}
	for _, sd := range rep.Services {
		s := api.IPVSService{Key: sd.Key.String(), Name: sd.Name, Diff: string(sd.State),
			Desired: serviceAttrs(sd.Desired), Actual: serviceAttrs(sd.Actual),
			Destinations: make([]api.IPVSDestination, 0, len(sd.Dests))}
		if sd.Reason != "" {
			s.Diff += ": " + sd.Reason
		}
		for _, dd := range sd.Dests {
			s.Destinations = append(s.Destinations, api.IPVSDestination{
				Address: dd.Addr.String(), Diff: string(dd.State),
				Desired: destAttrs(dd.Desired), Actual: destAttrs(dd.Actual)})
		}
		out.Services = append(out.Services, s)
	}
	return out
}

func serviceAttrs(s *ipvs.Service) *api.IPVSServiceAttrs {
	if s == nil {
		return nil
	}
	a := &api.IPVSServiceAttrs{Scheduler: s.Scheduler, Flags: lvs.FlagNames(*s), Timeout: int(s.Timeout)}
	if s.Flags&ipvs.ServicePersistent != 0 && s.Netmask.IsValid() {
		a.Netmask = fmt.Sprintf("/%d", s.Netmask.Bits())
	}
	return a
}

func destAttrs(d *lvs.Destination) *api.IPVSDestAttrs {
	if d == nil {
		return nil
	}
	return &api.IPVSDestAttrs{Method: lvs.MethodName(d.FwdMethod), Weight: int(d.Weight),
		Upper: int(d.UpperThreshold), Lower: int(d.LowerThreshold),
		ActiveConns: int(d.ActiveConns), InactiveConns: int(d.InactiveConns)}
}
