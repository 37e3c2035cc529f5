package main

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// TestClientMatchesServer drives every api.Client method, the one clusterctl
// uses, against the real handlers through a follower, so a path, method,
// query parameter or body the two disagree on fails here rather than in the
// field. The follower forwards writes and consistent reads to the leader.
func TestClientMatchesServer(t *testing.T) {
	leader, follower := newPair(t)
	c, err := api.New(follower.url, api.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cc := c.Consistent()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must := func(what string, _ uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	wantCode := func(what string, err error, status int, code string) {
		t.Helper()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
			t.Fatalf("%s: got %v (%#v), want %d %s", what, err, ae, status, code)
		}
	}

	idx, err := c.AddVIP(ctx, fsm.VIP{Name: "v4", Prefix: netip.MustParsePrefix("192.0.2.10/24")})
	must("AddVIP", idx, err)
	if idx != 1 {
		t.Fatalf("AddVIP index %d, want 1", idx)
	}
	idx, err = c.AddVIP(ctx, fsm.VIP{Name: "v6", Prefix: netip.MustParsePrefix("2001:db8::10/64")})
	must("AddVIP v6", idx, err)
	idx, err = c.AddService(ctx, fsm.Service{Name: "web", VIP: "v4", Protocol: fsm.TCP, Port: 80, Scheduler: "wrr", Method: fsm.NAT})
	must("AddService", idx, err)
	idx, err = c.AddService(ctx, fsm.Service{Name: "web6", VIP: "v6", Protocol: fsm.TCP, Port: 80, Scheduler: "rr", Method: fsm.NAT})
	must("AddService v6", idx, err)
	idx, err = c.AddServer(ctx, "web", fsm.RealServer{Address: netip.MustParseAddr("10.1.0.1"), Port: 8080, Weight: 3})
	must("AddServer", idx, err)
	v6 := netip.MustParseAddr("2001:db8::1")
	idx, err = c.AddServer(ctx, "web6", fsm.RealServer{Address: v6, Port: 8080, Weight: 1})
	must("AddServer v6", idx, err)
	weight := 7
	idx, err = c.UpdateServer(ctx, "web6", v6, 8080, fsm.ServerPatch{Weight: &weight})
	must("UpdateServer v6 (bracketed key in the path)", idx, err)
	sched := fsm.Scheduler("sh")
	idx, err = c.UpdateService(ctx, "web", fsm.ServicePatch{Scheduler: &sched, SchedFlags: &fsm.SchedFlags{SHPort: true}})
	must("UpdateService", idx, err)

	// The follower's own state is fed by raft, which the fake does not
	// run: only consistent reads, answered by the leader, see the writes.
	vips, _, err := c.VIPs(ctx)
	must("VIPs", 0, err)
	if len(vips) != 0 {
		t.Fatalf("plain read was not served locally: %+v", vips)
	}
	vips, _, err = cc.VIPs(ctx)
	must("consistent VIPs", 0, err)
	if len(vips) != 2 {
		t.Fatalf("consistent VIPs: %+v", vips)
	}
	svcs, _, err := cc.Services(ctx)
	must("Services", 0, err)
	if len(svcs) != 2 || svcs[0].Name != "web" || svcs[0].ServerCount != 1 || svcs[0].ActiveWeight != 3 {
		t.Fatalf("Services: %+v", svcs)
	}
	svc, _, err := cc.Service(ctx, "web")
	must("Service", 0, err)
	if svc.Scheduler != "sh" || !svc.SchedFlags.SHPort {
		t.Fatalf("Service after UpdateService: %+v", svc)
	}
	servers, _, err := cc.Servers(ctx, "web6")
	must("Servers", 0, err)
	if len(servers) != 1 || servers[0].Weight != 7 {
		t.Fatalf("Servers after UpdateServer: %+v", servers)
	}

	_, err = c.DeleteVIP(ctx, "v6", false)
	wantCode("DeleteVIP in use without force", err, http.StatusConflict, api.CodeConflict)
	idx, err = c.DeleteVIP(ctx, "v6", true)
	must("DeleteVIP force", idx, err)
	idx, err = c.DeleteServer(ctx, "web", netip.MustParseAddr("10.1.0.1"), 8080)
	must("DeleteServer", idx, err)
	_, err = c.DeleteServer(ctx, "web", netip.MustParseAddr("10.1.0.1"), 8080)
	wantCode("DeleteServer again", err, http.StatusNotFound, api.CodeNotFound)

	st, sidx, err := cc.Snapshot(ctx)
	must("Snapshot", sidx, err)
	if len(st.VIPs) != 1 || len(st.Services) != 1 || st.Index != sidx {
		t.Fatalf("Snapshot: %d VIPs, %d services, index %d (response index %d)", len(st.VIPs), len(st.Services), st.Index, sidx)
	}
	raw, _, err := cc.SnapshotJSON(ctx)
	must("SnapshotJSON", 0, err)
	if !strings.Contains(string(raw), `"web"`) {
		t.Fatalf("SnapshotJSON: %s", raw)
	}
	idx, err = c.DeleteService(ctx, "web")
	must("DeleteService", idx, err)
	idx, err = c.Restore(ctx, st)
	must("Restore", idx, err)
	if got := leader.fsm.Clone(); len(got.Services) != 1 || got.Services["web"] == nil {
		t.Fatalf("Restore did not bring the service back: %+v", got.Services)
	}

	members, _, err := cc.Members(ctx)
	must("Members", 0, err)
	if len(members) != 1 || !members[0].Leader {
		t.Fatalf("Members: %+v", members)
	}
	must("AddMember", 0, firstErr(c.AddMember(ctx, "d4", "127.0.0.4:7901")))
	must("RemoveMember", 0, firstErr(c.RemoveMember(ctx, "d4", true)))
	must("TransferLeader", 0, firstErr(c.TransferLeader(ctx, "d2")))
	want := []string{"add d4 127.0.0.4:7901", "remove d4 force=true", "transfer d2"}
	if got := leader.raft.recorded(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("leader's membership calls: got %q, want %q", got, want)
	}

	status, _, err := c.Status(ctx)
	must("Status", 0, err)
	if status.Node != "d1" {
		t.Fatalf("Status: %+v", status)
	}
	rep, _, err := c.IPVS(ctx)
	must("IPVS", 0, err)
	if !rep.InSync {
		t.Fatalf("IPVS: %+v", rep)
	}
}

// newPair returns a leader, d1, and a follower, d2, that knows it as the
// leader and forwards to it.
func newPair(t *testing.T) (leader, follower *director) {
	t.Helper()
	leader = newDirector(t, true)
	follower = newDirector(t, false)
	u, err := url.Parse(leader.url)
	if err != nil {
		t.Fatal(err)
	}
	follower.raft.leaderID, follower.raft.leaderAPI = "d1", u.Host
	return leader, follower
}

func firstErr(_ uint64, err error) error { return err }

// TestConsistentParam checks that ?consistent=false is a plain, local read,
// and that a value that is not a boolean is refused naming the parameter.
func TestConsistentParam(t *testing.T) {
	leader, follower := newPair(t)
	seed(t, leader)

	for _, tc := range []struct {
		query string
		vips  int
	}{{"?consistent", 1}, {"?consistent=true", 1}, {"?consistent=false", 0}, {"", 0}} {
		r := do(t, "GET", follower.url+"/v1/vips"+tc.query, nil)
		if r.status != 200 || strings.Count(string(r.body.Data), `"name"`) != tc.vips {
			t.Errorf("GET /v1/vips%s: %d %s, want %d VIPs", tc.query, r.status, r.body.Data, tc.vips)
		}
	}
	r := do(t, "GET", follower.url+"/v1/vips?consistent=maybe", nil)
	if r.status != 400 || r.err.Field != "consistent" {
		t.Fatalf("bad consistent value: %d %+v", r.status, r.err)
	}
}

// TestServiceServersDefaultWeight checks that a real server given inside a
// new service gets ipvsadm's weight 1 when it names none, as one added on
// its own does.
func TestServiceServersDefaultWeight(t *testing.T) {
	d := newDirector(t, true)
	seed(t, d)
	body := map[string]any{"name": "api", "vip": "web-vip", "protocol": "tcp", "port": 443, "method": "dr",
		"servers": map[string]any{
			"10.1.0.5:443": map[string]any{"address": "10.1.0.5", "port": 443},
			"10.1.0.6:443": map[string]any{"address": "10.1.0.6", "port": 443, "weight": 0},
		}}
	if r := do(t, "POST", d.url+"/v1/services", body); r.status != 200 {
		t.Fatalf("POST service with servers: %d %+v", r.status, r.err)
	}
	svc := d.fsm.Clone().Services["api"]
	if svc == nil {
		t.Fatal("service not added")
	}
	if rs := svc.Servers["10.1.0.5:443"]; rs == nil || rs.Weight != 1 || rs.Admin != fsm.Enabled || rs.Method != fsm.DR {
		t.Errorf("server without weight: got %+v, want weight 1, enabled, dr", rs)
	}
	if rs := svc.Servers["10.1.0.6:443"]; rs == nil || rs.Weight != 0 {
		t.Errorf("server with explicit weight 0: got %+v", rs)
	}
}
