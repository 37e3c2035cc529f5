//go:build linux

package scenarios

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/e2e/lab"
)

// The health check of TestHealthChecks. A stopped listener refuses the
// check's connection at once, so detection takes at most fall intervals
// after the stop, plus gossip, the leader's agreement, a commit and every
// director's reconcile; issue 6 asks for interval × fall + 1 s.
const (
	checkInterval = 500 * time.Millisecond
	checkTimeout  = 400 * time.Millisecond
	checkRise     = 2
	checkFall     = 2
	// detectBound is issue 6's bound; detectLimit fails the scenario.
	// The margin between them is for the emulated VM, whose stalls of
	// up to a second or two delay a check or a commit now and then (see
	// the failover figures in docs/benchmarks.md); the measured time is
	// printed against detectBound, and recorded.
	detectBound = checkInterval*checkFall + time.Second
	detectLimit = detectBound + 3*time.Second
)

// TestHealthChecks is issue 6's scenario in the VM: the DR web service
// with an HTTP check and a sorry server, and the client sending a request
// every 20 ms, each on a new connection.
//
//  1. A real server is drained (`server drain --wait` on a follower) while
//     a kept-alive connection to it is open: that connection is still
//     answered by it, new connections avoid it, and drain --wait returns
//     once the connection closes. This step comes first because the
//     kernel counts a connection in SYN_RECV as active: in DR the director
//     never sees a stopped server's reset, so each refused connection of
//     the later steps would hold drain --wait up for 60 s (the SYN_RECV
//     timeout).
//  2. One real server's listener stops: within interval × fall + 1 s no
//     request reaches it (each that did was refused), the others answer.
//  3. The other two stop: the service is below its quorum and the sorry
//     server answers every request.
//  4. All three listen again: traffic returns to all three, the sorry
//     server leaves, quiesced until its last connection ends, so no
//     request fails.
//
// After every step, every director's kernel table (ipvsadm) matches the
// replicated state, health included.
func TestHealthChecks(t *testing.T) {
	start := time.Now()
	c := newCluster(t, lab.Options{})
	sorry := c.AddSorryServer()
	leader := c.WaitLeader(formTimeout)
	sorryAddr := netip.AddrPortFrom(sorry.IP(), 80).String()
	leader.MustCtl("vip", "add", "web", lab.WebVIP.String())
	leader.MustCtl("service", "add", "web", "--vip", "web", "--proto", "tcp", "--port", "80", "--scheduler", "rr", "--method", "dr",
		"--check", "http", "--check-path", "/health", "--check-expect", "200",
		"--check-interval", checkInterval.String(), "--check-timeout", checkTimeout.String(),
		"--check-rise", fmt.Sprint(checkRise), "--check-fall", fmt.Sprint(checkFall),
		"--sorry", sorryAddr)
	addr := map[string]string{} // real server name -> ADDR:PORT
	for _, rs := range c.Servers {
		addr[rs.Name] = netip.AddrPortFrom(rs.IP(), 80).String()
		leader.MustCtl("server", "add", "web", addr[rs.Name])
	}
	leader = c.WaitSettled(settleTimeout, webVIP)
	svc := "tcp " + webAddr.String()
	rs1, rs2, rs3 := c.Servers[0], c.Servers[1], c.Servers[2]

	// health asks for the agreed state of each named server ("up",
	// "down") and whether the service lost its quorum.
	health := func(want map[*lab.Node]string, lost bool) func(lab.Snapshot) error {
		return func(st lab.Snapshot) error {
			web, ok := st.Services["web"]
			if !ok {
				return fmt.Errorf("no service web")
			}
			for n, w := range want {
				if got := web.Servers[addr[n.Name]].State(); got != w {
					return fmt.Errorf("%s is %s, want %s", n.Name, got, w)
				}
			}
			if web.QuorumLost != lost {
				return fmt.Errorf("quorum_lost %t, want %t", web.QuorumLost, lost)
			}
			return nil
		}
	}
	// weights checks the kernel's weights, which every director has.
	weights := func(table lab.IPVSTable, want map[string]int) {
		t.Helper()
		got := table.Weights(svc)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("weights of %s: %v, want %v\n%s", svc, got, want, table)
		}
	}
	allUp := map[*lab.Node]string{rs1: "up", rs2: "up", rs3: "up"}
	_, table := c.WaitHealthTables(formTimeout, leader, "the first agreed health of every server", health(allUp, false))
	weights(table, map[string]int{addr["rs1"]: 1, addr["rs2"]: 1, addr["rs3"]: 1})
	cl := startClient(t, c, webAddr)
	cl.WaitAnswer(t, time.Now(), 10*time.Second, "the client's first answer", func(string) bool { return true })
	t.Logf("serving with checks after %s", time.Since(start).Round(time.Millisecond))

	// 1. Drain a server while a kept-alive connection to it is open.
	ka, err := lab.DialKeepAlive(c.Client, webAddr, requestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	who, err := ka.Get()
	if err != nil {
		t.Fatal(err)
	}
	target := addr[who]
	if target == "" {
		t.Fatalf("the kept-alive connection was answered by %q, not a real server", who)
	}
	var follower *lab.Director
	for _, d := range c.Dirs {
		if d != leader {
			follower = d
			break
		}
	}
	td := time.Now()
	drain := follower.StartCtl(2*time.Minute, "server", "drain", "web", target, "--wait", "--timeout", "60s", "--poll-interval", "200ms")
	_, table = c.WaitHealthTables(settleTimeout, leader, who+" drained", func(st lab.Snapshot) error {
		if a := st.Services["web"].Servers[target].Admin; a != "drained" {
			return fmt.Errorf("%s is %s", who, a)
		}
		return nil
	})
	drainedAt := time.Now()
	want := map[string]int{addr["rs1"]: 1, addr["rs2"]: 1, addr["rs3"]: 1}
	want[target] = 0
	weights(table, want)
	others := []string{}
	for _, rs := range c.Servers {
		if rs.Name != who {
			others = append(others, rs.Name)
		}
	}
	// The kept-alive connection is still answered by the drained server,
	// request after request, while the client's new connections go to
	// the others.
	for i := range 5 {
		cl.WaitAnswer(t, time.Now().Add(200*time.Millisecond), 10*time.Second, "the client's next answer", func(string) bool { return true })
		got, err := ka.Get()
		if err != nil {
			t.Fatalf("request %d on the kept-alive connection to the drained %s: %v", i+1, who, err)
		}
		if got != who {
			t.Fatalf("request %d on the kept-alive connection was answered by %s, want the drained %s", i+1, got, who)
		}
		select {
		case <-drain.Done():
			out, err := drain.Result()
			t.Fatalf("drain --wait returned while a connection to %s was open: %v\n%s", who, err, out)
		default:
		}
	}
	quiet := afterQuiet(t, cl, drainedAt)
	onlyFrom(t, cl, drainedAt, quiet, others...)
	// drain --wait waits on this counter: the kept-alive connection must
	// be in it.
	if n, ok, err := leader.ReadConns(webAddr.String(), target); err != nil || !ok || n.Active < 1 {
		t.Fatalf("%s's kernel counts %+v connections to the drained %s (found %t, %v), want the kept-alive one active", leader.ID, n, who, ok, err)
	}
	closed := time.Now()
	if err := ka.Close(); err != nil {
		t.Fatal(err)
	}
	// While drain --wait waits, the leader's counters go to the log.
	last := lab.Conns{Active: -1}
	for done := false; !done; {
		select {
		case <-drain.Done():
			done = true
		case <-time.After(500 * time.Millisecond):
			n, _, err := leader.ReadConns(webAddr.String(), target)
			if err != nil || n == last {
				continue
			}
			last = n
			t.Logf("%s after the close: %s's kernel has %d active, %d inactive connections to %s", time.Since(closed).Round(time.Millisecond), leader.ID, n.Active, n.Inactive, who)
		}
	}
	t.Logf("drain --wait said on stderr:\n%s", drain.Stderr())
	out, err := drain.Result()
	if err != nil {
		t.Fatalf("drain --wait after the connection closed: %v", err)
	}
	if !strings.Contains(out, "has no active connection") {
		t.Fatalf("drain --wait said %q", out)
	}
	noFailures(t, cl, td, "requests during the drain")
	t.Logf("FIGURE health-drain: %s drained (ipvsadm confirmed weight 0 on every director %s after the command started); its kept-alive connection answered 6 times by it, new connections to %v; drain --wait returned %s after the connection closed (poll interval 200 ms): %s",
		who, drainedAt.Sub(td).Round(time.Millisecond), others, drain.Ended.Sub(closed).Round(time.Millisecond), strings.TrimSpace(out))

	follower.MustCtl("server", "enable", "web", target)
	_, table = c.WaitHealthTables(settleTimeout, leader, who+" enabled", func(st lab.Snapshot) error {
		if a := st.Services["web"].Servers[target].Admin; a != "enabled" {
			return fmt.Errorf("%s is %s", who, a)
		}
		return nil
	})
	weights(table, map[string]int{addr["rs1"]: 1, addr["rs2"]: 1, addr["rs3"]: 1})

	// 2. One listener stops.
	t0 := time.Now()
	if err := lab.SetListening(rs1, false); err != nil {
		t.Fatal(err)
	}
	_, table = c.WaitHealthTables(settleTimeout, leader, "rs1 down", health(map[*lab.Node]string{rs1: "down", rs2: "up", rs3: "up"}, false))
	agreed := time.Since(t0)
	weights(table, map[string]int{addr["rs1"]: 0, addr["rs2"]: 1, addr["rs3"]: 1})
	t.Logf("server ls web:\n%s", leader.MustCtl("server", "ls", "web"))
	quiet = afterQuiet(t, cl, t0)
	reached := lastFailure(t, cl, t0, quiet, stoppedListener...)
	detect, from := time.Duration(0), t0
	if !reached.At.IsZero() {
		detect = reached.At.Sub(t0)
		from = reached.At.Add(time.Nanosecond)
	}
	onlyFrom(t, cl, from, quiet, "rs2", "rs3")
	t.Logf("FIGURE health-detect: rs1's listener stopped; the last request to reach it was sent %s after the stop (bound interval %s × fall %d + 1 s = %s: %s); ipvsadm confirmed weight 0 on every director %s after the stop",
		detect.Round(time.Millisecond), checkInterval, checkFall, detectBound, metOrMissed(detect, detectBound), agreed.Round(time.Millisecond))
	if detect > detectLimit {
		t.Fatalf("requests reached the stopped rs1 until %s after the stop, beyond %s even with the emulation margin", detect, detectLimit)
	}

	// 3. Every listener stops: the sorry server answers.
	t1 := time.Now()
	for _, n := range []*lab.Node{rs2, rs3} {
		if err := lab.SetListening(n, false); err != nil {
			t.Fatal(err)
		}
	}
	_, table = c.WaitHealthTables(settleTimeout, leader, "every server down, the sorry server in",
		health(map[*lab.Node]string{rs1: "down", rs2: "down", rs3: "down"}, true))
	agreed = time.Since(t1)
	weights(table, map[string]int{addr["rs1"]: 0, addr["rs2"]: 0, addr["rs3"]: 0, sorryAddr: 1})
	first := cl.WaitAnswer(t, t1, settleTimeout, "the sorry server's answer", func(who string) bool { return who == "sorry" })
	quiet = afterQuiet(t, cl, t1)
	reached = lastFailure(t, cl, t1, quiet, stoppedListener...)
	from = first.At
	if reached.At.After(from) {
		from = reached.At.Add(time.Nanosecond)
	}
	onlyFrom(t, cl, from, quiet, "sorry")
	t.Logf("FIGURE health-sorry: every listener stopped; the sorry server answered %s after the stop, and every request from %s; ipvsadm confirmed the sorry server alone on every director %s after the stop",
		first.At.Sub(t1).Round(time.Millisecond), from.Sub(t1).Round(time.Millisecond), agreed.Round(time.Millisecond))

	// 4. They listen again: traffic returns to all three.
	t2 := time.Now()
	for _, n := range c.Servers {
		if err := lab.SetListening(n, true); err != nil {
			t.Fatal(err)
		}
	}
	_, table = c.WaitHealthTables(settleTimeout, leader, "every server up again", health(allUp, false))
	agreed = time.Since(t2)
	weights(table, map[string]int{addr["rs1"]: 1, addr["rs2"]: 1, addr["rs3"]: 1})
	back := cl.WaitAnswer(t, t2, settleTimeout, "a real server's answer", func(who string) bool { return who != "sorry" })
	// Answers from all three, none from the sorry server, once every
	// kernel has them back.
	t3 := time.Now()
	seen := map[string]bool{}
	lab.Poll(t, 10*time.Second, 20*time.Millisecond, "answers from rs1, rs2 and rs3", func() (bool, error) {
		for _, s := range cl.Since(t3) {
			seen[s.Who] = true
		}
		return seen["rs1"] && seen["rs2"] && seen["rs3"], nil
	})
	quiet = afterQuiet(t, cl, t3)
	onlyFrom(t, cl, t3, quiet, "rs1", "rs2", "rs3")
	noFailures(t, cl, t2, "requests while the servers came back")
	t.Logf("FIGURE health-restore: listeners back; a real server answered %s after the restart, ipvsadm confirmed all three at weight 1 on every director %s after the restart (rise %d)",
		back.At.Sub(t2).Round(time.Millisecond), agreed.Round(time.Millisecond), checkRise)

	t.Logf("scenario took %s", time.Since(start).Round(time.Millisecond))
}

// quietWindow is how long the client's requests must all be answered
// before a step's traffic counts as settled.
const quietWindow = time.Second

// afterQuiet waits until the client has a quietWindow of answered
// requests after t0 with no failure in it, and returns the end of that
// window: requests sent before it are the step's to judge.
func afterQuiet(t *testing.T, cl *lab.Client, t0 time.Time) time.Time {
	t.Helper()
	var end time.Time
	lab.Poll(t, settleTimeout, 50*time.Millisecond, "a quiet second of answers", func() (bool, error) {
		ss := cl.Since(t0)
		var from time.Time
		for _, s := range ss {
			if !s.OK() {
				from = time.Time{}
				continue
			}
			if from.IsZero() {
				from = s.At
			}
			if s.At.Sub(from) >= quietWindow {
				end = s.At
				return true, nil
			}
		}
		return false, nil
	})
	return end
}

// stoppedListener are the errors of a request that reached a real server
// whose listener is stopped: refused, or reset if it sat in the backlog of
// the listener as it closed.
var stoppedListener = []string{"connection refused", "connection reset by peer"}

// lastFailure returns the last failed request sent in [t0, until), which
// must all have failed with an error containing one of reasons; zero if
// none failed.
func lastFailure(t *testing.T, cl *lab.Client, t0, until time.Time, reasons ...string) lab.Sample {
	t.Helper()
	var last lab.Sample
	n := 0
	for _, s := range cl.Since(t0) {
		if !s.At.Before(until) {
			break
		}
		if s.OK() {
			continue
		}
		ok := false
		for _, r := range reasons {
			ok = ok || strings.Contains(s.Err, r)
		}
		if !ok {
			t.Fatalf("a request sent %s after the step failed with %q, want only %q", s.At.Sub(t0).Round(time.Millisecond), s.Err, reasons)
		}
		last = s
		n++
	}
	t.Logf("%d requests failed with %q", n, reasons)
	return last
}

// onlyFrom fails t unless every request sent in [from, until) was answered
// by one of who, and there was at least one.
func onlyFrom(t *testing.T, cl *lab.Client, from, until time.Time, who ...string) {
	t.Helper()
	per := map[string]int{}
	for _, s := range cl.Since(from) {
		if !s.At.Before(until) {
			break
		}
		if !s.OK() {
			t.Fatalf("a request sent at %s failed: %s (want answers from %v only)", s.At.Format("15:04:05.000"), s.Err, who)
		}
		ok := false
		for _, w := range who {
			ok = ok || s.Who == w
		}
		if !ok {
			t.Fatalf("a request sent at %s was answered by %s, want %v only", s.At.Format("15:04:05.000"), s.Who, who)
		}
		per[s.Who]++
	}
	if len(per) == 0 {
		t.Fatalf("no request sent between %s and %s", from.Format("15:04:05.000"), until.Format("15:04:05.000"))
	}
	t.Logf("answers from %s to %s: %v", from.Format("15:04:05.000"), until.Format("15:04:05.000"), per)
}

func metOrMissed(d, bound time.Duration) string {
	if d <= bound {
		return "met"
	}
	return "missed"
}
