package main

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// metricsNamespace prefixes every metric clusterd exports.
const metricsNamespace = "directorate"

// metrics is one director's Prometheus registry. State (role, VIPs, the
// last reconcile, health) is read when scraped, from the same sources as
// `clusterctl status`, so it cannot drift from them; only events are
// counted as they happen. Each daemon has its own registry: nothing is
// registered globally.
type metrics struct {
	reg *prometheus.Registry
	// reconciles counts IPVS reconciles by result: ok or error.
	reconciles *prometheus.CounterVec
	// requests and latency instrument the API, by method and status.
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(status func() api.Status, f *fsm.FSM) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: "ipvs", Name: "reconciles_total",
			Help: "IPVS reconciles on this director, by result (ok, error).",
		}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Subsystem: "api", Name: "requests_total",
			Help: "API requests this director answered, by method and HTTP status (denials included).",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Subsystem: "api", Name: "request_duration_seconds",
			Help:    "Time to answer an API request, forwarding to the leader and the commit included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"method", "code"}),
	}
	m.reconciles.WithLabelValues("ok")
	m.reconciles.WithLabelValues("error")
	m.reg.MustRegister(m.reconciles, m.requests, m.latency,
		&stateCollector{status: status, fsm: f, d: newStateDescs()},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: metricsNamespace}))
	return m
}

// handler serves the registry in the Prometheus exposition format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// instrument counts and times every request h answers.
func (m *metrics) instrument(h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(m.requests, promhttp.InstrumentHandlerDuration(m.latency, h))
}

// reconciled counts one reconcile.
func (m *metrics) reconciled(ok bool) {
	if ok {
		m.reconciles.WithLabelValues("ok").Inc()
	} else {
		m.reconciles.WithLabelValues("error").Inc()
	}
}

// stateCollector turns the director's status and the replicated state
// into gauges at each scrape.
type stateCollector struct {
	status func() api.Status
	fsm    *fsm.FSM
	d      stateDescs
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(metricsNamespace+"_"+name, help, labels, nil)
}

type stateDescs struct {
	info, leader, term, index, voters, contact, latePeers        *prometheus.Desc
	vipHeld, vipExpiry                                           *prometheus.Desc
	lastReconcile, reconcileDuration, reconcileFailing, retiring *prometheus.Desc
	services, servers, serverHealthy, serverWeight, quorumLost   *prometheus.Desc
	pingScore, pingMax                                           *prometheus.Desc
}

func newStateDescs() stateDescs {
	return stateDescs{
		info:              desc("build_info", "Always 1; the labels say which director runs which version.", "node", "version"),
		leader:            desc("leader", "1 while this director is the Raft leader, which owns the VIPs.", "node"),
		term:              desc("raft_term", "The Raft term this director is in.", "node"),
		index:             desc("raft_applied_index", "The index of the last log entry applied: the configuration version.", "node"),
		voters:            desc("raft_voters", "Voters in the Raft configuration.", "node"),
		contact:           desc("raft_last_leader_contact_age_seconds", "On a follower, the time since it last heard from the leader.", "node"),
		latePeers:         desc("late_peers", "On the leader, voters not heard from for longer than warn_time.", "node"),
		vipHeld:           desc("vip_held", "1 for each VIP this director holds; every VIP is listed.", "node", "vip"),
		vipExpiry:         desc("vip_lifetime_remaining_seconds", "On the holder, how long the kernel would keep the VIP without another renewal.", "node", "vip"),
		lastReconcile:     desc("ipvs_last_reconcile_timestamp_seconds", "When the IPVS reconciler last ran on this director.", "node"),
		reconcileDuration: desc("ipvs_last_reconcile_duration_seconds", "How long the last IPVS reconcile took.", "node"),
		reconcileFailing:  desc("ipvs_last_reconcile_failed", "1 when the last IPVS reconcile failed.", "node"),
		retiring:          desc("ipvs_retiring_destinations", "Removed real servers held at weight 0 until their connections end.", "node"),
		services:          desc("services", "Virtual services in the replicated state.", "node"),
		servers:           desc("real_servers", "Real servers in the replicated state.", "node"),
		serverHealthy:     desc("real_server_healthy", "1 when the directors agree a real server is up (or it has no check), 0 when down.", "service", "server"),
		serverWeight:      desc("real_server_weight", "A real server's configured weight; admin is enabled, drained or disabled.", "service", "server", "admin"),
		quorumLost:        desc("service_quorum_lost", "1 while a service is below its quorum (its sorry server, if any, answers).", "service"),
		pingScore:         desc("ping_score", "Ping nodes and groups this director reaches.", "node"),
		pingMax:           desc("ping_score_max", "Ping nodes and groups configured.", "node"),
	}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	d := c.d
	for _, x := range []*prometheus.Desc{d.info, d.leader, d.term, d.index, d.voters, d.contact, d.latePeers,
		d.vipHeld, d.vipExpiry, d.lastReconcile, d.reconcileDuration, d.reconcileFailing, d.retiring,
		d.services, d.servers, d.serverHealthy, d.serverWeight, d.quorumLost, d.pingScore, d.pingMax} {
		ch <- x
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	st := c.status()
	now := time.Now()
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	n := st.Node
	gauge(d.info, 1, n, st.Version)
	gauge(d.leader, b2f(st.State == "Leader"), n)
	gauge(d.term, float64(st.Term), n)
	gauge(d.index, float64(st.Index), n)
	gauge(d.voters, float64(st.Voters), n)
	if st.State != "Leader" && !st.LastLeaderContact.IsZero() {
		gauge(d.contact, now.Sub(st.LastLeaderContact).Seconds(), n)
	}
	gauge(d.latePeers, float64(len(st.LatePeers)), n)
	for _, v := range st.VIPs {
		gauge(d.vipHeld, b2f(v.Holder == n), n, v.Name)
		if !v.Expires.IsZero() {
			gauge(d.vipExpiry, max(v.Expires.Sub(now).Seconds(), 0), n, v.Name)
		}
	}
	if r := st.LastReconcile; !r.At.IsZero() {
		gauge(d.lastReconcile, float64(r.At.UnixNano())/1e9, n)
		gauge(d.reconcileDuration, r.Duration.Seconds(), n)
		gauge(d.reconcileFailing, b2f(r.Error != ""), n)
		gauge(d.retiring, float64(r.Retiring), n)
	}
	gauge(d.services, float64(st.Services), n)
	gauge(d.servers, float64(st.Servers), n)
	if p := st.Ping; p != nil {
		gauge(d.pingScore, float64(p.Value), n)
		gauge(d.pingMax, float64(p.Max), n)
	}
	// Copied under the read lock and sent after it: the registry may
	// block on the channel, and raft's Apply waits for the lock.
	type server struct {
		service, key, admin string
		healthy             bool
		weight              int
	}
	var (
		servers []server
		lost    = map[string]bool{}
	)
	c.fsm.Read(func(s *fsm.State) {
		for name, svc := range s.Services {
			lost[name] = svc.QuorumLost
			for key, rs := range svc.Servers {
				servers = append(servers, server{name, key, string(rs.Admin), rs.Healthy(), rs.Weight})
			}
		}
	})
	for name, l := range lost {
		gauge(d.quorumLost, b2f(l), name)
	}
	for _, sv := range servers {
		gauge(d.serverHealthy, b2f(sv.healthy), sv.service, sv.key)
		gauge(d.serverWeight, float64(sv.weight), sv.service, sv.key, sv.admin)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
