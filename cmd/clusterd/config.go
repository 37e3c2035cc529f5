package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/directorate/directorate/cluster"
	"github.com/directorate/directorate/cluster/watchdog"
	"github.com/directorate/directorate/hooks"
	"github.com/directorate/directorate/lvs"
	"github.com/directorate/directorate/probes"
	"github.com/directorate/directorate/vip"
	"gopkg.in/yaml.v3"
)

// config is clusterd's YAML configuration file.
type config struct {
	NodeID string `yaml:"node_id"`
	// DataDir holds the Raft log, stable store and snapshots.
	DataDir string `yaml:"data_dir"`
	// RaftAddr, GossipAddr and APIAddr are HOST:PORT; the host is both the
	// bind address and the one advertised to peers.
	RaftAddr   string `yaml:"raft_addr"`
	GossipAddr string `yaml:"gossip_addr"`
	APIAddr    string `yaml:"api_addr"`
	// BootstrapExpect is how many directors must find each other by gossip
	// before the first cluster forms. Zero means this director joins an
	// existing cluster and waits to be added with `clusterctl member add`.
	BootstrapExpect int      `yaml:"bootstrap_expect"`
	Join            []string `yaml:"join"`
	// Membership and failback, as the cluster package documents them:
	// auto_join, dead_director_cleanup, warn_time (Heartbeat's warntime),
	// auto_failback with preferred and failback_hold.
	AutoJoin            *bool         `yaml:"auto_join"`
	DeadDirectorCleanup time.Duration `yaml:"dead_director_cleanup"`
	WarnTime            time.Duration `yaml:"warn_time"`
	AutoFailback        bool          `yaml:"auto_failback"`
	Preferred           []string      `yaml:"preferred"`
	FailbackHold        time.Duration `yaml:"failback_hold"`
	// Timing selects a profile and overrides its fields one by one.
	Timing cluster.TimingConfig `yaml:"timing"`
	LVS    lvsConfig            `yaml:"lvs"`
	VIP    vipConfig            `yaml:"vip"`
	// Watchdog guards a hung leader; empty device means none.
	Watchdog watchdog.Config `yaml:"watchdog"`
	// Hooks run on role changes, like Heartbeat's haresources scripts.
	Hooks hooks.Config `yaml:"hooks"`
	// Ping holds ping_nodes and ping_groups (Heartbeat's ping and
	// ping_group); PingOptions tunes them and ipfail.
	Ping        probes.PingConfig `yaml:",inline"`
	PingOptions pingConfig        `yaml:"ping"`
	Log         logConfig         `yaml:"log"`
	// APITimeout bounds how long a write waits to be committed.
	APITimeout time.Duration `yaml:"api_timeout"`

	// TLS names the cluster CA and this director's certificate and key:
	// raft runs over mutual TLS 1.3 with them, and the API serves HTTPS.
	// Required unless Insecure.
	TLS tlsFiles `yaml:"tls"`
	// GossipKeyFile holds the gossip encryption key (base64 of 32 bytes,
	// AES-256-GCM) that a director uses until the replicated keyring
	// takes over. Required unless Insecure.
	GossipKeyFile string `yaml:"gossip_key_file"`
	// Insecure runs raft, gossip and the API in plaintext with no API
	// authentication: a development mode, warned about at every start.
	Insecure bool `yaml:"insecure"`
	// BootstrapTokenFile holds the first operator API token (ID.SECRET,
	// mode 0600). A new leader adds it while the cluster has no token;
	// once any token exists the file is ignored. See docs/security.md.
	BootstrapTokenFile string `yaml:"bootstrap_token_file"`
}

// tlsFiles are PEM file paths.
type tlsFiles struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

type lvsConfig struct {
	// Backend is "kernel" (the default) or "dry-run" for hosts without IPVS.
	Backend string `yaml:"backend"`
	// ResyncInterval is how often the whole kernel table is re-read to
	// repair drift such as `ipvsadm -C`.
	ResyncInterval time.Duration `yaml:"resync_interval"`
	// RemoveGrace bounds how long a real server removed from a service
	// (server rm, disabled, down with down-action remove, a sorry server
	// leaving) stays in the kernel at weight 0 while its connections
	// end; it is deleted as soon as it has no active connection. Unset
	// means 30s; 0s deletes at once, cutting connections in flight.
	RemoveGrace *time.Duration `yaml:"remove_grace"`
}

// removeGrace is RemoveGrace as lvs.Options takes it.
func (c lvsConfig) removeGrace() time.Duration {
	switch {
	case c.RemoveGrace == nil:
		return lvs.DefaultRemoveGrace
	case *c.RemoveGrace == 0:
		return -1
	}
	return *c.RemoveGrace
}

type vipConfig struct {
	// Backend is "kernel" (the default: netlink addresses and ARP/NA
	// announcements) or "dry-run", which only records claims, for several
	// directors sharing one host in tests.
	Backend string `yaml:"backend"`
	// Fence is "none" (the default) or "lease": see the vip package.
	Fence string `yaml:"fence"`
	// Lifetime is each VIP's kernel lifetime: how long a VIP outlives a
	// crashed or hung clusterd. Whole seconds.
	Lifetime       time.Duration `yaml:"lifetime"`
	BurstCount     int           `yaml:"burst_count"`
	BurstInterval  time.Duration `yaml:"burst_interval"`
	RepeatInterval time.Duration `yaml:"repeat_interval"`
	// PrefixRoute lets the kernel add a connected route with each VIP.
	PrefixRoute bool `yaml:"prefix_route"`
}

func (v vipConfig) options() vip.Options {
	return vip.Options{Lifetime: v.Lifetime, BurstCount: v.BurstCount, BurstInterval: v.BurstInterval,
		RepeatInterval: v.RepeatInterval, PrefixRoute: v.PrefixRoute}
}

type logConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

var nodeIDPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// loadConfig reads and validates a configuration file. Unknown keys are
// errors: a misspelt setting must not be silently ignored on a load balancer.
func loadConfig(path string) (*config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := parseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

func parseConfig(raw []byte) (*config, error) {
	cfg := &config{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *config) defaults() {
	if c.LVS.Backend == "" {
		c.LVS.Backend = "kernel"
	}
	if c.LVS.ResyncInterval == 0 {
		c.LVS.ResyncInterval = 30 * time.Second
	}
	if c.VIP.Backend == "" {
		c.VIP.Backend = "kernel"
	}
	if c.VIP.Fence == "" {
		c.VIP.Fence = string(vip.FenceNone)
	}
	if c.VIP.Lifetime == 0 {
		c.VIP.Lifetime = vip.DefaultLifetime
	}
	if c.PingOptions.Hysteresis == 0 {
		c.PingOptions.Hysteresis = defaultPingHysteresis
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.APITimeout == 0 {
		c.APITimeout = 10 * time.Second
	}
}

func (c *config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !nodeIDPattern.MatchString(c.NodeID) {
		bad("node_id", "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit; got %q", c.NodeID)
	}
	if c.DataDir == "" {
		bad("data_dir", "is required: the Raft log and snapshots live there")
	}
	for field, v := range map[string]string{"raft_addr": c.RaftAddr, "gossip_addr": c.GossipAddr, "api_addr": c.APIAddr} {
		if err := checkHostPort(v); err != nil {
			bad(field, "%v", err)
		}
	}
	if c.RaftAddr != "" && c.RaftAddr == c.GossipAddr {
		bad("gossip_addr", "must differ from raft_addr")
	}
	if c.BootstrapExpect < 0 {
		bad("bootstrap_expect", "must be 0 (join an existing cluster) or the number of directors, got %d", c.BootstrapExpect)
	}
	if c.BootstrapExpect > 0 && c.BootstrapExpect%2 == 0 {
		bad("bootstrap_expect", "should be odd: %d directors tolerate no more failures than %d", c.BootstrapExpect, c.BootstrapExpect-1)
	}
	for i, j := range c.Join {
		if err := checkHostPort(j); err != nil {
			bad(fmt.Sprintf("join[%d]", i), "%v", err)
		}
	}
	if c.BootstrapExpect > 1 && len(c.Join) == 0 {
		bad("join", "is required with bootstrap_expect %d: list the gossip addresses of the other directors", c.BootstrapExpect)
	}
	switch c.LVS.Backend {
	case "kernel", "dry-run":
	default:
		bad("lvs.backend", "must be kernel or dry-run, got %q", c.LVS.Backend)
	}
	if c.LVS.ResyncInterval < time.Second {
		bad("lvs.resync_interval", "must be at least 1s, got %s", c.LVS.ResyncInterval)
	}
	if g := c.LVS.RemoveGrace; g != nil && (*g < 0 || *g > time.Hour) {
		bad("lvs.remove_grace", "must be between 0s (delete at once) and 1h, got %s", *g)
	}
	switch c.VIP.Backend {
	case "kernel", "dry-run":
	default:
		bad("vip.backend", "must be kernel or dry-run, got %q", c.VIP.Backend)
	}
	if _, err := vip.ParseFence(c.VIP.Fence); err != nil {
		bad("vip.fence", "must be none or lease, got %q", c.VIP.Fence)
	}
	if opts, err := c.VIP.options().Resolve(); err != nil {
		errs = append(errs, err)
	} else if err := c.Watchdog.Validate(opts.RenewInterval); err != nil {
		errs = append(errs, err)
	}
	if err := c.Hooks.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Ping.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.PingOptions.UnreachableWithin(); err != nil {
		errs = append(errs, fmt.Errorf("ping: %w", err))
	}
	if c.PingOptions.Hysteresis < 0 {
		bad("ping.hysteresis", "must be positive, got %s", c.PingOptions.Hysteresis)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	if _, err := c.Timing.Resolve(); err != nil {
		errs = append(errs, err)
	} else if c.NodeID != "" && c.DataDir != "" && c.RaftAddr != "" && c.GossipAddr != "" {
		// The cluster package checks its own settings (auto_failback,
		// warn_time, ...) with field-named errors.
		cc := c.clusterConfig(version)
		if _, err := cc.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.APITimeout < 100*time.Millisecond {
		bad("api_timeout", "must be at least 100ms, got %s", c.APITimeout)
	}
	errs = append(errs, c.validateSecurity()...)
	if c.Insecure && c.BootstrapTokenFile != "" {
		bad("bootstrap_token_file", "must be empty with insecure: true, which has no API tokens; remove one of them")
	}
	return errors.Join(errs...)
}

func checkHostPort(v string) error {
	if v == "" {
		return errors.New("is required, as HOST:PORT")
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil {
		return fmt.Errorf("want an IP HOST:PORT such as 10.0.0.1:7901, got %q", v)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("port must be 1-65535, got %q", v)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// clusterConfig maps the file's settings onto the cluster package's.
func (c *config) clusterConfig(version string) cluster.Config {
	return cluster.Config{
		NodeID:          c.NodeID,
		DataDir:         c.DataDir,
		RaftBind:        c.RaftAddr,
		GossipBind:      c.GossipAddr,
		APIAddress:      c.APIAddr,
		Join:            c.Join,
		BootstrapExpect: c.BootstrapExpect,
		Timing:          c.Timing,
		Version:         version,

		AutoJoin:            c.AutoJoin,
		DeadDirectorCleanup: c.DeadDirectorCleanup,
		WarnTime:            c.WarnTime,
		AutoFailback:        c.AutoFailback,
		Preferred:           c.Preferred,
		FailbackHold:        c.FailbackHold,
	}
}
