//go:build linux

package lab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The lab's fixed addresses.
var (
	// GatewayIP is the gateway node: the directors' ping node.
	GatewayIP = netip.MustParseAddr("10.0.0.254")
	// ClientIP is the client node.
	ClientIP = netip.MustParseAddr("10.0.0.200")
	// WebVIP is the VIP of the DR and TUN services, on the outside network.
	WebVIP = netip.MustParsePrefix("10.0.0.100/24")
	// TunVIP is the TUN service's VIP, on the outside network.
	TunVIP = netip.MustParsePrefix("10.0.0.102/24")
	// NATVIP is the NAT service's VIP, on the outside network.
	NATVIP = netip.MustParsePrefix("10.0.0.101/24")
	// InsideGatewayVIP is the floating gateway the NAT real servers route
	// through: the leader holds it, so replies pass its IPVS table.
	InsideGatewayVIP = netip.MustParsePrefix("10.1.0.254/24")
)

// directorIP is director i's (1-based) outside address; insideIP its
// inside one.
func directorIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}) }
func insideIP(i int) netip.Addr   { return netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}) }

// Options describes a lab cluster.
type Options struct {
	// Bin holds clusterd, clusterctl and realserver.
	Bin string
	// Dir holds every node's files (logs, Raft data).
	Dir string
	// Directors is how many director nodes exist (default 3); Started how
	// many of them start at once (default all). The first cluster forms
	// from Director.BootstrapExpect of them (default 3).
	Directors, Started int
	// Servers is how many DR/TUN real servers sit on the outside network
	// (default 3); NATServers how many NAT real servers on the inside one.
	Servers, NATServers int
	// Director is every director's configuration. Without a
	// Director.PKI, NewCluster runs `clusterd tls init` into Dir/pki and
	// the directors run in secure mode with its files: mutual TLS for
	// raft, encrypted gossip, the HTTPS API with the bootstrap token,
	// which the lab's clusterctl calls use.
	Director DirectorOptions
}

// Cluster is a lab with directors, real servers, a client and a gateway.
type Cluster struct {
	T          T
	Lab        *Lab
	Opts       Options
	Dirs       []*Director
	Client     *Node
	Gateway    *Node
	Servers    []*Node
	NATServers []*Node
	// away marks directors that run but cannot take part (stopped, cut
	// off): agreement is checked without them.
	away map[*Director]bool
	// reporters add to the failure report.
	reporters []func() string
}

// NewCluster builds the topology and starts the real servers and the first
// Options.Started directors, without waiting for them.
func NewCluster(t T, o Options) *Cluster {
	t.Helper()
	if o.Directors == 0 {
		o.Directors = 3
	}
	if o.Started == 0 {
		o.Started = o.Directors
	}
	if o.Servers == 0 {
		o.Servers = 3
	}
	if o.Director.BootstrapExpect == 0 {
		o.Director.BootstrapExpect = 3
	}
	for _, b := range []string{"clusterd", "clusterctl", "realserver"} {
		if _, err := os.Stat(filepath.Join(o.Bin, b)); err != nil {
			t.Fatalf("lab: %v (build the binaries first)", err)
		}
	}
	c := &Cluster{T: t, Lab: New(t, o.Dir), Opts: o, away: map[*Director]bool{}}
	pfx := func(a netip.Addr, n netip.Prefix) netip.Prefix { return netip.PrefixFrom(a, n.Bits()) }
	c.Gateway = c.Lab.AddNode("gw", Link{Outside, pfx(GatewayIP, OutsideNet)})
	c.Client = c.Lab.AddNode("client", Link{Outside, pfx(ClientIP, OutsideNet)})
	for i := range o.Servers {
		name := fmt.Sprintf("rs%d", i+1)
		n := c.Lab.AddNode(name, Link{Outside, pfx(netip.AddrFrom4([4]byte{10, 0, 0, byte(11 + i)}), OutsideNet)})
		c.setupDRTUN(n)
		n.Start(filepath.Join(n.Dir, "realserver.log"), filepath.Join(o.Bin, "realserver"), "-name", name, "-listen", ":80")
		c.Servers = append(c.Servers, n)
	}
	for i := range o.NATServers {
		name := fmt.Sprintf("nat%d", i+1)
		n := c.Lab.AddNode(name, Link{Inside, pfx(netip.AddrFrom4([4]byte{10, 1, 0, byte(21 + i)}), InsideNet)})
		n.MustRun("ip", "route", "add", "default", "via", InsideGatewayVIP.Addr().String())
		n.Start(filepath.Join(n.Dir, "realserver.log"), filepath.Join(o.Bin, "realserver"), "-name", name, "-listen", ":8080")
		c.NATServers = append(c.NATServers, n)
	}
	var join, dids []string
	addrs := map[string]netip.Addr{}
	for i := range o.Directors {
		join = append(join, netip.AddrPortFrom(directorIP(i+1), GossipPort).String())
		id := fmt.Sprintf("d%d", i+1)
		dids = append(dids, id)
		addrs[id] = directorIP(i + 1)
	}
	if o.Director.PKI == "" {
		o.Director.PKI = filepath.Join(o.Dir, "pki")
		c.Opts.Director.PKI = o.Director.PKI
		if err := TLSInit(o.Bin, o.Director.PKI, dids, addrs); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	for i := range o.Directors {
		n := c.Lab.AddNode(dids[i],
			Link{Outside, pfx(directorIP(i+1), OutsideNet)}, Link{Inside, pfx(insideIP(i+1), InsideNet)})
		c.Dirs = append(c.Dirs, NewDirector(n, o.Bin, o.Director, join[:max(o.Started, 3)]))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s", c.Report())
		}
	})
	for _, d := range c.Dirs[:o.Started] {
		d.Start()
	}
	return c
}

// setupDRTUN prepares a real server for DR and TUN: the VIPs on lo, where
// arp_ignore=1 and arp_announce=2 keep it from answering or announcing
// them, and tunl0 up to decapsulate IPIP, with reverse-path filtering off
// since the inner source arrives on tunl0.
func (c *Cluster) setupDRTUN(n *Node) {
	for _, kv := range [][2]string{
		{"net.ipv4.conf.all.arp_ignore", "1"}, {"net.ipv4.conf.all.arp_announce", "2"},
		{"net.ipv4.conf.eth0.arp_ignore", "1"}, {"net.ipv4.conf.eth0.arp_announce", "2"},
		{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"},
	} {
		n.Sysctl(kv[0], kv[1])
	}
	for _, v := range []netip.Prefix{WebVIP, TunVIP} {
		n.MustRun("ip", "addr", "add", v.Addr().String()+"/32", "dev", "lo")
	}
	n.MustRun("ip", "link", "set", "tunl0", "up")
	n.Sysctl("net.ipv4.conf.tunl0.rp_filter", "0")
}

// AddReport adds fn's text to the failure report.
func (c *Cluster) AddReport(fn func() string) { c.reporters = append(c.reporters, fn) }

// Report is what a failed scenario prints: every director's log and
// `ipvsadm -Ln`, and whatever was added with AddReport (the client's
// measurements).
func (c *Cluster) Report() string {
	var b strings.Builder
	for _, d := range c.Dirs {
		logb, _ := os.ReadFile(d.LogPath())
		fmt.Fprintf(&b, "==== %s: clusterd log ====\n%s", d.ID, tail(string(logb), 400))
		fmt.Fprintf(&b, "==== %s: ipvsadm -Ln ====\n%s", d.ID, d.IPVSList())
	}
	for _, fn := range c.reporters {
		b.WriteString(fn())
		b.WriteByte('\n')
	}
	return b.String()
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d earlier lines]\n", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "")
}

// SetAway marks d as running but unable to take part (stopped or cut
// off), or back.
func (c *Cluster) SetAway(d *Director, away bool) { c.away[d] = away }

// Present lists the directors that run and take part.
func (c *Cluster) Present() []*Director {
	var out []*Director
	for _, d := range c.Dirs {
		if d.Running() && !c.away[d] {
			out = append(out, d)
		}
	}
	return out
}

// ByID returns the director with node ID id, or nil.
func (c *Cluster) ByID(id string) *Director {
	for _, d := range c.Dirs {
		if d.ID == id {
			return d
		}
	}
	return nil
}

// AgreedLeader returns the leader every present director names, if they
// agree and it is present.
func (c *Cluster) AgreedLeader() (*Director, Status, bool) {
	var leader string
	var st0 Status
	for _, d := range c.Present() {
		st, ok := d.Status()
		if !ok || st.Leader == "" || (leader != "" && st.Leader != leader) {
			return nil, Status{}, false
		}
		leader = st.Leader
		if st.Node == st.Leader {
			st0 = st
		}
	}
	d := c.ByID(leader)
	if d == nil || !slices.Contains(c.Present(), d) {
		return nil, Status{}, false
	}
	return d, st0, true
}

// WaitLeader waits until every present director names one present leader.
func (c *Cluster) WaitLeader(timeout time.Duration) *Director {
	c.T.Helper()
	var l *Director
	Poll(c.T, timeout, 100*time.Millisecond, "every present director to name one leader", func() (bool, error) {
		if err := c.crashed(); err != nil {
			return false, err
		}
		var ok bool
		l, _, ok = c.AgreedLeader()
		return ok, nil
	})
	return l
}

// crashed reports a director whose clusterd exited unasked, with the end
// of its log.
func (c *Cluster) crashed() error {
	for _, d := range c.Dirs {
		if d.Crashed() {
			b, _ := os.ReadFile(d.LogPath())
			return fmt.Errorf("%s: clusterd exited: %s", d.ID, tail(string(b), 5))
		}
	}
	return nil
}

// Holders lists the directors that hold ip on an interface.
func (c *Cluster) Holders(ip netip.Addr) ([]*Director, error) {
	var out []*Director
	for _, d := range c.Dirs {
		ok, err := d.HasAddr(ip)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// WaitSettled waits until the present directors agree on a leader, which
// alone holds every VIP in vips, and returns it.
func (c *Cluster) WaitSettled(timeout time.Duration, vips ...netip.Addr) *Director {
	c.T.Helper()
	var l *Director
	last := "no agreed leader"
	_, err := TryPoll(timeout, 100*time.Millisecond, func() (bool, error) {
		if err := c.crashed(); err != nil {
			return false, err
		}
		var ok bool
		l, _, ok = c.AgreedLeader()
		if !ok {
			last = "no agreed leader"
			return false, nil
		}
		for _, v := range vips {
			h, err := c.Holders(v)
			if err != nil {
				return false, err
			}
			if len(h) != 1 || h[0] != l {
				last = fmt.Sprintf("leader %s, %s on %v", l.ID, v, ids(h))
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		c.T.Fatalf("waiting for one leader alone holding %v: %v; last seen: %s", vips, err, last)
	}
	return l
}

func ids(ds []*Director) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

// WaitTables waits until the kernel table of every present director, as
// ipvsadm reads it, equals the desired table of the replicated state at
// least at index minIndex, as the leader reports it: hot standby on every
// follower, not only on the leader.
func (c *Cluster) WaitTables(timeout time.Duration, leader *Director, minIndex uint64) IPVSTable {
	c.T.Helper()
	_, t := c.WaitHealthTables(timeout, leader, fmt.Sprintf("the replicated state at index %d", minIndex), func(s Snapshot) error {
		if s.Index < minIndex {
			return fmt.Errorf("leader at index %d < %d", s.Index, minIndex)
		}
		return nil
	})
	return t
}

// HolderWatch samples which directors hold an address, from the kernel's
// own address lists: the ground truth that ARP samples approximate.
type HolderWatch struct {
	stop chan struct{}
	done chan struct{}
	// Max is the most directors seen holding the address at once; Double
	// the total time two or more did.
	Max    int
	Double time.Duration
	// Seq lists the holders as they changed, e.g. [d1] [] [d2].
	Seq []string
	Err error
}

// WatchHolders samples ip's holders every interval until Stop.
func (c *Cluster) WatchHolders(ip netip.Addr, interval time.Duration) *HolderWatch {
	w := &HolderWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		prev := time.Now()
		last := "-"
		for {
			h, err := c.Holders(ip)
			if err != nil {
				w.Err = err
				return
			}
			now := time.Now()
			if len(h) > w.Max {
				w.Max = len(h)
			}
			if len(h) > 1 {
				w.Double += now.Sub(prev)
			}
			if s := fmt.Sprint(ids(h)); s != last {
				w.Seq = append(w.Seq, s)
				last = s
			}
			prev = now
			select {
			case <-w.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	c.T.Cleanup(w.Stop)
	return w
}

// Stop ends the sampling; it is safe to call more than once.
func (w *HolderWatch) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// String shows w for the scenario logs.
func (w *HolderWatch) String() string {
	return fmt.Sprintf("holders over time %v, at most %d at once, %s with two or more", w.Seq, w.Max, w.Double.Round(time.Millisecond))
}
