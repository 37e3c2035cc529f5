package probes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Reachability is the state of a ping target or group.
type Reachability int

const (
	// Unknown means no probe has finished yet (for a group: no member is
	// reachable and some member is unknown).
	Unknown Reachability = iota
	// Reachable targets answered Rise probes in a row (or the first one).
	Reachable
	// Unreachable targets missed Fall probes in a row (or the first one).
	Unreachable
)

// String names the state for logs and status output.
func (r Reachability) String() string {
	switch r {
	case Unknown:
		return "unknown"
	case Reachable:
		return "reachable"
	case Unreachable:
		return "unreachable"
	}
	return fmt.Sprintf("Reachability(%d)", int(r))
}

// MarshalText makes the state read as its name in JSON and YAML.
func (r Reachability) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// TargetState is one probed address.
type TargetState struct {
	Addr  netip.Addr   `json:"addr"`
	State Reachability `json:"state"`
	// Since is when State last changed; zero while Unknown.
	Since time.Time `json:"since"`
	// LastProbe is when the last probe finished.
	LastProbe time.Time `json:"last_probe"`
	// RTT is the round-trip time of the last successful probe.
	RTT time.Duration `json:"rtt"`
	// LastError says why the last probe failed; empty after a success.
	LastError string `json:"last_error,omitempty"`
	// Successes and Failures count the current run of equal results.
	Successes int `json:"successes"`
	Failures  int `json:"failures"`
}

// GroupState is a ping group: Reachable while any member is, Unreachable
// when every member is, Unknown otherwise.
type GroupState struct {
	Name    string        `json:"name"`
	State   Reachability  `json:"state"`
	Members []TargetState `json:"members"`
}

// Score is a director's view of its ping nodes.
//
// Value counts the reachable ping nodes plus the reachable groups: each
// node and each group counts one, as each `ping` and each `ping_group` was
// one "node" to Heartbeat's ipfail. Grouping redundant routers therefore
// makes losing one of them cost nothing, while separate nodes each cost
// one. Max is the number of nodes plus groups, the best possible Value.
type Score struct {
	Value int `json:"value"`
	Max   int `json:"max"`
	// Ready is false until every node and group has a state. Until then
	// Value undercounts, and a director should not act on it: see
	// MustRelease and Arbiter.
	Ready bool `json:"ready"`
	// Nodes are in configuration order.
	Nodes []TargetState `json:"nodes,omitempty"`
	// Groups are sorted by name, members in configuration order.
	Groups []GroupState `json:"groups,omitempty"`
}

// PingMonitor probes the ping nodes and keeps the Score.
//
// Every address is probed on its own schedule by its own goroutine: the
// first probes are spread evenly across one interval, so many targets do
// not burst, and a silent target (whose probes wait out the timeout) never
// delays another. A target's first result sets its state, since there is
// no earlier state to protect; after that it takes Rise successes or Fall
// failures in a row to change it.
type PingMonitor struct {
	pinger  Pinger
	opts    PingOptions
	log     *slog.Logger
	targets []*target
	groups  []string
	seed    uint64
	changes chan Score

	mu      sync.Mutex
	started bool
}

type target struct {
	addr  netip.Addr
	group string
	st    TargetState // guarded by PingMonitor.mu
}

// NewPingMonitor validates cfg and opts (errors name the field) and
// returns a monitor that probes through pinger once Run is called.
func NewPingMonitor(cfg PingConfig, pinger Pinger, opts PingOptions) (*PingMonitor, error) {
	specs, cerr := cfg.targets()
	opts, oerr := opts.withDefaults()
	var perr error
	if pinger == nil {
		perr = errors.New("pinger: nil")
	}
	if err := errors.Join(cerr, oerr, perr); err != nil {
		return nil, fmt.Errorf("ping monitor: %w", err)
	}
	m := &PingMonitor{
		pinger:  pinger,
		opts:    opts,
		log:     opts.Logger,
		groups:  groupNames(specs),
		seed:    rand.Uint64(),
		changes: make(chan Score, 1),
	}
	for _, s := range specs {
		m.targets = append(m.targets, &target{addr: s.addr, group: s.group, st: TargetState{Addr: s.addr}})
	}
	return m, nil
}

// Score returns the current score; its slices are the caller's.
func (m *PingMonitor) Score() Score {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.scoreLocked()
}

// Changes delivers the score after every change of a node's or group's
// state (which includes every change of Value). It holds only the newest
// score, so a slow reader never holds up probing and always reads the
// current state. It is closed when Run returns.
func (m *PingMonitor) Changes() <-chan Score { return m.changes }

// Run probes until ctx ends, then waits for the probes in flight and
// returns nil. A monitor runs once.
func (m *PingMonitor) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return errors.New("ping monitor: Run called twice")
	}
	m.started = true
	m.mu.Unlock()
	defer close(m.changes)

	start := m.opts.Clock.Now()
	var wg sync.WaitGroup
	n := time.Duration(len(m.targets))
	for i, t := range m.targets {
		base := start.Add(m.opts.Interval * time.Duration(i) / n)
		rng := rand.New(rand.NewPCG(m.seed, uint64(i)))
		wg.Go(func() { m.probe(ctx, t, base, rng) })
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// probe runs one target's schedule: slot k is due at base + k×Interval
// plus a fresh jitter, so jitter never accumulates into drift.
func (m *PingMonitor) probe(ctx context.Context, t *target, base time.Time, rng *rand.Rand) {
	clock, interval := m.opts.Clock, m.opts.Interval
	for slot := int64(0); ; slot++ {
		due := base.Add(time.Duration(slot) * interval)
		if m.opts.Jitter > 0 {
			due = due.Add(time.Duration(rng.Int64N(int64(m.opts.Jitter))))
		}
		if wait := due.Sub(clock.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-clock.After(wait):
			}
		} else if ctx.Err() != nil {
			return
		}
		rtt, err := m.pinger.Ping(ctx, t.addr, m.opts.Timeout)
		if ctx.Err() != nil {
			return // shutting down: not a failure of the target
		}
		now := clock.Now()
		m.record(t, now, rtt, err)
		// A probe that ended over an interval late (a stalled host, a
		// Pinger that overran its timeout) skips the slots it missed
		// instead of firing them back to back.
		if cur := int64(now.Sub(base) / interval); cur > slot+1 {
			slot = cur - 1
		}
	}
}

func (m *PingMonitor) record(t *target, now time.Time, rtt time.Duration, err error) {
	m.mu.Lock()
	st := &t.st
	st.LastProbe = now
	if err == nil {
		st.Successes++
		st.Failures = 0
		st.RTT = rtt
		st.LastError = ""
	} else {
		st.Failures++
		st.Successes = 0
		st.LastError = err.Error()
	}
	prev, next := st.State, st.State
	switch {
	case prev == Unknown && err == nil:
		next = Reachable
	case prev == Unknown:
		next = Unreachable
	case prev == Unreachable && st.Successes >= m.opts.Rise:
		next = Reachable
	case prev == Reachable && st.Failures >= m.opts.Fall:
		next = Unreachable
	}
	successes, failures := st.Successes, st.Failures
	if next == prev {
		m.mu.Unlock()
		if err != nil {
			m.log.Debug("ping failed", "addr", t.addr, "state", prev.String(), "failures", failures, "err", err)
		}
		return
	}
	st.State, st.Since = next, now
	score := m.scoreLocked()
	select { // keep only the newest score; senders hold m.mu, so the send never blocks
	case <-m.changes:
	default:
	}
	m.changes <- score
	m.mu.Unlock()

	level := slog.LevelInfo
	attrs := []any{"addr", t.addr, "was", prev.String(), "score", score.Value, "max", score.Max, "ready", score.Ready}
	if t.group != "" {
		attrs = append(attrs, "group", t.group)
	}
	if err != nil {
		level = slog.LevelWarn
		attrs = append(attrs, "failures", failures, "err", err)
	} else {
		attrs = append(attrs, "successes", successes, "rtt", rtt)
	}
	m.log.Log(context.Background(), level, "ping node "+next.String(), attrs...)
}

func (m *PingMonitor) scoreLocked() Score {
	s := Score{Max: len(m.groups), Ready: true}
	groups := make([]GroupState, len(m.groups))
	for i, name := range m.groups {
		groups[i].Name = name
	}
	for _, t := range m.targets {
		if t.group == "" {
			s.Max++
			s.Nodes = append(s.Nodes, t.st)
			switch t.st.State {
			case Reachable:
				s.Value++
			case Unknown:
				s.Ready = false
			}
			continue
		}
		i := slices.Index(m.groups, t.group)
		groups[i].Members = append(groups[i].Members, t.st)
	}
	for i := range groups {
		g := &groups[i]
		g.State = Unreachable
		for _, mem := range g.Members {
			if mem.State == Reachable {
				g.State = Reachable
				break
			}
			if mem.State == Unknown {
				g.State = Unknown
			}
		}
		switch g.State {
		case Reachable:
			s.Value++
		case Unknown:
			s.Ready = false
		}
	}
	if len(groups) > 0 {
		s.Groups = groups
	}
	return s
}
