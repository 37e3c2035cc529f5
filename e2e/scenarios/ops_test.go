//go:build linux

package scenarios

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/directorate/directorate/e2e/lab"
)

// TestIPFail is scenario 7: the leader loses its path to the ping node
// (the gateway drops everything it would send back to the leader) while
// its peers keep theirs. Leadership, and the VIP, move to a director that
// reaches more ping nodes, and the client's traffic keeps flowing.
func TestIPFail(t *testing.T) {
	c, leader, cl := serving(t, lab.Options{Director: lab.DirectorOptions{PingNodes: []netip.Addr{lab.GatewayIP}}})
	t0 := time.Now()
	if err := c.Gateway.Blackhole(leader.IP(), true); err != nil {
		t.Fatal(err)
	}
	var nl *lab.Director
	lab.Poll(t, 60*time.Second, 200*time.Millisecond, "leadership to leave "+leader.ID, func() (bool, error) {
		l, _, ok := c.AgreedLeader()
		if ok && l != leader {
			nl = l
			return true, nil
		}
		return false, nil
	})
	nl = c.WaitSettled(settleTimeout, webVIP)
	if nl == leader {
		t.Fatalf("%s cannot reach the ping node but leads again", leader.ID)
	}
	o := measure(t, cl, t0, "ipfail")
	t.Logf("FIGURE ipfail: %s lost the ping node; %s leads after %s; client-observed outage %s (%d requests failed, %d answered)",
		leader.ID, nl.ID, time.Since(t0).Round(time.Millisecond), o.Duration.Round(time.Millisecond), o.Failed, o.Answered)
}

// TestDrift is scenario 8: `ipvsadm -C` on the leader empties its kernel
// table behind clusterd's back. The periodic resync restores it within
// the resync interval and traffic resumes. The interval is 5 s here rather
// than the default 30 s, to keep the suite short; the bound is the same.
func TestDrift(t *testing.T) {
	const resync = 5 * time.Second
	c, leader, cl := serving(t, lab.Options{Director: lab.DirectorOptions{Resync: resync}})
	t0 := time.Now()
	leader.MustRun("ipvsadm", "-C")
	want := c.WaitTables(tableTimeout, leader, 0)
	restored := time.Since(t0)
	// The margin covers one reconcile of the table, the VM's stalls, and
	// WaitTables itself: each of its rounds runs ipvsadm and clusterctl on
	// every director, seconds under emulation.
	if restored > resync+5*time.Second {
		t.Fatalf("the table was restored after %s, want within the resync interval %s (plus margin)", restored, resync)
	}
	o := measure(t, cl, t0, "drift")
	t.Logf("FIGURE drift: ipvsadm -C on %s; table of %d entries restored after %s; client-observed outage %s (%d requests failed)",
		leader.ID, len(want), restored.Round(time.Millisecond), o.Duration.Round(time.Millisecond), o.Failed)
}

// TestFullRestart is scenario 9: every director stops and starts again.
// The replicated configuration is intact and service resumes.
func TestFullRestart(t *testing.T) {
	c, leader, cl := serving(t, lab.Options{})
	before, err := leader.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for _, d := range c.Dirs {
		d.Kill()
	}
	for _, d := range c.Dirs {
		d.Start()
	}
	leader = c.WaitSettled(settleTimeout+formTimeout, webVIP)
	after, err := leader.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := after.Desired().String(), before.Desired().String(); got != want {
		t.Fatalf("after a full restart the configuration is\n%s\nwant\n%s", got, want)
	}
	if len(after.VIPs) != len(before.VIPs) {
		t.Fatalf("VIPs after restart %v, before %v", after.VIPs, before.VIPs)
	}
	c.WaitTables(tableTimeout, leader, 0)
	o := measure(t, cl, t0, "full restart")
	t.Logf("FIGURE full-restart: configuration intact (index %d -> %d); %s leads; client-observed outage %s (%d requests failed)",
		before.Index, after.Index, leader.ID, o.Duration.Round(time.Millisecond), o.Failed)
}

// TestMembership is scenario 6: directors d4 and d5 join by gossip (auto
// join), d5 is removed, d4 dies and is replaced by d6. A writer commits
// real-server additions throughout; every one clusterctl acknowledged is
// in the state at the end, and no write waited out a lost quorum.
func TestMembership(t *testing.T) {
	opts := lab.DirectorOptions{Extra: "auto_join: true\n"}
	c, leader, cl := serving(t, lab.Options{Directors: 6, Started: 3, Director: opts})
	leader.MustCtl("service", "add", "ledger", "--vip", "web", "--port", "8081", "--method", "dr")

	var (
		mu    sync.Mutex
		acked []string
		slow  []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < 60; i++ {
			select {
			case <-stop:
				return
			default:
			}
			addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(30 + i)}), 8081).String()
			start := time.Now()
			// Retry through any director until acknowledged: a write
			// refused for want of a leader is not acknowledged.
			ok := false
			for try := 0; !ok; try++ {
				present := c.Present()
				d := present[try%len(present)]
				_, err := d.Ctl("server", "add", "ledger", addr)
				switch {
				case err == nil:
					ok = true
				case time.Since(start) > 20*time.Second:
					mu.Lock()
					slow = append(slow, fmt.Sprintf("%s never acknowledged: %v", addr, err))
					mu.Unlock()
					return
				default:
					time.Sleep(200 * time.Millisecond)
				}
			}
			mu.Lock()
			acked = append(acked, addr)
			if d := time.Since(start); d > 10*time.Second {
				slow = append(slow, fmt.Sprintf("%s acknowledged after %s", addr, d))
			}
			mu.Unlock()
			time.Sleep(300 * time.Millisecond)
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	voters := func(n int) {
		t.Helper()
		lab.Poll(t, formTimeout, 500*time.Millisecond, fmt.Sprintf("%d voters", n), func() (bool, error) {
			l, st, ok := c.AgreedLeader()
			return ok && l != nil && st.Voters == n, nil
		})
	}
	join := func(d *lab.Director) {
		t.Helper()
		d.Rewrite(lab.DirectorOptions{Extra: opts.Extra, Heartbeat: emulatedHeartbeat, Election: emulatedHeartbeat, Lease: emulatedLease, BootstrapExpect: 0},
			[]string{netip.AddrPortFrom(c.Dirs[0].IP(), lab.GossipPort).String(), netip.AddrPortFrom(c.Dirs[1].IP(), lab.GossipPort).String()})
		d.Start()
	}
	d4, d5, d6 := c.Dirs[3], c.Dirs[4], c.Dirs[5]
	join(d4)
	voters(4)
	join(d5)
	voters(5)
	t.Logf("d4 and d5 joined: 5 voters")

	leader = c.WaitLeader(settleTimeout)
	leader.MustCtl("member", "rm", "d5")
	d5.Kill()
	voters(4)
	t.Logf("d5 removed: 4 voters")

	d4.Kill()
	leader = c.WaitLeader(settleTimeout)
	leader.MustCtl("member", "rm", "d4")
	voters(3)
	join(d6)
	voters(4)
	t.Logf("d4 died and was replaced by d6: 4 voters")

	close(stop)
	wg.Wait()
	leader = c.WaitSettled(settleTimeout, webVIP)
	c.WaitTables(tableTimeout, leader, 0)
	snap, err := leader.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(slow) > 0 {
		t.Fatalf("writes waited out a lost quorum: %v", slow)
	}
	for _, a := range acked {
		if _, ok := snap.Services["ledger"].Servers[a]; !ok {
			t.Fatalf("acknowledged real server %s is missing at the end", a)
		}
	}
	t.Logf("%d acknowledged writes, all present", len(acked))
	cl.WaitAnswer(t, time.Now(), 10*time.Second, "an answer at the end", func(string) bool { return true })
}
