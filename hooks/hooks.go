// Package hooks runs operator commands when a director's role changes: the
// equivalent of Heartbeat's haresources and keepalived's notify scripts.
//
// Configuration (the `hooks:` section of clusterd's YAML):
//
//	hooks:
//	  timeout: 10s            # per command; default 10s
//	  on_leader:
//	    - /etc/directorate/hooks/start-httpd
//	    - logger -t directorate "leader for term $DIRECTORATE_TERM: $DIRECTORATE_VIPS"
//	  on_follower:
//	    - /etc/directorate/hooks/stop-httpd
//	  on_stop:
//	    - /etc/directorate/hooks/stop-httpd
//	  on_quorum_lost:
//	    - logger -t directorate "service $DIRECTORATE_SERVICE lost its quorum"
//	  on_quorum_regained:
//	    - logger -t directorate "service $DIRECTORATE_SERVICE has its quorum again"
//
// Each command is one string run with `/bin/sh -c`, so quoting, pipes and
// $VARIABLES follow shell rules; there is no separate argv form. It gets the
// inherited environment plus:
//
//	DIRECTORATE_ROLE           leader, follower or stop
//	DIRECTORATE_PREVIOUS_ROLE  the role before the change; empty at startup
//	DIRECTORATE_NODE           this director's node ID
//	DIRECTORATE_TERM           the raft term of the change
//	DIRECTORATE_INDEX          the raft index of the change
//	DIRECTORATE_VIPS           the VIPs, space-separated
//	DIRECTORATE_SERVICE        quorum events only: the service whose quorum changed
//
// on_quorum_lost and on_quorum_regained run on the leader only, when the
// replicated state records that a service's healthy weight fell below its
// quorum or reached it again; DIRECTORATE_ROLE is then quorum_lost or
// quorum_regained, and the term and index are those of the commit.
//
// Commands of one event run one after another, in order, each in its own
// process group with stdin from /dev/null and stdout discarded; the tail of
// stderr is logged when a command fails. A command still running at the
// timeout is killed with SIGKILL together with every process in its group.
// Failures and timeouts are logged and counted (Runner.Stats), never
// returned: hooks must not hold up the VIP release path, which uses
// Runner.RunAsync.
package hooks

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultTimeout bounds each command when the configuration names no
// timeout.
const DefaultTimeout = 10 * time.Second

// Config is the `hooks:` section of clusterd's configuration.
type Config struct {
	// OnLeader runs after this director became leader and claimed the
	// VIPs.
	OnLeader []string `yaml:"on_leader"`
	// OnFollower runs after this director stopped being leader and
	// released the VIPs, and when it starts as a follower.
	OnFollower []string `yaml:"on_follower"`
	// OnStop runs when clusterd stops, after the VIPs are released.
	OnStop []string `yaml:"on_stop"`
	// OnQuorumLost runs on the leader when a service's healthy weight
	// fell below its quorum; OnQuorumRegained when it reached it again.
	OnQuorumLost     []string `yaml:"on_quorum_lost"`
	OnQuorumRegained []string `yaml:"on_quorum_regained"`
	// Timeout bounds each command; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// EffectiveTimeout is Timeout, or DefaultTimeout when it is zero.
func (c Config) EffectiveTimeout() time.Duration {
	if c.Timeout == 0 {
		return DefaultTimeout
	}
	return c.Timeout
}

// Validate names the first field of every problem it finds.
func (c Config) Validate() error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("hooks.timeout: %s must be positive (or zero for the default %s)", c.Timeout, DefaultTimeout))
	}
	for _, list := range []struct {
		field string
		cmds  []string
	}{
		{"hooks.on_leader", c.OnLeader},
		{"hooks.on_follower", c.OnFollower},
		{"hooks.on_stop", c.OnStop},
		{"hooks.on_quorum_lost", c.OnQuorumLost},
		{"hooks.on_quorum_regained", c.OnQuorumRegained},
	} {
		for i, cmd := range list.cmds {
			switch {
			case strings.TrimSpace(cmd) == "":
				errs = append(errs, fmt.Errorf("%s[%d]: empty command", list.field, i))
			case strings.ContainsRune(cmd, 0):
				errs = append(errs, fmt.Errorf("%s[%d]: command contains a NUL byte", list.field, i))
			}
		}
	}
	return errors.Join(errs...)
}

// Commands returns the commands configured for role.
func (c Config) Commands(role Role) []string {
	switch role {
	case RoleLeader:
		return c.OnLeader
	case RoleFollower:
		return c.OnFollower
	case RoleStop:
		return c.OnStop
	case RoleQuorumLost:
		return c.OnQuorumLost
	case RoleQuorumRegained:
		return c.OnQuorumRegained
	}
	return nil
}

// Role is a director's role, as hooks see it.
type Role string

// The roles whose changes run hooks.
const (
	RoleLeader   Role = "leader"
	RoleFollower Role = "follower"
	RoleStop     Role = "stop"
	// RoleQuorumLost and RoleQuorumRegained are not roles of the director
	// but events of one service (Event.Service), which the leader reports;
	// they share the role's queue so hooks keep the order of events.
	RoleQuorumLost     Role = "quorum_lost"
	RoleQuorumRegained Role = "quorum_regained"
)

// Valid reports whether r is one of the roles above.
func (r Role) Valid() bool {
	switch r {
	case RoleLeader, RoleFollower, RoleStop, RoleQuorumLost, RoleQuorumRegained:
		return true
	}
	return false
}

// Event is one role change.
type Event struct {
	// Role is the new role; its commands run.
	Role Role
	// Previous is the role before the change; empty at startup.
	Previous Role
	Node     string
	Term     uint64
	Index    uint64
	VIPs     []string
	// Service is the service of a quorum event; empty otherwise.
	Service string
}

// Env returns the event's DIRECTORATE_* variables as KEY=VALUE pairs.
func (e Event) Env() []string {
	return []string{
		"DIRECTORATE_ROLE=" + string(e.Role),
		"DIRECTORATE_PREVIOUS_ROLE=" + string(e.Previous),
		"DIRECTORATE_NODE=" + e.Node,
		fmt.Sprintf("DIRECTORATE_TERM=%d", e.Term),
		fmt.Sprintf("DIRECTORATE_INDEX=%d", e.Index),
		"DIRECTORATE_VIPS=" + strings.Join(e.VIPs, " "),
		"DIRECTORATE_SERVICE=" + e.Service,
	}
}
