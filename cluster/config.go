package cluster

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"regexp"
	"time"
)

// Config is one director's cluster configuration, as it appears under
// `cluster:` in clusterd's YAML file.
type Config struct {
	// NodeID names this director for all time: raft server ID and gossip
	// node name. 1–64 characters of letters, digits, '.', '_' and '-'.
	NodeID string `yaml:"node_id"`
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string `yaml:"data_dir"`

	// RaftBind is the host:port raft listens on.
	RaftBind string `yaml:"raft_bind"`
	// RaftAdvertise is the host:port other directors dial; it defaults to
	// RaftBind, which then must name a concrete address.
	RaftAdvertise string `yaml:"raft_advertise"`
	// GossipBind is the host:port memberlist listens on (UDP and TCP).
	GossipBind string `yaml:"gossip_bind"`
	// GossipAdvertise is the gossip address others use; defaults to
	// memberlist's choice from GossipBind.
	GossipAdvertise string `yaml:"gossip_advertise"`
	// APIAddress is this director's API address as other directors reach
	// it, announced through gossip so followers can forward to the leader.
	APIAddress string `yaml:"api_address"`

	// Join lists gossip addresses (host:port) of other directors. Joining
	// is retried with backoff until one answers.
	Join []string `yaml:"join"`
	// BootstrapExpect is the number of directors that form the cluster on
	// first start. Zero means this node never bootstraps and waits to be
	// added with `clusterctl member add`.
	BootstrapExpect int `yaml:"bootstrap_expect"`

	Timing TimingConfig `yaml:"timing"`

	// AutoJoin decides whether the leader adds, as voters, directors that
	// join gossip without raft state (new directors, e.g. started with
	// bootstrap_expect 0 and join).
	//   - Unset (the default): only while the raft configuration has fewer
	//     voters than bootstrap_expect, i.e. to complete or restore the
	//     cluster size the operator asked for. bootstrap_expect here is the
	//     largest among the leader and the voters, so a leader that was
	//     itself added later with bootstrap_expect 0 applies the same rule.
	//   - true: always. false: never; `clusterctl member add` only.
	// Directors are added one at a time through AddVoter's quorum checks,
	// after they have looked addable for a gossip probe interval. A
	// director that already has raft state (it was removed, or belongs to
	// another cluster) is never added automatically.
	AutoJoin *bool `yaml:"auto_join"`
	// DeadDirectorCleanup, when positive, lets the leader remove a director
	// from raft once gossip has reported it dead or left, without it
	// answering raft, for this long. The period is observed by the current
	// leader: it restarts when leadership changes. Zero, the default,
	// leaves removal to the operator. A voter is removed only when at
	// least max(3, a majority of bootstrap_expect) voters remain
	// (bootstrap_expect as for AutoJoin), and, as for any RemoveServer
	// without force, when the voters that remain have a healthy quorum.
	// At least 1s; expect minutes in production.
	DeadDirectorCleanup time.Duration `yaml:"dead_director_cleanup"`
	// WarnTime is Heartbeat's warntime: the leader logs a warning when a
	// raft peer has not answered it for this long, once per episode, and
	// announces "late peers: …" as its gossip warning until the peer
	// answers again (LatePeers lists them). Default 2 ×
	// timing.heartbeat_timeout; at least timing.heartbeat_timeout, as
	// shorter would warn about heartbeat jitter.
	WarnTime time.Duration `yaml:"warn_time"`

	// AutoFailback is Heartbeat's auto_failback. When true, a leader
	// that is not the most preferred director asks (FailbackRequests) to
	// hand leadership to a more preferred voter once that voter has been
	// healthy continuously for FailbackHold: alive in gossip, answering
	// raft within a heartbeat timeout, holding every entry committed as of
	// the previous check, announcing the same auto_failback fingerprint,
	// and with a ping score no worse than the leader's. Default false:
	// leadership stays where it is until the leader fails or an operator
	// moves it.
	AutoFailback bool `yaml:"auto_failback"`
	// Preferred lists director IDs, most preferred first; a director not
	// listed ranks after every listed one. Required with auto_failback.
	// Every director should have the same list: directors announce a
	// fingerprint of it, and leadership fails back only between directors
	// whose fingerprints agree, so conflicting lists cannot make it
	// bounce.
	Preferred []string `yaml:"preferred"`
	// FailbackHold is how long a preferred director must stay healthy
	// before leadership fails back to it. Default 10s; at least
	// timing.heartbeat_timeout.
	FailbackHold time.Duration `yaml:"failback_hold"`

	// SnapshotInterval, SnapshotThreshold and TrailingLogs tune raft's log
	// compaction; zero takes the defaults below.
	SnapshotInterval  time.Duration `yaml:"snapshot_interval"`
	SnapshotThreshold uint64        `yaml:"snapshot_threshold"`
	TrailingLogs      uint64        `yaml:"trailing_logs"`
	// SnapshotRetain is how many snapshots are kept on disk (default 2).
	SnapshotRetain int `yaml:"snapshot_retain"`

	// Version is the Directorate version announced through gossip; set by
	// clusterd, not read from YAML.
	Version string `yaml:"-"`
}

// Compaction defaults: snapshot after 8192 new entries, checked every two
// minutes, keeping 10240 entries so a briefly lagging follower catches up
// from the log instead of a full snapshot.
const (
	defaultSnapshotInterval  = 2 * time.Minute
	defaultSnapshotThreshold = 8192
	defaultTrailingLogs      = 10240
	defaultSnapshotRetain    = 2
	maxNodeIDLen             = 64

	// defaultFailbackHold rides out a director that restarts or flaps, yet
	// returns leadership within seconds of a stable recovery.
	defaultFailbackHold = 10 * time.Second
	// minDeadDirectorCleanup only rejects values that are surely typos
	// ("5ms" for "5m"): gossip already needs seconds to declare a node dead.
	minDeadDirectorCleanup = time.Second
	// minCleanupVoters is the fewest voters the dead-director cleanup
	// leaves: with fewer, one more failure stops the cluster, and shrinking
	// that far is the operator's decision.
	minCleanupVoters = 3
)

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

func validNodeID(id string) error {
	switch {
	case id == "":
		return errors.New("is required")
	case len(id) > maxNodeIDLen:
		return fmt.Errorf("%q is longer than %d characters", id, maxNodeIDLen)
	case !nodeIDPattern.MatchString(id):
		return fmt.Errorf("%q may contain only letters, digits, '.', '_' and '-'", id)
	}
	return nil
}

func validHostPort(hp string, needHost bool) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("%q is not host:port", hp)
	}
	if needHost && host == "" {
		return fmt.Errorf("%q has no host", hp)
	}
	if _, _, err := splitHostPort(net.JoinHostPort(host, port)); err != nil {
		return err
	}
	return nil
}

func unspecifiedHost(hp string) bool {
	host, _, err := net.SplitHostPort(hp)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// validate checks the configuration; the flags say which parts an
// injected dependency replaces.
func (c *Config) validate(haveTransport, haveStores, haveGossip bool) (Timing, error) {
	var errs []error
	bad := func(field string, err error) { errs = append(errs, fmt.Errorf("%s: %w", field, err)) }
	if err := validNodeID(c.NodeID); err != nil {
		bad("node_id", err)
	}
	if !haveStores && c.DataDir == "" {
		bad("data_dir", errors.New("is required"))
	}
	if !haveTransport {
		if c.RaftBind == "" {
			bad("raft_bind", errors.New("is required (host:port)"))
		} else if err := validHostPort(c.RaftBind, false); err != nil {
			bad("raft_bind", err)
		}
		if c.RaftAdvertise != "" {
			if err := validHostPort(c.RaftAdvertise, true); err != nil {
				bad("raft_advertise", err)
			} else if unspecifiedHost(c.RaftAdvertise) {
				bad("raft_advertise", fmt.Errorf("%q is not an address other directors can dial", c.RaftAdvertise))
			}
		} else if c.RaftBind != "" && unspecifiedHost(c.RaftBind) {
			bad("raft_advertise", fmt.Errorf("is required when raft_bind %q listens on all addresses", c.RaftBind))
		}
	}
	if !haveGossip {
		if c.GossipBind == "" {
			bad("gossip_bind", errors.New("is required (host:port)"))
		} else if err := validHostPort(c.GossipBind, false); err != nil {
			bad("gossip_bind", err)
		}
		if c.GossipAdvertise != "" {
			if err := validHostPort(c.GossipAdvertise, true); err != nil {
				bad("gossip_advertise", err)
			}
		}
	}
	if c.APIAddress != "" {
		if err := validHostPort(c.APIAddress, true); err != nil {
			bad("api_address", err)
		}
	}
	for i, j := range c.Join {
		if err := validHostPort(j, true); err != nil {
			bad(fmt.Sprintf("join[%d]", i), err)
		}
	}
	if c.BootstrapExpect < 0 {
		bad("bootstrap_expect", fmt.Errorf("%d must be 0 (never bootstrap) or the number of directors", c.BootstrapExpect))
	}
	if c.SnapshotInterval < 0 {
		bad("snapshot_interval", fmt.Errorf("%s must not be negative", c.SnapshotInterval))
	} else if c.SnapshotInterval > 0 && c.SnapshotInterval < minRaftTimer {
		bad("snapshot_interval", fmt.Errorf("%s is too short: must be at least %s", c.SnapshotInterval, minRaftTimer))
	}
	if c.SnapshotRetain < 0 {
		bad("snapshot_retain", fmt.Errorf("%d must not be negative", c.SnapshotRetain))
	}
	t, err := c.Timing.Resolve()
	if err != nil {
		errs = append(errs, err)
	}
	if c.DeadDirectorCleanup < 0 {
		bad("dead_director_cleanup", fmt.Errorf("%s must not be negative (0 turns the cleanup off)", c.DeadDirectorCleanup))
	} else if c.DeadDirectorCleanup > 0 && c.DeadDirectorCleanup < minDeadDirectorCleanup {
		bad("dead_director_cleanup", fmt.Errorf("%s is too short: must be 0 (off) or at least %s", c.DeadDirectorCleanup, minDeadDirectorCleanup))
	}
	if c.WarnTime < 0 {
		bad("warn_time", fmt.Errorf("%s must not be negative (0 takes the default, 2 × heartbeat_timeout)", c.WarnTime))
	} else if err == nil && c.WarnTime > 0 && c.WarnTime < t.HeartbeatTimeout {
		bad("warn_time", fmt.Errorf("%s must be at least timing.heartbeat_timeout (%s): shorter, every heartbeat jitter would warn", c.WarnTime, t.HeartbeatTimeout))
	}
	seen := map[string]int{}
	for i, id := range c.Preferred {
		if err := validNodeID(id); err != nil {
			bad(fmt.Sprintf("preferred[%d]", i), err)
		} else if j, dup := seen[id]; dup {
			bad(fmt.Sprintf("preferred[%d]", i), fmt.Errorf("%q is already listed as preferred[%d]", id, j))
		}
		seen[id] = i
	}
	if c.AutoFailback && len(c.Preferred) == 0 {
		bad("preferred", errors.New("is required when auto_failback is on: list the directors that should lead, most preferred first"))
	}
	if c.FailbackHold < 0 {
		bad("failback_hold", fmt.Errorf("%s must not be negative (0 takes the default, %s)", c.FailbackHold, defaultFailbackHold))
	} else if err == nil && c.FailbackHold > 0 && c.FailbackHold < t.HeartbeatTimeout {
		bad("failback_hold", fmt.Errorf("%s must be at least timing.heartbeat_timeout (%s)", c.FailbackHold, t.HeartbeatTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return Timing{}, fmt.Errorf("cluster config: %w", err)
	}
	return t, nil
}

// warnTime returns WarnTime or its default for timing t.
func (c *Config) warnTime(t Timing) time.Duration {
	if c.WarnTime > 0 {
		return c.WarnTime
	}
	return 2 * t.HeartbeatTimeout
}

// failbackHold returns FailbackHold or its default.
func (c *Config) failbackHold() time.Duration { return orDefault(c.FailbackHold, defaultFailbackHold) }

// failbackKey fingerprints the auto_failback settings that must agree
// between directors: the preferred list. Empty when auto_failback is off.
func (c *Config) failbackKey() string {
	if !c.AutoFailback {
		return ""
	}
	h := fnv.New32a()
	for _, id := range c.Preferred {
		// IDs cannot contain a newline, so the encoding is unambiguous.
		h.Write([]byte(id + "\n"))
	}
	return fmt.Sprintf("%08x", h.Sum32())
}

// Validate checks the configuration for the production path (TCP
// transport, on-disk stores, memberlist) and returns the resolved timing.
func (c *Config) Validate() (Timing, error) { return c.validate(false, false, false) }
