//go:build linux

// Package scenarios is Directorate's end-to-end suite: real client traffic
// through real kernel IPVS, with directors, real servers, a client and a
// gateway as containers (package e2e/lab) inside the e2e VM. The tests skip
// unless DIRECTORATE_IN_VM=1, which only the VM sets; `make e2e` builds the
// binaries and this test binary on the host and runs it in the VM.
package scenarios

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/e2e/lab"
)

var (
	binDir  = flag.String("bin", "", "directory holding clusterd, clusterctl and realserver")
	workDir = flag.String("dir", "", "directory for the nodes' files (default: a test temp dir)")
)

// Timing under emulation. The VM runs the whole lab on two emulated CPUs,
// two to ten times slower than the host; these bounds are for waiting, not
// for asserting speed (the failover figures are printed and recorded in
// docs/benchmarks.md instead).
const (
	formTimeout   = 90 * time.Second // a cluster forms from gossip and elects
	settleTimeout = 60 * time.Second // after a fault, one leader holds the VIP
	tableTimeout  = 30 * time.Second // every director's IPVS table converges
	// requestEvery is the client's request interval the issue asks for.
	requestEvery = 20 * time.Millisecond
	// requestTimeout bounds one request. Under emulation a request is
	// usually answered in a few milliseconds, but the VM stalls for up to
	// half a second now and then; a request that waits longer than this
	// was dropped.
	requestTimeout = 2 * time.Second
)

// webVIP etc. are the lab's addresses as the scenarios use them.
var (
	webVIP  = lab.WebVIP.Addr()
	webAddr = netip.AddrPortFrom(webVIP, 80)
)

func newCluster(t *testing.T, o lab.Options) *lab.Cluster {
	t.Helper()
	if os.Getenv("DIRECTORATE_IN_VM") != "1" {
		t.Skip("runs only in the e2e VM: make e2e")
	}
	if *binDir == "" {
		t.Fatal("-bin is required")
	}
	o.Bin = *binDir
	if *workDir != "" {
		o.Dir = filepath.Join(*workDir, t.Name())
	} else {
		o.Dir = t.TempDir()
	}
	if o.Director.Heartbeat == 0 {
		o.Director.Heartbeat, o.Director.Election, o.Director.Lease = emulatedHeartbeat, emulatedHeartbeat, emulatedLease
	}
	return lab.NewCluster(t, o)
}

// The raft timeouts under emulation. The default profile's 200/200/100 ms
// assumes a real CPU: in the TCG VM, with every node of the lab sharing two
// emulated CPUs, heartbeats arrive 170 to 380 ms apart and leaders step
// down for want of contact every few seconds (measured on the first runs of
// this suite). Five times the default profile, which is raft's own defaults
// (1 s/1 s/500 ms), keeps the leader stable there and keeps every
// relationship of the profile (lease < heartbeat timeout). The failover
// figures recorded from this suite are therefore those of these timeouts
// under emulation, not of the default profile on hardware.
const (
	emulatedHeartbeat = time.Second
	emulatedLease     = 500 * time.Millisecond
)

// addWeb configures the DR web service on the VIP 10.0.0.100 with every
// outside real server, through leader, and returns its service name.
func addWeb(t *testing.T, c *lab.Cluster, leader *lab.Director, method string) string {
	t.Helper()
	leader.MustCtl("vip", "add", "web", lab.WebVIP.String())
	leader.MustCtl("service", "add", "web", "--vip", "web", "--proto", "tcp", "--port", "80", "--scheduler", "rr", "--method", method)
	for _, rs := range c.Servers {
		leader.MustCtl("server", "add", "web", netip.AddrPortFrom(rs.IP(), 80).String())
	}
	return "web"
}

// startClient starts the client's requests to target and reports its
// measurements if the test fails.
func startClient(t *testing.T, c *lab.Cluster, target netip.AddrPort) *lab.Client {
	t.Helper()
	cl := lab.StartClient(c.Client, target, requestEvery, requestTimeout)
	c.AddReport(cl.Report)
	return cl
}

// sequence sends n requests one after the other and returns who answered.
func sequence(t *testing.T, c *lab.Cluster, target netip.AddrPort, n int) []string {
	t.Helper()
	var out []string
	for range n {
		who, err := lab.Get(c.Client, target, 2*time.Second)
		if err != nil {
			t.Fatalf("request %d to %s: %v (answers so far %v)", len(out)+1, target, err, out)
		}
		out = append(out, who)
	}
	return out
}

// assertRoundRobin checks that answers cycle through every one of want in
// a fixed order, as rr schedules them.
func assertRoundRobin(t *testing.T, answers, want []string) {
	t.Helper()
	k := len(want)
	seen := map[string]bool{}
	for _, a := range answers[:k] {
		seen[a] = true
	}
	for _, w := range want {
		if !seen[w] {
			t.Fatalf("answers %v: the first %d are not every server %v once", answers, k, want)
		}
	}
	for i := k; i < len(answers); i++ {
		if answers[i] != answers[i-k] {
			t.Fatalf("answers %v do not repeat in round-robin order with period %d", answers, k)
		}
	}
}

func names(nodes []*lab.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}

// noFailures fails t if any request since t0 failed.
func noFailures(t *testing.T, cl *lab.Client, t0 time.Time, what string) {
	t.Helper()
	var fails []string
	ss := cl.Since(t0)
	for _, s := range ss {
		if !s.OK() {
			fails = append(fails, fmt.Sprintf("%s: %s", s.At.Format("15:04:05.000"), s.Err))
		}
	}
	if len(fails) > 0 {
		t.Fatalf("%s: %d of %d requests failed:\n%s", what, len(fails), len(ss), strings.Join(fails, "\n"))
	}
	if len(ss) == 0 {
		t.Fatalf("%s: the client sent no requests", what)
	}
	t.Logf("%s: %d requests, none failed", what, len(ss))
}
