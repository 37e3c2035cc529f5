package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/fsm"
	"github.com/directorate/directorate/hooks"
	"github.com/directorate/directorate/probes"
)

// Health checking on one director:
//
//   - Every director runs the checks the replicated state asks for
//     (fsm.EffectiveCheck), each distinct check once however many services
//     share it, and publishes its view of every checked server through
//     gossip (cluster.Node.SetHealthViews).
//   - The leader applies the agreement rule (cluster.Agree) to every
//     director's views and proposes the transitions, in batches, as
//     health.set commands; Apply then re-derives each service's quorum.
//   - The leader runs the quorum hooks when a commit flips a service's
//     QuorumLost.

// healthNode is what the health monitor needs of the cluster node.
type healthNode interface {
	SetHealthViews(map[cluster.HealthKey]string)
	HealthVoters() map[string]cluster.Voter
	HealthChanged() <-chan struct{}
	IsLeader() bool
	Term() uint64
	Propose(ctx context.Context, cmd fsm.Command) (uint64, error)
}

// checkRunner is the probes.Scheduler, or a fake.
type checkRunner interface {
	Set(specs []probes.CheckSpec)
	Statuses() []probes.CheckStatus
}

// maxHealthBatch bounds the updates of one health.set command, so that a
// whole site failing at once still commits in entries of reasonable size.
const maxHealthBatch = 1000

// healthPass is the shortest time between two passes of the monitor: a
// burst of check results, gossip messages or commits is handled in one
// pass rather than one each. It adds at most this much to the time from a
// failure to weight 0.
const healthPass = 50 * time.Millisecond

// healthResync re-runs every step at least this often, so a proposal that
// failed (say, during an election) is retried without waiting for the
// next change.
const healthResync = time.Second

type healthMonitor struct {
	node    string
	log     *slog.Logger
	fsm     *fsm.FSM
	cluster healthNode
	checks  checkRunner
	hooks   hookRunner
	timeout time.Duration

	kick chan struct{}

	mu sync.Mutex
	// specs maps every checked server to its check.
	specs map[cluster.HealthKey]probes.CheckSpec
	// published is the last views handed to gossip.
	published map[cluster.HealthKey]string

	// quorumLost is the leader's baseline for quorum hooks; nil while not
	// leading.
	quorumLost map[string]bool

	// What the last read of the state found; only run's goroutine (or a
	// test calling pass) touches these.
	committed map[cluster.HealthKey]string
	lost      map[string]bool
	index     uint64
}

func newHealthMonitor(node string, log *slog.Logger, f *fsm.FSM, c healthNode, checks checkRunner, h hookRunner, timeout time.Duration) *healthMonitor {
	return &healthMonitor{node: node, log: log.With("component", "health"), fsm: f, cluster: c, checks: checks,
		hooks: h, timeout: timeout, kick: make(chan struct{}, 1)}
}

// checkChanged is the scheduler's OnChange: it must not block.
func (h *healthMonitor) checkChanged(probes.CheckStatus) {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// run keeps the checks, the published views, the leader's proposals and
// the quorum hooks current until ctx ends. Each pass redoes only what its
// causes call for: at 10,000 servers a full pass costs tens of
// milliseconds, which a leader cannot spend every 50 ms.
func (h *healthMonitor) run(ctx context.Context) {
	changed, unsubscribe := h.fsm.Subscribe()
	defer unsubscribe()
	resync := time.NewTicker(healthResync)
	defer resync.Stop()
	why := passAll
	for {
		last := time.Now()
		h.passFor(ctx, why)
		why = 0
		select {
		case <-ctx.Done():
			return
		case <-changed:
			why |= passState
		case <-h.kick:
			why |= passChecks
		case <-h.cluster.HealthChanged():
			why |= passViews
		case <-resync.C:
			why |= passResync
		}
		// Coalesce a burst: what arrives meanwhile joins this pass.
		if wait := healthPass - time.Since(last); wait > 0 {
			timer := time.NewTimer(wait)
		collect:
			for {
				select {
				case <-ctx.Done():
					timer.Stop()
					return
				case <-changed:
					why |= passState
				case <-h.kick:
					why |= passChecks
				case <-h.cluster.HealthChanged():
					why |= passViews
				case <-timer.C:
					break collect
				}
			}
		}
	}
}

// passCause says what a pass must look at again.
type passCause uint8

const (
	// passState: a commit; the checks, the committed health and the
	// quorum may have changed.
	passState passCause = 1 << iota
	// passChecks: a check changed health.
	passChecks
	// passViews: another director's views changed.
	passViews
	// passResync: periodic; the leader retries the agreement.
	passResync
	passAll = passState | passChecks | passViews | passResync
)

// pass runs every step once.
func (h *healthMonitor) pass(ctx context.Context) { h.passFor(ctx, passAll) }

func (h *healthMonitor) passFor(ctx context.Context, why passCause) {
	if why&passState != 0 || h.committed == nil {
		var specs map[cluster.HealthKey]probes.CheckSpec
		h.fsm.Read(func(st *fsm.State) {
			specs, h.committed = checksFromState(st)
			h.lost = quorumState(st)
			h.index = st.Index
		})
		// Outside the read lock: Apply waits for it.
		if h.syncChecks(specs) {
			why |= passChecks
		}
	}
	if why&passChecks != 0 {
		h.publish()
	}
	if !h.cluster.IsLeader() {
		h.quorumLost = nil
		return
	}
	if h.quorumLost == nil {
		// Just became leader: look at everything.
		why = passAll
	}
	h.quorumHooks(h.lost, h.index)
	if why&(passState|passViews|passResync) != 0 {
		h.propose(ctx, h.committed)
	}
}

// syncChecks hands the scheduler the distinct checks of specs when they
// changed, and reports whether they did.
func (h *healthMonitor) syncChecks(specs map[cluster.HealthKey]probes.CheckSpec) bool {
	h.mu.Lock()
	same := len(specs) == len(h.specs)
	if same {
		for k, s := range specs {
			if h.specs[k] != s {
				same = false
				break
			}
		}
	}
	h.specs = specs
	h.mu.Unlock()
	if same {
		return false
	}
	distinct := make(map[probes.CheckSpec]struct{}, len(specs))
	for _, s := range specs {
		distinct[s] = struct{}{}
	}
	list := make([]probes.CheckSpec, 0, len(distinct))
	for s := range distinct {
		list = append(list, s)
	}
	h.checks.Set(list)
	h.log.Info("health checks updated", "node", h.node, "servers", len(specs), "checks", len(list))
	return true
}

// publish hands gossip this director's view of every checked server.
func (h *healthMonitor) publish() {
	statuses := h.checks.Statuses()
	byspec := make(map[probes.CheckSpec]probes.Health, len(statuses))
	for _, st := range statuses {
		byspec[st.Spec] = st.Health
	}
	h.mu.Lock()
	views := make(map[cluster.HealthKey]string, len(h.specs))
	for k, s := range h.specs {
		v, ok := byspec[s]
		if !ok {
			v = probes.HealthUnknown
		}
		views[k] = string(v)
	}
	same := len(views) == len(h.published)
	if same {
		for k, v := range views {
			if h.published[k] != v {
				same = false
				break
			}
		}
	}
	h.published = views
	h.mu.Unlock()
	if !same {
		h.cluster.SetHealthViews(views)
	}
}

// propose commits what the directors agree on and the state does not say
// yet.
func (h *healthMonitor) propose(ctx context.Context, committed map[cluster.HealthKey]string) {
	trans := cluster.Agree(committed, h.cluster.HealthVoters())
	if len(trans) == 0 {
		return
	}
	term := h.cluster.Term()
	for start := 0; start < len(trans); start += maxHealthBatch {
		batch := trans[start:min(start+maxHealthBatch, len(trans))]
		cmd := fsm.SetHealth{Updates: make([]fsm.HealthUpdate, 0, len(batch))}
		for _, t := range batch {
			cmd.Updates = append(cmd.Updates, fsm.HealthUpdate{Service: t.Key.Service, Server: t.Key.Server, State: t.State, Views: t.Views})
		}
		pctx, cancel := context.WithTimeout(ctx, h.timeout)
		index, err := h.cluster.Propose(pctx, cmd)
		cancel()
		if err != nil {
			// Retried at the next pass; the views are still there.
			h.log.Warn("cannot commit agreed health; retrying", "node", h.node, "term", term, "updates", len(batch), "err", err)
			return
		}
		for i, t := range batch {
			if i == 20 {
				h.log.Info("health agreed: more transitions in the same commit", "node", h.node, "term", term, "index", index, "more", len(batch)-i)
				break
			}
			h.log.Info("health agreed", "node", h.node, "term", term, "index", index,
				"service", t.Key.Service, "server", t.Key.Server, "state", t.State, "views", t.Views)
		}
	}
}

// quorumHooks runs on_quorum_lost and on_quorum_regained for services
// whose QuorumLost changed since the last pass of this leadership. A
// director that just became leader takes the state as it finds it:
// transitions committed under the previous leader were its to report.
func (h *healthMonitor) quorumHooks(lost map[string]bool, index uint64) {
	prev := h.quorumLost
	h.quorumLost = lost
	if prev == nil {
		return
	}
	names := make([]string, 0, len(lost))
	for name := range lost {
		names = append(names, name)
	}
	sort.Strings(names)
	term := h.cluster.Term()
	for _, name := range names {
		was, known := prev[name]
		if lost[name] == was || !known && !lost[name] {
			continue
		}
		role := hooks.RoleQuorumRegained
		if lost[name] {
			role = hooks.RoleQuorumLost
			h.log.Warn("service lost its quorum: the sorry server, if any, takes its traffic", "node", h.node, "term", term, "index", index, "service", name)
		} else {
			h.log.Info("service has its quorum again", "node", h.node, "term", term, "index", index, "service", name)
		}
		h.hooks.RunAsync(hooks.Event{Role: role, Node: h.node, Term: term, Index: index, Service: name})
	}
}

// liveViews returns this director's gossip view of every director's
// health views of svc's servers, for the API.
func (h *healthMonitor) liveViews(service string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for id, v := range h.cluster.HealthVoters() {
		for k, s := range v.Views {
			if k.Service != service {
				continue
			}
			if out[k.Server] == nil {
				out[k.Server] = map[string]string{}
			}
			out[k.Server][id] = s
		}
	}
	return out
}

// checksFromState returns the check of every checked server and the
// committed health of each ("" when none was committed yet, so the first
// agreed state is recorded with its views).
func checksFromState(st *fsm.State) (map[cluster.HealthKey]probes.CheckSpec, map[cluster.HealthKey]string) {
	n := 0
	for _, svc := range st.Services {
		n += len(svc.Servers)
	}
	specs := make(map[cluster.HealthKey]probes.CheckSpec, n)
	committed := make(map[cluster.HealthKey]string, n)
	for name, svc := range st.Services {
		for key, rs := range svc.Servers {
			spec, ok := checkSpec(svc, rs)
			if !ok {
				continue
			}
			k := cluster.HealthKey{Service: name, Server: key}
			specs[k] = spec
			committed[k] = ""
			if rs.Health != nil {
				committed[k] = rs.Health.State
			}
		}
	}
	return specs, committed
}

// checkSpec converts the check that applies to rs into the scheduler's
// form. Two servers with the same address, port and check get equal
// specs, which the scheduler runs once. ok is false for a server that is
// not checked, or has no port to check (a firewall-mark service's server
// with port 0 and a check without a port).
func checkSpec(svc *fsm.Service, rs *fsm.RealServer) (probes.CheckSpec, bool) {
	cc := fsm.EffectiveCheck(svc, rs)
	if cc == nil {
		return probes.CheckSpec{}, false
	}
	port := cc.Port
	if port == 0 {
		port = rs.Port
	}
	if port == 0 {
		port = svc.Port
	}
	if port <= 0 || port > 65535 {
		return probes.CheckSpec{}, false
	}
	return probes.CheckSpec{
		Kind:         probes.CheckKind(cc.Kind),
		Target:       netip.AddrPortFrom(rs.Address, uint16(port)),
		Interval:     time.Duration(cc.Interval),
		Timeout:      time.Duration(cc.Timeout),
		Jitter:       time.Duration(cc.Jitter),
		Rise:         cc.Rise,
		Fall:         cc.Fall,
		Path:         cc.Path,
		Host:         cc.Host,
		ExpectStatus: cc.ExpectStatus,
		BodyRegex:    cc.BodyRegex,
		TLSVerify:    cc.TLSVerify,
		ServerName:   cc.ServerName,
		DNSName:      cc.DNSName,
		DNSType:      cc.DNSType,
		DNSExpect:    cc.DNSExpect,
		Command:      cc.Command,
	}, true
}

// quorumState returns QuorumLost of every service that has a quorum.
func quorumState(st *fsm.State) map[string]bool {
	out := map[string]bool{}
	for name, svc := range st.Services {
		if svc.EffectiveQuorum() > 0 {
			out[name] = svc.QuorumLost
		}
	}
	return out
}

// newScheduler makes the real check scheduler, reporting to h.
func newScheduler(log *slog.Logger, h *healthMonitor) (*probes.Scheduler, error) {
	s, err := probes.NewScheduler(probes.SchedulerOptions{Logger: log, OnChange: h.checkChanged})
	if err != nil {
		return nil, fmt.Errorf("health check scheduler: %w", err)
	}
	return s, nil
}
