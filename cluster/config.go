package cluster

import (
	"errors"
	"fmt"
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
	if err := errors.Join(errs...); err != nil {
		return Timing{}, fmt.Errorf("cluster config: %w", err)
	}
	return t, nil
}

// Validate checks the configuration for the production path (TCP
// transport, on-disk stores, memberlist) and returns the resolved timing.
func (c *Config) Validate() (Timing, error) { return c.validate(false, false, false) }
