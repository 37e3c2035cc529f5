package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/cluster/watchdog"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/hooks"
	"github.com/directorate/directorate/lvs"
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
func openVIPs(cfg *config, log *slog.Logger) (vipOwner, time.Duration, func(), error) {
	opts, err := cfg.VIP.options().Resolve()
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
	backend, err := openBackend(cfg, log)
	if err != nil {
		return err
	}
	defer backend.Close()
	vips, renew, closeVIPs, err := openVIPs(cfg, log)
	if err != nil {
		return err
	}
	defer closeVIPs()
	timing, err := cfg.Timing.Resolve()
	if err != nil {
		return err
	}
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

	f := fsm.New()
	d := &daemon{
		cfg: cfg, log: log, fsm: f, backend: backend, vips: vips,
		rec: lvs.NewReconciler(backend, log, lvs.Options{ResyncInterval: cfg.LVS.ResyncInterval}),
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
	node, err := cluster.New(cfg.clusterConfig(version), f,
		cluster.WithLogger(log), cluster.WithRemoveForwarder(forwardRemove(cfg.APITimeout)))
	if err != nil {
		return fmt.Errorf("start cluster node: %w", err)
	}
	d.node = node
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

	srv := newServer(cfg.NodeID, f, nodeConsensus{node: node, d: d}, d, log, cfg.APITimeout)
	httpSrv := &http.Server{Handler: srv.handler(), ReadHeaderTimeout: 10 * time.Second}
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Serve(ln) }()

	// The loops outlive the signal: they consume leadership events and keep
	// IPVS converged until the node has shut down.
	var wg sync.WaitGroup
	loopCtx, stopLoops := context.WithCancel(context.Background())
	wg.Add(2)
	go func() { defer wg.Done(); d.reconcileLoop(loopCtx) }()
	go func() { defer wg.Done(); d.leadershipLoop(loopCtx) }()
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
		if !d.reconcile(ctx) {
			retry = time.After(reconcileRetry)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		case <-retry:
		}
	}
}

// reconcile converges IPVS to the current state. After a commit that
// touched a few services it re-converts only those (Desired.Patch), so one
// change costs the same at 10 services as at 10,000; a VIP change, a
// restore or a reader that fell behind rebuilds the whole table. It
// reports whether the kernel took every change.
func (d *daemon) reconcile(ctx context.Context) bool {
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
	st := api.ReconcileStatus{At: time.Now(), Index: desired.Index, Duration: res.Duration, Changes: res.Changes()}
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
	return err == nil
}

// leadershipLoop turns leadership events into VIP duties: claim after
// winning (the event follows the barrier, and IPVS is already converged on
// every director), release at once on losing. While following, it removes
// stale VIPs every renew interval.
func (d *daemon) leadershipLoop(ctx context.Context) {
	tick := time.NewTicker(d.duties.interval)
	defer tick.Stop()
	d.duties.cleanupStale(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.duties.cleanupStale(ctx)
		case ev, ok := <-d.node.Leadership():
			if !ok {
				return
			}
			if ev.Leader {
				d.log.Info("became leader", "term", ev.Term, "index", ev.Index)
				d.duties.becomeLeader(ev)
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

// forwardRemove lets a leader asked to remove itself have the new leader
// do it, through that leader's API.
func forwardRemove(timeout time.Duration) cluster.RemoveForwarder {
	return func(ctx context.Context, leaderID, addr, id string, force bool) error {
		c, err := api.New(addr, api.WithTimeout(timeout))
		if err != nil {
			return fmt.Errorf("reach new leader %s: %w", leaderID, err)
		}
		if _, err := c.RemoveMember(ctx, id, force); err != nil {
			return fmt.Errorf("remove %s through new leader %s: %w", id, leaderID, err)
		}
		return nil
	}
}
