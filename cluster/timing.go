package cluster

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Timing profile names.
const (
	ProfileDefault = "default"
	ProfileFast    = "fast"
)

// Timing holds every timer that decides how fast the cluster notices a
// failure and how long a stale leader may keep acting. Durations decode from
// YAML strings such as "200ms" (yaml.v3 parses time.Duration fields with
// time.ParseDuration; bare integers are refused, which keeps units explicit).
type Timing struct {
	// HeartbeatTimeout is how long a follower waits without hearing from the
	// leader before it starts an election (raft randomises it up to 2×).
	HeartbeatTimeout time.Duration `yaml:"heartbeat_timeout" json:"heartbeat_timeout"`
	// ElectionTimeout is how long a candidate waits for votes before it
	// retries (randomised up to 2×).
	ElectionTimeout time.Duration `yaml:"election_timeout" json:"election_timeout"`
	// LeaderLeaseTimeout is how long a leader keeps acting without contact
	// with a quorum. It bounds how long a partitioned leader holds the VIPs.
	LeaderLeaseTimeout time.Duration `yaml:"leader_lease_timeout" json:"leader_lease_timeout"`
	// CommitTimeout is the idle interval after which the leader tells
	// followers the commit index (randomised up to 2×): it bounds how long a
	// follower's IPVS table lags behind a commit when nothing else is written.
	CommitTimeout time.Duration `yaml:"commit_timeout" json:"commit_timeout"`

	// GossipProbeInterval is how often each director probes one peer.
	GossipProbeInterval time.Duration `yaml:"gossip_probe_interval" json:"gossip_probe_interval"`
	// GossipProbeTimeout is how long a probe waits for an ack before trying
	// indirect probes; it must be shorter than the probe interval.
	GossipProbeTimeout time.Duration `yaml:"gossip_probe_timeout" json:"gossip_probe_timeout"`
	// GossipSuspicionMult scales the time a suspected node has to refute
	// before it is declared dead: mult × max(1, log10(N)) × probe interval.
	GossipSuspicionMult int `yaml:"gossip_suspicion_mult" json:"gossip_suspicion_mult"`
	// GossipSuspicionMaxTimeoutMult caps the suspicion timeout, as a multiple
	// of its minimum, while confirmations from other members are missing.
	GossipSuspicionMaxTimeoutMult int `yaml:"gossip_suspicion_max_timeout_mult" json:"gossip_suspicion_max_timeout_mult"`
	// GossipInterval is how often state changes are gossiped.
	GossipInterval time.Duration `yaml:"gossip_interval" json:"gossip_interval"`
	// GossipPushPullInterval is how often a full state sync runs.
	GossipPushPullInterval time.Duration `yaml:"gossip_push_pull_interval" json:"gossip_push_pull_interval"`
}

// Profile returns the named timing profile.
//
// default: raft 200/200/100 ms (heartbeat/election/lease), measured at about
// 0.45 s p50 to elect a new leader on loopback, so a leader crash fails over
// well within the 1 s target; memberlist's LAN values, which declare a dead
// node in about 6 s (gossip only feeds membership views and the removal
// safety check, never failover).
//
// fast: raft 100/100/50 ms (about 0.19 s p50 election) and memberlist at a
// 200 ms probe with suspicion mult 3, which declares a dead node in about
// 1 s. It needs a quiet LAN and directors that are never CPU-starved for
// 100 ms, or leadership flaps.
func Profile(name string) (Timing, error) {
	switch name {
	case ProfileDefault, "":
		return Timing{
			HeartbeatTimeout:              200 * time.Millisecond,
			ElectionTimeout:               200 * time.Millisecond,
			LeaderLeaseTimeout:            100 * time.Millisecond,
			CommitTimeout:                 50 * time.Millisecond,
			GossipProbeInterval:           time.Second,
			GossipProbeTimeout:            500 * time.Millisecond,
			GossipSuspicionMult:           4,
			GossipSuspicionMaxTimeoutMult: 6,
			GossipInterval:                200 * time.Millisecond,
			GossipPushPullInterval:        30 * time.Second,
		}, nil
	case ProfileFast:
		return Timing{
			HeartbeatTimeout:              100 * time.Millisecond,
			ElectionTimeout:               100 * time.Millisecond,
			LeaderLeaseTimeout:            50 * time.Millisecond,
			CommitTimeout:                 20 * time.Millisecond,
			GossipProbeInterval:           200 * time.Millisecond,
			GossipProbeTimeout:            100 * time.Millisecond,
			GossipSuspicionMult:           3,
			GossipSuspicionMaxTimeoutMult: 6,
			GossipInterval:                100 * time.Millisecond,
			GossipPushPullInterval:        15 * time.Second,
		}, nil
	default:
		return Timing{}, fmt.Errorf("timing.profile: unknown profile %q (want %q or %q)", name, ProfileDefault, ProfileFast)
	}
}

// TimingConfig selects a profile and overrides it field by field: a zero
// field keeps the profile's value.
type TimingConfig struct {
	Profile string `yaml:"profile" json:"profile,omitempty"`
	Timing  `yaml:",inline"`
}

// Resolve returns the profile with the overrides applied, validated.
func (c TimingConfig) Resolve() (Timing, error) {
	t, err := Profile(c.Profile)
	if err != nil {
		return Timing{}, err
	}
	t = t.Override(c.Timing)
	if err := t.Validate(); err != nil {
		return Timing{}, err
	}
	return t, nil
}

// Override returns t with every non-zero field of o copied over it.
func (t Timing) Override(o Timing) Timing {
	setD := func(dst *time.Duration, v time.Duration) {
		if v != 0 {
			*dst = v
		}
	}
	setI := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	setD(&t.HeartbeatTimeout, o.HeartbeatTimeout)
	setD(&t.ElectionTimeout, o.ElectionTimeout)
	setD(&t.LeaderLeaseTimeout, o.LeaderLeaseTimeout)
	setD(&t.CommitTimeout, o.CommitTimeout)
	setD(&t.GossipProbeInterval, o.GossipProbeInterval)
	setD(&t.GossipProbeTimeout, o.GossipProbeTimeout)
	setI(&t.GossipSuspicionMult, o.GossipSuspicionMult)
	setI(&t.GossipSuspicionMaxTimeoutMult, o.GossipSuspicionMaxTimeoutMult)
	setD(&t.GossipInterval, o.GossipInterval)
	setD(&t.GossipPushPullInterval, o.GossipPushPullInterval)
	return t
}

// minRaftTimer is the smallest timer hashicorp/raft accepts.
const minRaftTimer = 5 * time.Millisecond

// Validate checks every field and the relations between them, and reports
// all problems at once, each naming its field.
func (t Timing) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("timing.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	atLeast := func(field string, v, lo time.Duration) bool {
		if v < lo {
			bad(field, "%s is too short: must be at least %s", v, lo)
			return false
		}
		return true
	}
	hbOK := atLeast("heartbeat_timeout", t.HeartbeatTimeout, minRaftTimer)
	elOK := atLeast("election_timeout", t.ElectionTimeout, minRaftTimer)
	leaseOK := atLeast("leader_lease_timeout", t.LeaderLeaseTimeout, minRaftTimer)
	commitOK := atLeast("commit_timeout", t.CommitTimeout, time.Millisecond)
	if hbOK && leaseOK && t.LeaderLeaseTimeout > t.HeartbeatTimeout {
		bad("leader_lease_timeout", "%s must not exceed heartbeat_timeout (%s): a partitioned leader would keep the VIPs after a new leader is elected",
			t.LeaderLeaseTimeout, t.HeartbeatTimeout)
	}
	if hbOK && elOK && t.ElectionTimeout < t.HeartbeatTimeout {
		bad("election_timeout", "%s must be at least heartbeat_timeout (%s)", t.ElectionTimeout, t.HeartbeatTimeout)
	}
	if hbOK && commitOK && t.CommitTimeout >= t.HeartbeatTimeout {
		bad("commit_timeout", "%s must be shorter than heartbeat_timeout (%s)", t.CommitTimeout, t.HeartbeatTimeout)
	}
	probeOK := atLeast("gossip_probe_interval", t.GossipProbeInterval, time.Millisecond)
	probeTimeoutOK := atLeast("gossip_probe_timeout", t.GossipProbeTimeout, time.Millisecond)
	if probeOK && probeTimeoutOK && t.GossipProbeTimeout >= t.GossipProbeInterval {
		bad("gossip_probe_timeout", "%s must be shorter than gossip_probe_interval (%s)", t.GossipProbeTimeout, t.GossipProbeInterval)
	}
	if t.GossipSuspicionMult < 1 {
		bad("gossip_suspicion_mult", "%d must be at least 1", t.GossipSuspicionMult)
	}
	if t.GossipSuspicionMaxTimeoutMult < 1 {
		bad("gossip_suspicion_max_timeout_mult", "%d must be at least 1", t.GossipSuspicionMaxTimeoutMult)
	}
	atLeast("gossip_interval", t.GossipInterval, time.Millisecond)
	atLeast("gossip_push_pull_interval", t.GossipPushPullInterval, time.Millisecond)
	return errors.Join(errs...)
}

// Bounds are the worst-case (or, where noted, typical) times that follow
// from a Timing for a cluster of Members directors.
type Bounds struct {
	Members int
	// LeaderLossDetected: a follower starts an election at most this long
	// after its last contact with a crashed leader (heartbeat timeout,
	// randomised up to 2×).
	LeaderLossDetected time.Duration
	// SplitVoteRetry is added per election round that ends in a split vote
	// (election timeout, randomised up to 2×).
	SplitVoteRetry time.Duration
	// NewLeaderEarliest is the earliest a new leader can be elected after
	// the followers lose contact with the old one (one heartbeat timeout).
	NewLeaderEarliest time.Duration
	// PartitionedLeaderStepsDown: a leader cut off from a quorum stops
	// acting as leader at most this long after its last quorum contact.
	PartitionedLeaderStepsDown time.Duration
	// LeaseMargin is NewLeaderEarliest − PartitionedLeaderStepsDown: how
	// much earlier the old leader gives up than a new one can appear.
	LeaseMargin time.Duration
	// FollowerCommitLag bounds how long an idle follower learns of a commit
	// after the leader (commit timeout, randomised up to 2×).
	FollowerCommitLag time.Duration
	// GossipSuspect is about when a failed node is first suspected: one
	// probe interval plus the probe timeout.
	GossipSuspect time.Duration
	// GossipSuspicionMin and GossipSuspicionMax are memberlist's suspicion
	// timeouts for Members nodes; GossipSuspicionExpectConfirmations is how
	// many other members must confirm a suspicion to bring the timeout down
	// from max to min (0 means the timeout is always min).
	GossipSuspicionMin                 time.Duration
	GossipSuspicionMax                 time.Duration
	GossipSuspicionExpectConfirmations int
	// GossipDeadTypical is GossipSuspect plus the suspicion timeout once
	// the expected confirmations arrived; GossipDeadWorst is without any
	// confirmation.
	GossipDeadTypical time.Duration
	GossipDeadWorst   time.Duration
}

// Bounds computes the bounds for a cluster of members directors (3 when
// members < 1). The gossip figures follow memberlist's own formulas;
// memberlist may stretch its probe interval up to 8× on a node it judges
// unhealthy, which is not included.
func (t Timing) Bounds(members int) Bounds {
	if members < 1 {
		members = 3
	}
	b := Bounds{
		Members:                    members,
		LeaderLossDetected:         2 * t.HeartbeatTimeout,
		SplitVoteRetry:             2 * t.ElectionTimeout,
		NewLeaderEarliest:          t.HeartbeatTimeout,
		PartitionedLeaderStepsDown: t.LeaderLeaseTimeout,
		LeaseMargin:                t.HeartbeatTimeout - t.LeaderLeaseTimeout,
		FollowerCommitLag:          2 * t.CommitTimeout,
		GossipSuspect:              t.GossipProbeInterval + t.GossipProbeTimeout,
	}
	// Mirrors memberlist's suspicionTimeout and suspectNode: the minimum
	// scales with log10 of the cluster size; confirmations are expected only
	// when enough other members exist to send them.
	scale := math.Max(1, math.Log10(float64(members)))
	b.GossipSuspicionMin = time.Duration(float64(t.GossipSuspicionMult) * scale * float64(t.GossipProbeInterval))
	k := t.GossipSuspicionMult - 2
	if members-2 < k || k < 1 {
		k = 0
	}
	b.GossipSuspicionExpectConfirmations = k
	if k == 0 {
		b.GossipSuspicionMax = b.GossipSuspicionMin
	} else {
		b.GossipSuspicionMax = time.Duration(t.GossipSuspicionMaxTimeoutMult) * b.GossipSuspicionMin
	}
	b.GossipDeadTypical = b.GossipSuspect + b.GossipSuspicionMin
	b.GossipDeadWorst = b.GossipSuspect + b.GossipSuspicionMax
	return b
}

// WriteTable writes the timing and its bounds as two aligned tables, as
// `clusterd -print-timing` shows them.
func WriteTable(w io.Writer, name string, t Timing, b Bounds) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cols ...string) { fmt.Fprintln(tw, strings.Join(cols, "\t")) }
	row("SETTING", "VALUE")
	row("profile", name)
	row("heartbeat_timeout", t.HeartbeatTimeout.String())
	row("election_timeout", t.ElectionTimeout.String())
	row("leader_lease_timeout", t.LeaderLeaseTimeout.String())
	row("commit_timeout", t.CommitTimeout.String())
	row("gossip_probe_interval", t.GossipProbeInterval.String())
	row("gossip_probe_timeout", t.GossipProbeTimeout.String())
	row("gossip_suspicion_mult", fmt.Sprint(t.GossipSuspicionMult))
	row("gossip_suspicion_max_timeout_mult", fmt.Sprint(t.GossipSuspicionMaxTimeoutMult))
	row("gossip_interval", t.GossipInterval.String())
	row("gossip_push_pull_interval", t.GossipPushPullInterval.String())
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	suspicion := "suspicion_mult × max(1, log10 N) × probe_interval (no confirmations expected at this size)"
	if k := b.GossipSuspicionExpectConfirmations; k > 0 {
		suspicion = fmt.Sprintf("suspicion_mult × max(1, log10 N) × probe_interval, up to ×max_timeout_mult until %d other member(s) confirm", k)
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row(fmt.Sprintf("BOUND (%d directors)", b.Members), "TIME", "FROM")
	row("leader crash noticed by followers", "≤ "+b.LeaderLossDetected.String(), "2 × heartbeat_timeout")
	row("extra per split-vote round", "≤ "+b.SplitVoteRetry.String(), "2 × election_timeout")
	row("new leader possible after contact lost", "≥ "+b.NewLeaderEarliest.String(), "heartbeat_timeout")
	row("partitioned leader steps down (VIPs released)", "≤ "+b.PartitionedLeaderStepsDown.String(), "leader_lease_timeout")
	row("margin between the two above", b.LeaseMargin.String(), "heartbeat_timeout − leader_lease_timeout")
	row("idle follower learns a commit", "≤ "+b.FollowerCommitLag.String(), "2 × commit_timeout")
	row("failed node suspected (gossip)", "≈ "+b.GossipSuspect.String(), "probe_interval + probe_timeout")
	row("suspicion timeout", fmt.Sprintf("%s … %s", b.GossipSuspicionMin, b.GossipSuspicionMax), suspicion)
	row("failed node declared dead (gossip)", fmt.Sprintf("≈ %s (worst %s)", b.GossipDeadTypical, b.GossipDeadWorst), "suspected + suspicion timeout")
	return tw.Flush()
}
