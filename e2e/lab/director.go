//go:build linux

package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Each director's ports; each director has a namespace, so they repeat.
const (
	RaftPort   = 7001
	GossipPort = 7002
	APIPort    = 7003
)

// DirectorOptions are the parts of clusterd's configuration a scenario
// varies. Config renders them; extend both together.
type DirectorOptions struct {
	// PKI is the `clusterd tls init` directory whose CA, director
	// certificate, gossip key and bootstrap token the director uses: the
	// lab runs in secure mode, as a real cluster does. NewCluster sets
	// it, and Director.Rewrite keeps the director's own when it is empty;
	// a scenario sets it only to give a director another CA.
	PKI string
	// Profile is timing.profile: "default" unless a scenario says why not.
	Profile string
	// Heartbeat, Election and Lease override the profile's raft
	// heartbeat_timeout, election_timeout and leader_lease_timeout when
	// set.
	Heartbeat, Election, Lease time.Duration
	// Fence is vip.fence: "none" or "lease".
	Fence string
	// Lifetime is vip.lifetime (0: clusterd's default).
	Lifetime time.Duration
	// Resync is lvs.resync_interval (0: clusterd's default).
	Resync time.Duration
	// PingNodes are ping_nodes (Heartbeat's ping): ipfail follows them.
	PingNodes []netip.Addr
	// Watchdog is the device for a director, by node ID; a director not
	// listed has no watchdog. WatchdogFile stands for a plain file in the
	// director's directory: the VM has one softdog, which only one
	// director can hold open. WatchdogTimeout is watchdog.timeout.
	Watchdog        map[string]string
	WatchdogTimeout time.Duration
	// BootstrapExpect is how many directors form the first cluster; zero
	// means the director joins an existing one.
	BootstrapExpect int
	// Extra is appended verbatim to every director's configuration.
	Extra string
}

// WatchdogFile, as a Watchdog device, is a plain file of the director's.
const WatchdogFile = "file"

// Config renders the clusterd.yaml of director id at addr, whose gossip
// seeds are join. This is the only place the lab writes clusterd's
// configuration.
func (o DirectorOptions) Config(id, dir string, addr netip.Addr, join []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node_id: %s\ndata_dir: %s\n", id, filepath.Join(dir, "data"))
	fmt.Fprintf(&b, "raft_addr: %s\ngossip_addr: %s\napi_addr: %s\n",
		netip.AddrPortFrom(addr, RaftPort), netip.AddrPortFrom(addr, GossipPort), netip.AddrPortFrom(addr, APIPort))
	fmt.Fprintf(&b, "bootstrap_expect: %d\njoin: [%s]\n", o.BootstrapExpect, strings.Join(join, ", "))
	profile := o.Profile
	if profile == "" {
		profile = "default"
	}
	fmt.Fprintf(&b, "timing:\n  profile: %s\n", profile)
	for _, kv := range []struct {
		key string
		d   time.Duration
	}{{"heartbeat_timeout", o.Heartbeat}, {"election_timeout", o.Election}, {"leader_lease_timeout", o.Lease}} {
		if kv.d > 0 {
			fmt.Fprintf(&b, "  %s: %s\n", kv.key, kv.d)
		}
	}
	b.WriteString("lvs:\n  backend: kernel\n")
	if o.Resync > 0 {
		fmt.Fprintf(&b, "  resync_interval: %s\n", o.Resync)
	}
	b.WriteString("vip:\n  backend: kernel\n")
	if o.Fence != "" {
		fmt.Fprintf(&b, "  fence: %s\n", o.Fence)
	}
	if o.Lifetime > 0 {
		fmt.Fprintf(&b, "  lifetime: %s\n", o.Lifetime)
	}
	if dev := o.Watchdog[id]; dev != "" {
		if dev == WatchdogFile {
			dev = filepath.Join(dir, "watchdog")
		}
		fmt.Fprintf(&b, "watchdog:\n  device: %s\n", dev)
		if o.WatchdogTimeout > 0 {
			fmt.Fprintf(&b, "  timeout: %s\n", o.WatchdogTimeout)
		}
	}
	if len(o.PingNodes) > 0 {
		var ps []string
		for _, p := range o.PingNodes {
			ps = append(ps, p.String())
		}
		fmt.Fprintf(&b, "ping_nodes: [%s]\n", strings.Join(ps, ", "))
	}
	if o.PKI != "" {
		b.WriteString(securityConfig(o.PKI, id))
	}
	b.WriteString("log:\n  level: debug\n")
	b.WriteString(o.Extra)
	return b.String()
}

// Director is a node running clusterd.
type Director struct {
	*Node
	ID     string
	API    string
	Config string
	bin    string
	proc   *Proc
	killed bool
	// pki is the tls init directory d was created with; creds are the
	// operator credentials its clusterctl uses by default.
	pki   string
	creds Credentials
}

// NewDirector writes id's configuration on node n; Start starts it.
func NewDirector(n *Node, bin string, opts DirectorOptions, join []string) *Director {
	n.lab.t.Helper()
	// As an LVS operator would: without it, the kernel silently drops a
	// new connection whose client reuses the source port of a connection
	// it still tracks to a removed real server (server rm, disabled, a
	// sorry server leaving), until that entry expires. Scenario 1 saw 4
	// of 1315 requests time out so after `server rm`. The price, a reset
	// for a connection still open to a removed server, is not paid here:
	// clusterd deletes a removed server only once it has no active
	// connection (lvs.remove_grace). See docs/health.md.
	n.Sysctl("net.ipv4.vs.expire_nodest_conn", "1")
	d := &Director{Node: n, ID: n.Name, API: netip.AddrPortFrom(n.IP(), APIPort).String(), bin: bin,
		Config: filepath.Join(n.Dir, "clusterd.yaml"), pki: opts.PKI, creds: operatorCredentials(opts.PKI)}
	d.Rewrite(opts, join)
	return d
}

// Rewrite replaces d's configuration; it takes effect at the next Start.
// Options without a PKI keep the one d was created with.
func (d *Director) Rewrite(opts DirectorOptions, join []string) {
	d.lab.t.Helper()
	if opts.PKI == "" {
		opts.PKI = d.pki
	}
	if err := os.WriteFile(d.Config, []byte(opts.Config(d.ID, d.Dir, d.IP(), join)), 0o644); err != nil {
		d.lab.t.Fatalf("lab: %v", err)
	}
	if opts.Watchdog[d.ID] == WatchdogFile {
		if err := os.WriteFile(filepath.Join(d.Dir, "watchdog"), nil, 0o644); err != nil {
			d.lab.t.Fatalf("lab: %v", err)
		}
	}
}

// LogPath is where d's clusterd writes.
func (d *Director) LogPath() string { return filepath.Join(d.Dir, "clusterd.log") }

// Start starts clusterd in d's container.
func (d *Director) Start() {
	d.lab.t.Helper()
	d.proc = d.Start0()
	d.killed = false
}

// Crashed reports whether d's clusterd exited without being killed.
func (d *Director) Crashed() bool { return d.proc != nil && !d.killed && !d.proc.Running() }

// Start0 starts clusterd and returns its process without recording it;
// Start is what scenarios use.
func (d *Director) Start0() *Proc {
	d.lab.t.Helper()
	return d.Node.Start(d.LogPath(), filepath.Join(d.bin, "clusterd"), "-config", d.Config)
}

// Running reports whether d's clusterd runs (stopped counts as running).
func (d *Director) Running() bool { return d.proc != nil && d.proc.Running() }

// Kill SIGKILLs d's clusterd and reaps it.
func (d *Director) Kill() {
	if d.proc != nil {
		d.killed = true
		d.proc.Kill()
	}
}

// Signal sends sig to d's clusterd.
func (d *Director) Signal(sig syscall.Signal) error {
	if d.proc == nil {
		return fmt.Errorf("%s: clusterd not started", d.ID)
	}
	return d.proc.Signal(sig)
}

// Ctl runs clusterctl inside d against d's API, over HTTPS with the
// cluster's bootstrap operator token.
func (d *Director) Ctl(args ...string) (string, error) {
	return d.CtlAs(d.creds, args...)
}

// CtlAs is Ctl with other credentials: a read token, or none.
func (d *Director) CtlAs(creds Credentials, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.ctlAs(ctx, creds, args...)
}

// OperatorCredentials are the credentials Ctl uses; a scenario derives
// others from them (the same CA, another token).
func (d *Director) OperatorCredentials() Credentials { return d.creds }

func (d *Director) ctl(ctx context.Context, args ...string) (string, error) {
	return d.ctlAs(ctx, d.creds, args...)
}

func (d *Director) ctlAs(ctx context.Context, creds Credentials, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", d.NS, filepath.Join(d.bin, "clusterctl"), "--addr", d.API}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = creds.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("clusterctl %s on %s: %w: %s%s", strings.Join(args, " "), d.ID, err, errb.String(), out.String())
	}
	return out.String(), nil
}

// MustCtl is Ctl that fails the lab's T on error.
func (d *Director) MustCtl(args ...string) string {
	d.lab.t.Helper()
	out, err := d.Ctl(args...)
	if err != nil {
		d.lab.t.Fatalf("%v", err)
	}
	return out
}

// Status is the part of `clusterctl status -o json` the lab reads.
type Status struct {
	Node   string `json:"node"`
	State  string `json:"state"`
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	Index  uint64 `json:"index"`
	Voters int    `json:"voters"`
}

// Status asks d for its view; ok is false if d does not answer.
func (d *Director) Status() (Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := d.ctl(ctx, "status", "-o", "json", "--timeout", "2s")
	if err != nil {
		return Status{}, false
	}
	var env struct {
		Data Status `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &env); err != nil || env.Data.Node == "" {
		return Status{}, false
	}
	return env.Data, true
}
