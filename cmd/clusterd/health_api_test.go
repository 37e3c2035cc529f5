package main

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/lvs"
)

// fakeConns answers connection reads with counts the test sets.
type fakeConns struct {
	mu     sync.Mutex
	byAddr map[netip.AddrPort]api.Connections
}

func (c *fakeConns) Connections(_ context.Context, service string, server netip.AddrPort) (api.Connections, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, ok := c.byAddr[server]
	if !ok {
		out = api.Connections{Node: "d1"}
	}
	out.Service, out.Server = service, server.String()
	return out, nil
}

type fixedLive map[string]map[string]string

func (f fixedLive) liveViews(service string) map[string]map[string]string {
	if service != "web" {
		return nil
	}
	return f
}

func TestHealthAndConnectionsEndpoints(t *testing.T) {
	f := fsm.New()
	c := &fakeConsensus{fsm: f, leader: true}
	healthState(t, c)
	apply(t, c, fsm.SetHealth{Updates: []fsm.HealthUpdate{{Service: "web", Server: "10.1.0.2:80", State: "down",
		Views: map[string]string{"d1": "down", "d2": "down", "d3": "up"}}}})
	srv := newServer("d1", f, c, noIPVS{}, testLogger(t), 2*time.Second, security{Insecure: true})
	srv.health = fixedLive{"10.1.0.1:80": {"d1": "up", "d2": "up"}, "10.1.0.2:80": {"d1": "down"}}
	srv.conns = &fakeConns{byAddr: map[netip.AddrPort]api.Connections{
		netip.AddrPortFrom(rsA, 80): {Node: "d1", Present: true, Active: 3, Inactive: 2}}}
	ts := httptest.NewServer(srv.handler())
	t.Cleanup(ts.Close)
	// The follower forwards connection reads to the leader.
	fc := &fakeConsensus{fsm: fsm.New(), leaderID: "d1"}
	u, _ := url.Parse(ts.URL)
	fc.leaderAPI = u.Host
	fts := httptest.NewServer(newServer("d2", fc.fsm, fc, noIPVS{}, testLogger(t), 2*time.Second, security{Insecure: true}).handler())
	t.Cleanup(fts.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leader, err := api.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := leader.ServiceHealth(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if h.Node != "d1" || h.Quorum != 2 || h.HealthyWeight != 1 || !h.QuorumLost || len(h.Servers) != 2 {
		t.Fatalf("health: %+v", h)
	}
	a, b := h.Servers[0], h.Servers[1]
	if a.Server != "10.1.0.1:80" || a.Check != "tcp" || a.State != "" || a.Live["d2"] != "up" {
		t.Errorf("server A: %+v", a)
	}
	if b.State != "down" || b.Index == 0 || b.Views["d3"] != "up" || b.Live["d1"] != "down" {
		t.Errorf("server B: %+v", b)
	}
	if _, _, err := leader.ServiceHealth(ctx, "nope"); !isCode(err, api.CodeNotFound) {
		t.Errorf("health of an unknown service: %v", err)
	}

	follower, err := api.New(fts.URL)
	if err != nil {
		t.Fatal(err)
	}
	conns, _, err := follower.Connections(ctx, "web", rsA, 80)
	if err != nil {
		t.Fatal(err)
	}
	if conns != (api.Connections{Node: "d1", Service: "web", Server: "10.1.0.1:80", Present: true, Active: 3, Inactive: 2}) {
		t.Errorf("connections: %+v", conns)
	}
	// A server the kernel does not have is reported absent, not as an
	// error.
	conns, _, err = leader.Connections(ctx, "web", rsB, 80)
	if err != nil || conns.Present {
		t.Errorf("connections of a server absent from the kernel: %+v, %v", conns, err)
	}
	if _, _, err := leader.Connections(ctx, "web", netip.MustParseAddr("10.7.7.7"), 80); !isCode(err, api.CodeNotFound) {
		t.Errorf("connections of an unknown server: %v", err)
	}
}

func isCode(err error, code string) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == code
}

// TestDaemonConnectionsReadsOneKernelService reads the counters through
// the reconciler's one-service read, as drain --wait does on the leader.
func TestDaemonConnectionsReadsOneKernelService(t *testing.T) {
	d, fake, a := newTestDaemon(t)
	ctx := context.Background()
	a.apply(fsm.AddVIP{VIP: fsm.VIP{Name: "v", Prefix: netip.MustParsePrefix("192.0.2.10/24")}},
		fsm.AddService{Service: fsm.Service{Name: "web", VIP: "v", Protocol: fsm.TCP, Port: 80, Scheduler: "wlc", Method: fsm.DR}},
		fsm.AddServer{Service: "web", Server: fsm.RealServer{Address: rsA, Port: 80, Weight: 5}})
	target := netip.AddrPortFrom(rsA, 80)
	// Not programmed yet: absent, not an error.
	got, err := d.Connections(ctx, "web", target)
	if err != nil || got.Present {
		t.Fatalf("before the first reconcile: %+v, %v", got, err)
	}
	if !d.reconcile(ctx) {
		t.Fatal("reconcile failed")
	}
	var key lvs.ServiceKey
	d.fsm.Read(func(st *fsm.State) { key, err = lvs.ServiceKeyOf(st, st.Services["web"]) })
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.SetConns(key, target, 4, 7); err != nil {
		t.Fatal(err)
	}
	got, err = d.Connections(ctx, "web", target)
	if err != nil {
		t.Fatal(err)
	}
	if got != (api.Connections{Node: "d1", Service: "web", Server: "10.1.0.1:80", Present: true, Weight: 5, Active: 4, Inactive: 7}) {
		t.Errorf("connections %+v", got)
	}
	if got, err := d.Connections(ctx, "web", netip.AddrPortFrom(rsB, 80)); err != nil || got.Present {
		t.Errorf("a server the kernel lacks: %+v, %v", got, err)
	}
	if _, err := d.Connections(ctx, "nope", target); !errors.Is(err, fsm.ErrNotFound) {
		t.Errorf("unknown service: %v", err)
	}
}
