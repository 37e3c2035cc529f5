package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/cluster/watchdog"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/hooks"
	"github.com/directorate/directorate/lvs"
	"github.com/directorate/directorate/probes"
	"github.com/directorate/directorate/vip"
)

// daemon wires one director together: the FSM fed by Raft, the reconciler
// that keeps IPVS converged to it, and the API.
type daemon struct {
	cfg     *config
	log     *slog.Logger
	fsm     *fsm.FSM
	node    *cluster.Node
	backend lvs.Backend
	rec     *lvs.Reconciler
	vips    vipOwner
	duties  *duties
	ping    pingScorer // nil without ping nodes
	health  *healthMonitor
	// bootstrapToken, from bootstrap_token_file, is added by a new
	// leader while the cluster has no token; nil without the file.
	bootstrapToken *bootstrapToken
	// metrics counts reconciles; set before the loops start, nil in
	// tests that drive the daemon by hand.
	metrics *metrics

	mu      sync.Mutex
	desired *lvs.Desired
	last    api.ReconcileStatus
}

// openBackend opens the configured IPVS backend. A kernel without IPVS is
// a start-up error that says what to do, never a silent dry run.
func openBackend(cfg *config, log *slog.Logger) (lvs.Backend, error) {
	if cfg.LVS.Backend == "dry-run" {
		log.Warn("lvs.backend is dry-run: the IPVS table is kept in memory and the kernel is not programmed")
		return lvs.NewDryRun(log), nil
	}
	k, err := lvs.NewKernel(log, lvs.KernelOptions{})
	if err != nil {
		return nil, fmt.Errorf("lvs.backend kernel: %w", err)
	}
	return k, nil
}

// openVIPs opens the configured VIP backend.
func openVIPs(cfg *config, log *slog.Logger, confirm func(context.Context) error) (vipOwner, time.Duration, func(), error) {
	o := cfg.VIP.options()
	o.ConfirmLease = confirm
	opts, err := o.Resolve()
	if err != nil {
		return nil, 0, nil, err
	}
	if cfg.VIP.Backend == "dry-run" {
		log.Warn("vip.backend is dry-run: VIPs are recorded, not added to any interface")
		return newDryRunVIPs(log, opts.Lifetime), opts.RenewInterval, func() {}, nil
	}
	nl, err := vip.NewKernel()
	if err != nil {
		return nil, 0, nil, fmt.Errorf("vip.backend kernel: %w", err)
	}
	m, err := vip.NewManager(nl, vip.NewPacketAnnouncer(), log, opts)
	if err != nil {
		nl.Close()
		return nil, 0, nil, fmt.Errorf("vip: %w", err)
	}
	return m, opts.RenewInterval, nl.Close, nil
}

func runDaemon(ctx context.Context, cfg *config, log *slog.Logger) error {
	// SIGHUP reloads the TLS files. It is caught from the start: its
	// default action would kill a director that is still starting when
	// certificate automation runs `systemctl reload` on every director.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	backend, err := openBackend(cfg, log)
	if err != nil {
		return err
	}
	defer backend.Close()
	timing, err := cfg.Timing.Resolve()
	if err != nil {
		return err
	}
	// The VIP manager confirms the lease between announcements; the node
	// that answers exists only once the manager does, so it is bound late.
	lease := &lateLease{}
	confirm := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timing.LeaderLeaseTimeout)
		defer cancel()
		return lease.VerifyLeader(ctx)
	}
	vips, renew, closeVIPs, err := openVIPs(cfg, log, confirm)
	if err != nil {
		return err
	}
	defer closeVIPs()
	fence, err := vip.ParseFence(cfg.VIP.Fence)
	if err != nil {
		return err
	}

	// Listen before joining, so a taken port fails fast instead of leaving
	// a cluster member without an API.
	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("api_addr: %w", err)
	}
	defer ln.Close()
	// One load of the TLS files serves raft and the API, so a reload
	// (SIGHUP) changes both.
	var ct *clusterTLS
	if !cfg.Insecure {
		if ct, err = loadClusterTLS(cfg.TLS); err != nil {
			return err
		}
	}
	apiSec, ln := apiSecurity(ct, ln)
	var bootTok *bootstrapToken
	if cfg.BootstrapTokenFile != "" {
		if bootTok, err = loadBootstrapToken(cfg.BootstrapTokenFile); err != nil {
			return err
		}
	}

	f := fsm.New()
	d := &daemon{
		cfg: cfg, log: log, fsm: f, backend: backend, vips: vips, bootstrapToken: bootTok,
		rec: lvs.NewReconciler(backend, log, lvs.Options{ResyncInterval: cfg.LVS.ResyncInterval, RemoveGrace: cfg.LVS.removeGrace()}),
	}
	var wd leaderWatchdog = noWatchdog{}
	if cfg.Watchdog.Enabled() {
		// Opening the device would arm it, so only its presence is checked
		// here: a path that is wrong on every director would otherwise
		// make each new leader refuse its duties and hand over in turn.
		if _, err := os.Stat(cfg.Watchdog.Device); err != nil {
			return fmt.Errorf("watchdog.device: %w (load a driver such as softdog, or fix the path)", err)
		}
		w, err := watchdog.New(watchdog.OSDevice{}, cfg.Watchdog.Device, cfg.Watchdog.EffectiveTimeout(), log, watchdog.SystemClock())
		if err != nil {
			return fmt.Errorf("watchdog: %w", err)
		}
		wd = w
	}
	runner, err := hooks.NewRunner(cfg.Hooks, hooks.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("hooks: %w", err)
	}
	defer runner.Close()
	transport, ring, err := transportOptions(cfg, ct)
	if err != nil {
		return err
	}
	node, err := cluster.New(cfg.clusterConfig(version), f, append([]cluster.Option{
		cluster.WithLogger(log), cluster.WithRemoveForwarder(forwardRemove(cfg.APITimeout, apiSec.ClientTLS))}, transport...)...)
	if err != nil {
		return fmt.Errorf("start cluster node: %w", err)
	}
	d.node = node
	var keys *keyringApplier
	if ring != nil {
		keys = newKeyringApplier(f, cfg.DataDir, *ring, log)
		keys.bind(node)
	}
	lease.set(node)
	d.duties = &duties{node: cfg.NodeID, log: log, fsm: f, vips: vips, lease: node, watchdog: wd, hooks: runner,
		fence: fence, interval: renew, leaseTimeout: timing.LeaderLeaseTimeout,
		onStall: func() {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.APITimeout)
			defer cancel()
			if err := (nodeConsensus{node: node, d: d}).TransferLeadership(ctx, ""); err != nil {
				log.Error("hand leadership over after a stall", "err", err)
			}
		}}
	runner.RunAsync(hooks.Event{Role: hooks.RoleFollower, Node: cfg.NodeID})
	ipf, closePinger, err := d.newIPFail(cfg, log)
	if err != nil {
		_ = node.Shutdown(context.Background())
		return err
	}
	defer closePinger()

	d.health = newHealthMonitor(cfg.NodeID, log, f, node, nil, runner, cfg.APITimeout)
	sched, err := newScheduler(log, d.health)
	if err != nil {
		_ = node.Shutdown(context.Background())
		return err
	}
	d.health.checks = sched

	srv := newServer(cfg.NodeID, f, nodeConsensus{node: node, d: d}, d, log, cfg.APITimeout, apiSec)
	if keys != nil {
		srv.keys = keys
	}
	srv.health, srv.conns = d.health, d
	d.metrics = newMetrics(nodeConsensus{node: node, d: d}.Status, f)
	srv.metrics = d.metrics
	httpSrv := &http.Server{Handler: srv.handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: apiErrorLog(log)}
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Serve(ln) }()

	// The loops outlive the signal: they consume leadership events and keep
	// IPVS converged until the node has shut down.
	var wg sync.WaitGroup
	loopCtx, stopLoops := context.WithCancel(context.Background())
	wg.Add(4)
	go func() { defer wg.Done(); d.reconcileLoop(loopCtx) }()
	go func() { defer wg.Done(); d.leadershipLoop(loopCtx) }()
	go func() {
		defer wg.Done()
		if err := sched.Run(loopCtx); err != nil && loopCtx.Err() == nil {
			log.Error("health check scheduler stopped", "err", err)
		}
	}()
	go func() { defer wg.Done(); d.health.run(loopCtx) }()
	if keys != nil {
		wg.Add(1)
		go func() { defer wg.Done(); keys.run(loopCtx) }()
	}
	if ipf != nil {
		wg.Add(1)
		go func() { defer wg.Done(); ipf.run(loopCtx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); reloadOnHangup(loopCtx, ct, hup, log, node.RevalidatePeers) }()
	log.Info("clusterd started", "version", version, "api", cfg.APIAddr, "raft", cfg.RaftAddr,
		"gossip", cfg.GossipAddr, "backend", backend.Name())

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: a leader releases its VIPs, then hands leadership over")
	case serveErr = <-httpDone:
		serveErr = fmt.Errorf("API server: %w", serveErr)
	}

	// The API keeps answering while leadership is handed over, so clients
	// are forwarded to the new leader instead of refused.
	shutCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.duties.close(shutCtx)
	nodeErr := node.Shutdown(shutCtx)
	if err := runner.Drain(shutCtx); err != nil {
		log.Warn("role hooks still running at stop", "err", err)
	}
	runner.Run(shutCtx, hooks.Event{Role: hooks.RoleStop, Node: cfg.NodeID, Index: f.Index()})
	stopLoops()
	wg.Wait()
	if err := httpSrv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("API server shutdown", "err", err)
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return errors.Join(serveErr, nodeErr)
	}
	return nodeErr
}

// reconcileRetry is how soon a failed reconcile is tried again, rather
// than waiting for the next commit or resync.
const reconcileRetry = time.Second

// reconcileLoop converges IPVS after every applied entry, and at least
// every resync interval so that drift is repaired without a commit.
func (d *daemon) reconcileLoop(ctx context.Context) {
	changed, cancel := d.fsm.Subscribe()
	defer cancel()
	tick := time.NewTicker(d.cfg.LVS.ResyncInterval)
	defer tick.Stop()
	for {
		var retry <-chan time.Time
		res, ok := d.converge(ctx)
		switch {
		case !ok:
			retry = time.After(reconcileRetry)
		case res.Recheck > 0:
			// Removed destinations wait at weight 0 for their
			// connections to end; look at them again.
			retry = time.After(res.Recheck)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
			// The reconciler trusts its cache for a resync interval
			// counted from its last read, which a commit may have
			// triggered between two ticks: without this, a tick could
			// fall just short of the interval and drift (ipvsadm -C)
			// would wait for the next one, two intervals in all.
			d.rec.Invalidate()
		case <-retry:
		}
	}
}

// reconcile converges IPVS to the current state and reports whether the
// kernel took every change (see converge).
func (d *daemon) reconcile(ctx context.Context) bool {
	_, ok := d.converge(ctx)
	return ok
}

// converge converges IPVS to the current state. After a commit that
// touched a few services it re-converts only those (Desired.Patch), so one
// change costs the same at 10 services as at 10,000; a VIP change, a
// restore or a reader that fell behind rebuilds the whole table. It
// reports whether the kernel took every change.
func (d *daemon) converge(ctx context.Context) (lvs.Result, bool) {
	d.mu.Lock()
	prev := d.desired
	d.mu.Unlock()
	var (
		desired = prev
		err     error
	)
	since := uint64(0)
	if prev != nil {
		since = prev.Index
	}
	d.fsm.ReadChanges(since, func(st *fsm.State, services []string, full bool) {
		switch {
		case prev == nil || full:
			desired, err = lvs.DesiredFromState(st)
		case len(services) > 0:
			desired, err = prev.Patch(st, services...)
		}
	})
	if err != nil {
		// Services lvs cannot express are held back and reported by
		// `clusterctl ipvs show`; the rest are still programmed.
		d.log.Warn("some services are held back from IPVS", "index", desired.Index, "err", err)
	}
	res, err := d.rec.Reconcile(ctx, desired)
	st := api.ReconcileStatus{At: time.Now(), Index: desired.Index, Duration: res.Duration, Changes: res.Changes(), Retiring: res.Retiring}
	if err != nil {
		st.Error = err.Error()
		d.log.Error("reconcile IPVS", "index", desired.Index, "err", err)
	} else if res.Changes() > 0 || res.Resynced {
		d.log.Info("reconciled IPVS", "index", desired.Index, "changes", res.Changes(),
			"resynced", res.Resynced, "duration", res.Duration)
	}
	d.mu.Lock()
	d.desired, d.last = desired, st
	d.mu.Unlock()
	if d.metrics != nil {
		d.metrics.reconciled(err == nil)
	}
	return res, err == nil
}

// leadershipLoop turns leadership events into VIP duties: claim after
// winning (the event follows the barrier, and IPVS is already converged on
// every director), release at once on losing. While following, it removes
// stale VIPs every renew interval.
func (d *daemon) leadershipLoop(ctx context.Context) {
	tick := time.NewTicker(d.duties.interval)
	defer tick.Stop()
	// A restarted director learns which VIPs exist only as it catches up,
	// so stale ones are also looked for whenever the state changes.
	changed, unsubscribe := d.fsm.Subscribe()
	defer unsubscribe()
	d.duties.cleanupStale(ctx)
	cleaned := d.duties.currentVIPs()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// Most commits touch services, not VIPs: only a changed VIP
			// list is worth a look at the kernel's addresses.
			if cur := d.duties.currentVIPs(); !slices.Equal(cur, cleaned) {
				d.duties.cleanupStale(ctx)
				cleaned = cur
			}
		case <-tick.C:
			d.duties.cleanupStale(ctx)
		case req := <-d.node.FailbackRequests():
			if !d.node.IsLeader() || req.Term != d.node.Term() {
				continue
			}
			d.log.Info("auto_failback: handing leadership to a preferred director", "to", req.To, "healthy_for", req.HealthyFor)
			go func() {
				tctx, cancel := context.WithTimeout(ctx, d.cfg.APITimeout)
				defer cancel()
				if err := (nodeConsensus{node: d.node, d: d}).TransferLeadership(tctx, req.To); err != nil {
					d.log.Error("auto_failback transfer", "to", req.To, "err", err)
				}
			}()
		case ev, ok := <-d.node.Leadership():
			if !ok {
				return
			}
			if ev.Leader {
				d.log.Info("became leader", "term", ev.Term, "index", ev.Index)
				d.duties.becomeLeader(ev)
				if d.bootstrapToken != nil {
					go proposeBootstrapToken(ctx, d.fsm, d.node, d.bootstrapToken, d.log, ev.Term)
				}
			} else {
				d.log.Info("lost leadership", "term", ev.Term, "index", ev.Index)
				d.duties.stepDown(ctx, "lost leadership")
			}
		}
	}
}

// Report implements ipvsReporter: the kernel table next to the desired
// state, for `clusterctl ipvs show`.
func (d *daemon) Report(ctx context.Context) (api.IPVSReport, error) {
	d.mu.Lock()
	desired := d.desired
	d.mu.Unlock()
	if desired == nil {
		return api.IPVSReport{}, &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable,
			Message: "the first reconcile of the IPVS table has not run yet; retry shortly"}
	}
	rep, err := d.rec.Report(ctx, desired)
	if err != nil {
		return api.IPVSReport{}, err
	}
	return toIPVSReport(d.cfg.NodeID, d.backend.Name(), desired.Index, rep), nil
}

func (d *daemon) lastReconcile() api.ReconcileStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// newIPFail starts the ping monitor when ping nodes are configured, and
// returns the ipfail loop that acts on its scores (nil without ping nodes).
func (d *daemon) newIPFail(cfg *config, log *slog.Logger) (*ipfail, func(), error) {
	if len(cfg.Ping.Nodes) == 0 && len(cfg.Ping.Groups) == 0 {
		return nil, func() {}, nil
	}
	pinger, err := probes.NewICMPPinger(probes.ICMPOptions{Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("ping_nodes: %w", err)
	}
	opts := cfg.PingOptions.PingOptions
	opts.Logger = log
	mon, err := probes.NewPingMonitor(cfg.Ping, pinger, opts)
	if err != nil {
		pinger.Close()
		return nil, nil, fmt.Errorf("ping: %w", err)
	}
	arb, err := probes.NewArbiter(probes.ArbiterOptions{Hysteresis: cfg.PingOptions.Hysteresis})
	if err != nil {
		pinger.Close()
		return nil, nil, fmt.Errorf("ping.hysteresis: %w", err)
	}
	d.ping = mon
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		if err := mon.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("ping monitor stopped", "err", err)
		}
	}()
	interval := opts.Interval
	if interval == 0 {
		interval = probes.DefaultPingInterval
	}
	p := &ipfail{log: log, monitor: mon, node: d.node, arbiter: arb, interval: interval,
		reclaim: func() {
			d.duties.becomeLeader(cluster.LeadershipEvent{Leader: true, Term: d.node.Term(), Index: d.node.AppliedIndex()})
		},
		handOver: func(ctx context.Context, to string, release bool) {
			if !release {
				if err := (nodeConsensus{node: d.node, d: d}).TransferLeadership(ctx, to); err != nil {
					log.Error("ipfail transfer", "to", to, "err", err)
				}
				return
			}
			d.duties.stepDown(ctx, "ipfail: this leader reaches no ping node while "+to+" does")
			if err := d.node.TransferLeadership(ctx, to); err != nil {
				log.Error("ipfail transfer; the VIPs stay released", "to", to, "err", err)
			}
		}}
	return p, func() { cancel(); pinger.Close() }, nil
}

// lateLease answers lease checks once the cluster node exists, and
// refuses them before.
type lateLease struct {
	mu   sync.Mutex
	node leaseChecker
}

func (l *lateLease) set(n leaseChecker) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.node = n
}

func (l *lateLease) VerifyLeader(ctx context.Context) error {
	l.mu.Lock()
	n := l.node
	l.mu.Unlock()
	if n == nil {
		return cluster.ErrNotLeader
	}
	return n.VerifyLeader(ctx)
}

// Connections implements connectionReader: it reads one service from the
// kernel (not the whole table, which takes seconds at scale) for
// `clusterctl server drain --wait`.
func (d *daemon) Connections(ctx context.Context, service string, server netip.AddrPort) (api.Connections, error) {
	out := api.Connections{Node: d.cfg.NodeID, Service: service, Server: server.String()}
	var (
		key lvs.ServiceKey
		err error
	)
	d.fsm.Read(func(st *fsm.State) {
		svc, ok := st.Services[service]
		if !ok {
			err = &fsm.FieldError{Field: "service", Reason: fmt.Sprintf("no service named %q", service), Kind: fsm.ErrNotFound}
			return
		}
		key, err = lvs.ServiceKeyOf(st, svc)
	})
	if err != nil {
		return out, err
	}
	svc, err := d.rec.ReadService(ctx, key)
	if errors.Is(err, lvs.ErrServiceNotFound) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	if dst := svc.Dest(server); dst != nil {
		out.Present = true
		out.Weight, out.Active, out.Inactive = int(dst.Weight), int(dst.ActiveConns), int(dst.InactiveConns)
	}
	return out, nil
}
