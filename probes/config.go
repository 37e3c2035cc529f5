package probes

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"time"
)

// PingConfig lists the ping nodes, Heartbeat's `ping` and `ping_group`.
// Each node and each group counts one towards the score (see Score).
type PingConfig struct {
	// Nodes are single addresses, each reachable on its own.
	Nodes []string `yaml:"ping_nodes" json:"ping_nodes"`
	// Groups are named sets of addresses; a group is reachable while any
	// member is, so redundant routers count once.
	Groups map[string][]string `yaml:"ping_groups" json:"ping_groups"`
}

// Defaults for PingOptions.
const (
	// DefaultPingInterval is how often each ping node is probed.
	DefaultPingInterval = time.Second
	// DefaultPingTimeout is how long a probe waits for its reply, capped
	// at the interval.
	DefaultPingTimeout = time.Second
	// DefaultRise successes in a row make an unreachable node reachable.
	DefaultRise = 2
	// DefaultFall failures in a row make a reachable node unreachable:
	// one lost packet is not an outage.
	DefaultFall = 3
	// MinPingInterval keeps a typo from flooding a router with echo
	// requests.
	MinPingInterval = 10 * time.Millisecond
)

// PingOptions tune a PingMonitor. Zero fields take the defaults.
type PingOptions struct {
	// Interval is the time between probes of one target, at least
	// MinPingInterval.
	Interval time.Duration `yaml:"interval" json:"interval"`
	// Timeout is how long a probe waits for its reply; at most Interval,
	// so a target never has two probes outstanding. Default
	// min(DefaultPingTimeout, Interval).
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Rise is how many successes in a row make a target reachable again.
	Rise int `yaml:"rise" json:"rise"`
	// Fall is how many failures in a row make a target unreachable.
	Fall int `yaml:"fall" json:"fall"`
	// Jitter delays each probe by a random amount in [0, Jitter) so that
	// directors do not probe a router in lockstep; it must be less than
	// Interval. Default Interval/10; negative disables it.
	Jitter time.Duration `yaml:"jitter" json:"jitter"`
	// Clock defaults to the system clock.
	Clock Clock `yaml:"-" json:"-"`
	// Logger defaults to slog.Default().
	Logger *slog.Logger `yaml:"-" json:"-"`
}

// withDefaults fills zero fields and validates the result; errors name the
// field.
func (o PingOptions) withDefaults() (PingOptions, error) {
	if o.Interval == 0 {
		o.Interval = DefaultPingInterval
	}
	if o.Timeout == 0 {
		o.Timeout = min(DefaultPingTimeout, o.Interval)
	}
	if o.Rise == 0 {
		o.Rise = DefaultRise
	}
	if o.Fall == 0 {
		o.Fall = DefaultFall
	}
	switch {
	case o.Jitter == 0:
		o.Jitter = o.Interval / 10
	case o.Jitter < 0:
		o.Jitter = 0
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var errs []error
	if o.Interval < MinPingInterval {
		errs = append(errs, fmt.Errorf("interval: %s is below the minimum %s", o.Interval, MinPingInterval))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout: %s is negative", o.Timeout))
	} else if o.Interval > 0 && o.Timeout > o.Interval {
		errs = append(errs, fmt.Errorf("timeout: %s exceeds the interval %s, so probes of one target would overlap", o.Timeout, o.Interval))
	}
	if o.Rise < 0 {
		errs = append(errs, fmt.Errorf("rise: %d is negative", o.Rise))
	}
	if o.Fall < 0 {
		errs = append(errs, fmt.Errorf("fall: %d is negative", o.Fall))
	}
	if o.Interval > 0 && o.Jitter >= o.Interval {
		errs = append(errs, fmt.Errorf("jitter: %s must be less than the interval %s", o.Jitter, o.Interval))
	}
	return o, errors.Join(errs...)
}

// UnreachableWithin bounds how long after a target stops answering it is
// marked unreachable: the Fall-th failed probe starts at most Fall
// intervals plus the jitter later and gives up after Timeout. It assumes
// a healthy host (probes start on schedule).
func (o PingOptions) UnreachableWithin() (time.Duration, error) {
	o, err := o.withDefaults()
	if err != nil {
		return 0, err
	}
	return time.Duration(o.Fall)*o.Interval + o.Jitter + o.Timeout, nil
}

// ReachableWithin bounds how long after a target answers again it is
// marked reachable: the probe in flight when it recovered may still time
// out, then Rise probes must succeed.
func (o PingOptions) ReachableWithin() (time.Duration, error) {
	o, err := o.withDefaults()
	if err != nil {
		return 0, err
	}
	return time.Duration(o.Rise)*o.Interval + o.Jitter + o.Timeout, nil
}

// groupName keeps names usable as metric labels and in logs.
var groupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// targetSpec is one address to probe; group is "" for a ping node.
type targetSpec struct {
	addr  netip.Addr
	group string
}

// Validate checks the configuration. Every problem is reported, each
// naming its field the way the configuration file does:
// `ping_nodes[2]: ...` or `ping_groups.uplinks[0]: ...`.
func (c PingConfig) Validate() error {
	_, err := c.targets()
	return err
}

// targets parses and checks the configuration: ping nodes in order, then
// groups by name, members in order.
func (c PingConfig) targets() ([]targetSpec, error) {
	var errs []error
	var specs []targetSpec
	seen := make(map[netip.Addr]string) // address (zone kept) -> field that first named it
	add := func(field, s, group string) {
		a, err := parsePingAddr(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			return
		}
		// Counting one router twice would inflate the score and probe it twice.
		if first, dup := seen[a]; dup {
			errs = append(errs, fmt.Errorf("%s: %s is already listed as %s", field, a, first))
			return
		}
		seen[a] = field
		specs = append(specs, targetSpec{addr: a, group: group})
	}
	for i, s := range c.Nodes {
		add(fmt.Sprintf("ping_nodes[%d]", i), s, "")
	}
	names := make([]string, 0, len(c.Groups))
	for name := range c.Groups {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		members := c.Groups[name]
		if !groupName.MatchString(name) {
			errs = append(errs, fmt.Errorf("ping_groups.%q: group name must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", name))
			continue
		}
		if len(members) == 0 {
			errs = append(errs, fmt.Errorf("ping_groups.%s: group is empty; list at least one address", name))
			continue
		}
		for i, s := range members {
			add(fmt.Sprintf("ping_groups.%s[%d]", name, i), s, name)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return specs, nil
}

// parsePingAddr accepts a literal unicast IP address. Host names are
// refused: resolving them on every probe would make reachability depend on
// DNS, which is often behind the very router being watched.
func parsePingAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address (host names are not accepted)", s)
	}
	switch {
	case a.Is4In6():
		return netip.Addr{}, fmt.Errorf("%s is an IPv4-mapped IPv6 address; write it as %s", a, a.Unmap())
	case a.IsUnspecified():
		return netip.Addr{}, fmt.Errorf("%s is the unspecified address", a)
	case a.IsMulticast():
		return netip.Addr{}, fmt.Errorf("%s is a multicast address; ping nodes must be unicast", a)
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, fmt.Errorf("%s is the broadcast address; ping nodes must be unicast", a)
	case a.Is6() && a.IsLinkLocalUnicast() && a.Zone() == "":
		return netip.Addr{}, fmt.Errorf("%s is link-local and needs an interface zone, such as %s%%eth0", a, a)
	case a.Zone() != "" && !a.IsLinkLocalUnicast():
		return netip.Addr{}, fmt.Errorf("%s has a zone, which only link-local addresses take", a)
	}
	return a, nil
}

// groupNames lists the groups of specs in order.
func groupNames(specs []targetSpec) []string {
	var names []string
	for _, s := range specs {
		if s.group != "" && !slices.Contains(names, s.group) {
			names = append(names, s.group)
		}
	}
	return names
}
