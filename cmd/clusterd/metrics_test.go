package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// TestMetrics scrapes a leader's /metrics: the gauges say what its status
// and the replicated state say, and the counters count API requests and
// reconciles.
func TestMetrics(t *testing.T) {
	f := fsm.New()
	c := &fakeConsensus{fsm: f, leader: true}
	at := time.Now().Add(-time.Second)
	status := func() api.Status {
		return api.Status{Node: "d1", Version: "v9", State: "Leader", Term: 7, Index: f.Index(), Voters: 3,
			VIPs: []api.VIPHolder{
				{Name: "web-vip", Holder: "d1", Expires: time.Now().Add(time.Hour)},
				{Name: "other", Holder: "d2"},
			},
			LastReconcile: api.ReconcileStatus{At: at, Duration: 1500 * time.Microsecond, Retiring: 2},
			Ping:          &api.PingScore{Value: 1, Max: 2, Ready: true},
			LatePeers:     []string{"d3"},
		}
	}
	srv := newServer("d1", f, c, noIPVS{}, testLogger(t), 2*time.Second, security{Insecure: true})
	srv.metrics = newMetrics(status, f)
	ts := httptest.NewServer(srv.handler())
	t.Cleanup(ts.Close)
	d := &director{fsm: f, raft: c, url: ts.URL}
	seed(t, d)
	do(t, "POST", d.url+"/v1/services/web/servers", map[string]any{"address": "10.1.0.2", "port": 80, "weight": 5})
	if _, err := c.Propose(context.Background(), fsm.UpdateService{Name: "web", Patch: fsm.ServicePatch{Check: &fsm.CheckConfig{Kind: fsm.CheckTCP}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Propose(context.Background(), fsm.SetHealth{Updates: []fsm.HealthUpdate{{Service: "web", Server: "10.1.0.1:80", State: fsm.HealthDown}}}); err != nil {
		t.Fatal(err)
	}
	srv.metrics.reconciled(true)
	srv.metrics.reconciled(true)
	srv.metrics.reconciled(false)
	do(t, "GET", d.url+"/v1/nope", nil)

	want := `
# HELP directorate_leader 1 while this director is the Raft leader, which owns the VIPs.
# TYPE directorate_leader gauge
directorate_leader{node="d1"} 1
# HELP directorate_raft_term The Raft term this director is in.
# TYPE directorate_raft_term gauge
directorate_raft_term{node="d1"} 7
# HELP directorate_vip_held 1 for each VIP this director holds; every VIP is listed.
# TYPE directorate_vip_held gauge
directorate_vip_held{node="d1",vip="other"} 0
directorate_vip_held{node="d1",vip="web-vip"} 1
# HELP directorate_ipvs_retiring_destinations Removed real servers held at weight 0 until their connections end.
# TYPE directorate_ipvs_retiring_destinations gauge
directorate_ipvs_retiring_destinations{node="d1"} 2
# HELP directorate_ipvs_last_reconcile_failed 1 when the last IPVS reconcile failed.
# TYPE directorate_ipvs_last_reconcile_failed gauge
directorate_ipvs_last_reconcile_failed{node="d1"} 0
# HELP directorate_ipvs_reconciles_total IPVS reconciles on this director, by result (ok, error).
# TYPE directorate_ipvs_reconciles_total counter
directorate_ipvs_reconciles_total{result="error"} 1
directorate_ipvs_reconciles_total{result="ok"} 2
# HELP directorate_real_server_healthy 1 when the directors agree a real server is up (or it has no check), 0 when down.
# TYPE directorate_real_server_healthy gauge
directorate_real_server_healthy{server="10.1.0.1:80",service="web"} 0
directorate_real_server_healthy{server="10.1.0.2:80",service="web"} 1
# HELP directorate_real_server_weight A real server's configured weight; admin is enabled, drained or disabled.
# TYPE directorate_real_server_weight gauge
directorate_real_server_weight{admin="enabled",server="10.1.0.1:80",service="web"} 1
directorate_real_server_weight{admin="enabled",server="10.1.0.2:80",service="web"} 5
# HELP directorate_late_peers On the leader, voters not heard from for longer than warn_time.
# TYPE directorate_late_peers gauge
directorate_late_peers{node="d1"} 1
# HELP directorate_ping_score Ping nodes and groups this director reaches.
# TYPE directorate_ping_score gauge
directorate_ping_score{node="d1"} 1
`
	names := []string{"directorate_leader", "directorate_raft_term", "directorate_vip_held", "directorate_ipvs_retiring_destinations",
		"directorate_ipvs_last_reconcile_failed", "directorate_ipvs_reconciles_total", "directorate_real_server_healthy",
		"directorate_real_server_weight", "directorate_late_peers", "directorate_ping_score"}
	if err := testutil.GatherAndCompare(srv.metrics.reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}

	// Over HTTP, in the exposition format, with the request counters.
	resp, err := http.Get(d.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, line := range []string{
		`directorate_api_requests_total{code="200",method="post"} 4`,
		`directorate_api_requests_total{code="404",method="get"} 1`,
		`directorate_build_info{node="d1",version="v9"} 1`,
		`directorate_service_quorum_lost{service="web"} 0`,
		`directorate_vip_lifetime_remaining_seconds{node="d1",vip="web-vip"} 3`,
		"directorate_process_cpu_seconds_total",
		"go_goroutines",
	} {
		if !strings.Contains(string(body), line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// TestMetricsNeedAReadToken: Prometheus scrapes with a read token, and
// nobody scrapes without one.
func TestMetricsNeedAReadToken(t *testing.T) {
	p := newTestPKI(t)
	d := newSecureDirector(t, p, true, func(s *server) { s.metrics = newMetrics(s.raft.Status, s.fsm) })
	url := d.url + "/metrics"
	read := d.addToken(t, "reader000001", fsm.RoleRead)
	hc := p.httpClient()
	if r := doAs(t, hc, "GET", url, "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without a token: %d, want 401", r.status)
	}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+read)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `directorate_leader{node="d1"} 1`) {
		t.Fatalf("GET /metrics with a read token: %d\n%s", resp.StatusCode, body)
	}
}

// BenchmarkMetricsScrape gathers the registry of a director whose state
// has 1,000 services of 10 real servers: what one Prometheus scrape costs,
// and how long it holds the state's read lock (the copy) is a part of it.
func BenchmarkMetricsScrape(b *testing.B) {
	f := fsm.New()
	c := &fakeConsensus{fsm: f, leader: true}
	propose := func(cmd fsm.Command) {
		if _, err := c.Propose(context.Background(), cmd); err != nil {
			b.Fatal(err)
		}
	}
	propose(fsm.AddVIP{VIP: fsm.VIP{Name: "v", Prefix: netip.MustParsePrefix("192.0.2.1/24")}})
	for i := range 1000 {
		svc := fsm.Service{Name: fmt.Sprintf("s%d", i), VIP: "v", Protocol: fsm.TCP, Port: 1000 + i, Scheduler: "wlc", Method: fsm.NAT,
			Servers: map[string]*fsm.RealServer{}}
		for j := range 10 {
			addr := netip.AddrFrom4([4]byte{10, 1, byte(i / 25), byte(j + 10*(i%25))})
			rs := &fsm.RealServer{Address: addr, Port: 8080, Weight: 1, Admin: fsm.Enabled}
			svc.Servers[rs.Key()] = rs
		}
		propose(fsm.AddService{Service: svc})
	}
	status := func() api.Status { return api.Status{Node: "d1", State: "Leader", Services: 1000, Servers: 10000} }
	m := newMetrics(status, f)
	series := 0
	for b.Loop() {
		mfs, err := m.reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		series = 0
		for _, mf := range mfs {
			series += len(mf.GetMetric())
		}
	}
	b.ReportMetric(float64(series), "series")
}
