//go:build linux

package scenarios

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directorate/directorate/e2e/lab"
)

// releaseBound is how soon a director that can act must drop the VIP once
// it is no longer the leader: the lease plus a margin for the emulated,
// loaded VM.
const releaseBound = emulatedLease + 2*time.Second

// serving builds a cluster with the DR web service and a client sending a
// request every 20 ms, and returns it settled on its leader.
func serving(t *testing.T, o lab.Options) (*lab.Cluster, *lab.Director, *lab.Client) {
	t.Helper()
	c := newCluster(t, o)
	leader := c.WaitLeader(formTimeout)
	addWeb(t, c, leader, "dr")
	leader = c.WaitSettled(settleTimeout, webVIP)
	c.WaitTables(tableTimeout, leader, 0)
	cl := startClient(t, c, webAddr)
	cl.WaitAnswer(t, time.Now(), 10*time.Second, "the client's first answer", func(string) bool { return true })
	return c, leader, cl
}

// measure waits until traffic flows again after t0 and returns the outage.
func measure(t *testing.T, cl *lab.Client, t0 time.Time, what string) lab.Outage {
	t.Helper()
	var o lab.Outage
	lab.Poll(t, settleTimeout, 100*time.Millisecond, what+": traffic to flow again", func() (bool, error) {
		// Recovered means a second of answers after the last failure.
		var ok bool
		o, ok = cl.OutageSince(t0, time.Now().Add(-requestTimeout))
		return ok && time.Since(t0) > o.Duration+time.Second+requestTimeout, nil
	})
	return o
}

// reboot brings a crashed director back as a reboot would: no VIP, an
// empty IPVS table, its links up and clusterd started.
func reboot(t *testing.T, c *lab.Cluster, d *lab.Director) {
	t.Helper()
	if err := d.DelAddr(webVIP); err != nil {
		t.Fatal(err)
	}
	d.MustRun("ipvsadm", "-C")
	d.SetLinks(true)
	c.SetAway(d, false)
	d.Start()
}

// TestLeaderCrash is scenario 3: the leader's director dies (clusterd
// SIGKILLed and its links cut at once, as a machine that loses power)
// while the client sends a request every 20 ms. Another director takes
// over and serves; the outage is printed. Three rounds, the crashed
// director rebooting in between, so the figure is not a single draw.
func TestLeaderCrash(t *testing.T) {
	c, leader, cl := serving(t, lab.Options{})
	var outages []time.Duration
	for round := 1; round <= 3; round++ {
		t0 := time.Now()
		leader.Kill()
		leader.SetLinks(false)
		c.SetAway(leader, true)
		next := cl.WaitAnswer(t, t0, settleTimeout, "an answer after the crash", func(string) bool { return true })
		o := measure(t, cl, t0, "leader crash")
		nl := c.WaitSettled(settleTimeout, webVIP)
		if nl == leader {
			t.Fatalf("round %d: %s crashed but still leads", round, leader.ID)
		}
		t.Logf("round %d: settled after %s", round, time.Since(t0).Round(time.Millisecond))
		t.Logf("FIGURE leader-crash round %d: %s crashed, %s leads; client-observed outage %s (%d requests failed; first answer after the crash from %s)",
			round, leader.ID, nl.ID, o.Duration.Round(time.Millisecond), o.Failed, next.Who)
		outages = append(outages, o.Duration)
		reboot(t, c, leader)
		leader = c.WaitSettled(settleTimeout, webVIP)
		c.WaitTables(tableTimeout, leader, 0)
		t.Logf("round %d: rebooted and in sync after %s", round, time.Since(t0).Round(time.Millisecond))
	}
	t.Logf("FIGURE leader-crash outages %v", outages)
}

// TestDaemonCrash is scenario 3b: only clusterd dies on the leader; its
// links stay up, and its kernel keeps the VIP and the IPVS table, so it
// goes on forwarding until the VIP's kernel lifetime ends. With fence
// lease the new leader claims only after that, so arping from the client
// never sees two MACs for the VIP, and the kernels never hold it twice.
func TestDaemonCrash(t *testing.T) {
	c, leader, cl := serving(t, lab.Options{Director: lab.DirectorOptions{Fence: "lease"}})
	arp := lab.StartARPWatch(c.Client, webVIP)
	holders := c.WatchHolders(webVIP, 50*time.Millisecond)
	c.AddReport(func() string { return arp.Analyse().String() + "\n" + holders.String() })
	waitARPReply(t, arp)

	t0 := time.Now()
	leader.Kill()
	c.SetAway(leader, true)
	lab.Poll(t, 15*time.Second, 50*time.Millisecond, "the VIP to leave "+leader.ID+" by its kernel lifetime", func() (bool, error) {
		ok, err := leader.HasAddr(webVIP)
		return !ok, err
	})
	gone := time.Since(t0)
	nl := c.WaitSettled(settleTimeout, webVIP)
	o := measure(t, cl, t0, "daemon crash")
	// A few more ARP samples with the new owner settled.
	time.Sleep(500 * time.Millisecond)
	arp.Stop()
	holders.Stop()
	ov := arp.Analyse()
	t.Logf("FIGURE daemon-crash: clusterd on %s killed; its VIP expired after %s; %s leads; client-observed outage %s (%d requests failed); %s; %s",
		leader.ID, gone.Round(time.Millisecond), nl.ID, o.Duration.Round(time.Millisecond), o.Failed, ov, holders)
	if holders.Err != nil {
		t.Fatal(holders.Err)
	}
	if ov.Conflicts > 0 || holders.Max > 1 {
		t.Fatalf("split brain with fence lease: %s; %s", ov, holders)
	}
	if len(ov.MACs) < 2 {
		t.Fatalf("arping saw MACs %v: the VIP never moved as far as the client can tell", ov.MACs)
	}
}

// TestPartition is scenario 4: the leader's links are cut. It drops the
// VIP within its lease, the majority elects a leader that serves the
// client, and after healing the old leader follows. At no sampled moment
// did two directors hold the VIP, and the client saw distinct MACs over
// time.
func TestPartition(t *testing.T) {
	c, leader, cl := serving(t, lab.Options{})
	arp := lab.StartARPWatch(c.Client, webVIP)
	waitARPReply(t, arp)
	holders := c.WatchHolders(webVIP, 50*time.Millisecond)
	c.AddReport(func() string { return arp.Analyse().String() + "\n" + holders.String() })

	t0 := time.Now()
	leader.SetLinks(false)
	c.SetAway(leader, true)
	released := lab.Poll(t, 10*time.Second, 20*time.Millisecond, leader.ID+" to drop the VIP", func() (bool, error) {
		ok, err := leader.HasAddr(webVIP)
		return !ok, err
	})
	if d := released.Sub(t0); d > releaseBound {
		t.Fatalf("the partitioned leader %s dropped the VIP after %s, want within %s (lease %s plus margin)", leader.ID, d, releaseBound, emulatedLease)
	}
	nl := c.WaitSettled(settleTimeout, webVIP)
	o := measure(t, cl, t0, "partition")
	t.Logf("FIGURE partition: %s cut off, dropped the VIP after %s; %s leads; client-observed outage %s (%d requests failed)",
		leader.ID, released.Sub(t0).Round(time.Millisecond), nl.ID, o.Duration.Round(time.Millisecond), o.Failed)

	leader.SetLinks(true)
	c.SetAway(leader, false)
	healed := time.Now()
	c.WaitSettled(settleTimeout, webVIP)
	c.WaitTables(tableTimeout, nl, 0)
	cl.WaitAnswer(t, healed, 10*time.Second, "an answer after healing", func(string) bool { return true })
	time.Sleep(time.Second)
	arp.Stop()
	holders.Stop()
	ov := arp.Analyse()
	t.Logf("after healing: %s; %s", ov, holders)
	if holders.Err != nil {
		t.Fatal(holders.Err)
	}
	if ov.Conflicts > 0 || holders.Max > 1 {
		t.Fatalf("two directors answered for the VIP: %s; %s", ov, holders)
	}
	if len(ov.MACs) < 2 {
		t.Fatalf("arping saw MACs %v, want the old and the new leader's", ov.MACs)
	}
}

// softdogTriggers counts softdog's firings in the kernel log. The VM has
// one softdog, loaded with soft_noboot=1, so a firing is logged rather
// than rebooting the VM.
func softdogTriggers(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("dmesg").CombinedOutput()
	if err != nil {
		t.Fatalf("dmesg: %v: %s", err, out)
	}
	return strings.Count(string(out), "softdog: Triggered - Reboot ignored")
}

// TestHungLeader is scenario 5: the leader's clusterd is SIGSTOPped. The
// watchdog it was petting fires (softdog's message in the kernel log), a
// new leader serves, and when the old one resumes it does not hold the
// VIP. Only d1 opens the VM's one /dev/watchdog; the others get plain
// files, and d1 is made the leader first.
func TestHungLeader(t *testing.T) {
	c, leader, cl := serving(t, lab.Options{Director: lab.DirectorOptions{
		Watchdog:        map[string]string{"d1": "/dev/watchdog", "d2": lab.WatchdogFile, "d3": lab.WatchdogFile},
		WatchdogTimeout: 3 * time.Second,
	}})
	d1 := c.ByID("d1")
	if leader != d1 {
		leader.MustCtl("leader", "transfer", "--to", "d1")
		leader = c.WaitSettled(settleTimeout, webVIP)
		if leader != d1 {
			t.Fatalf("leader transfer to d1 left %s leading", leader.ID)
		}
	}
	// Let d1 arm and pet the watchdog.
	lab.Poll(t, 20*time.Second, 100*time.Millisecond, "d1 to arm the watchdog", func() (bool, error) {
		out, _ := exec.Command("grep", "-c", "watchdog", d1.LogPath()).Output()
		return strings.TrimSpace(string(out)) != "0", nil
	})
	before := softdogTriggers(t)
	holders := c.WatchHolders(webVIP, 50*time.Millisecond)
	c.AddReport(holders.String)

	t0 := time.Now()
	if err := d1.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.SetAway(d1, true)
	nl := c.WaitSettled(settleTimeout, webVIP)
	fired := lab.Poll(t, 30*time.Second, 100*time.Millisecond, "softdog to fire", func() (bool, error) {
		return softdogTriggers(t) > before, nil
	})
	o := measure(t, cl, t0, "hung leader")
	served := cl.WaitAnswer(t, time.Now(), 10*time.Second, "an answer with "+nl.ID+" leading", func(string) bool { return true })
	t.Logf("FIGURE hung-leader: d1 stopped; softdog fired after %s; %s leads; client-observed outage %s (%d requests failed); answered by %s",
		fired.Sub(t0).Round(time.Millisecond), nl.ID, o.Duration.Round(time.Millisecond), o.Failed, served.Who)

	wd, _ := exec.Command("grep", "-i", "watchdog", d1.LogPath()).Output()
	t.Logf("d1's watchdog log:\n%s", wd)

	if err := d1.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	c.SetAway(d1, false)
	lab.Poll(t, releaseBound, 20*time.Millisecond, "the resumed d1 not to hold the VIP", func() (bool, error) {
		ok, err := d1.HasAddr(webVIP)
		return !ok, err
	})
	// And it must not take the VIP back while it catches up.
	time.Sleep(3 * time.Second)
	if ok, err := d1.HasAddr(webVIP); err != nil || ok {
		t.Fatalf("d1 holds the VIP %s after resuming (err %v)", time.Since(resumed), err)
	}
	c.WaitSettled(settleTimeout, webVIP)
	cl.WaitAnswer(t, time.Now(), 10*time.Second, "an answer after d1 resumed", func(string) bool { return true })
	holders.Stop()
	t.Logf("%s", holders)
}

// waitARPReply waits until arping has heard the VIP's holder answer, so a
// fault injected next is seen from before: under emulation arping may take
// seconds to send its first request, and a watch that starts after the
// fault never sees the old holder's MAC.
func waitARPReply(t *testing.T, arp *lab.ARPWatch) {
	t.Helper()
	lab.Poll(t, 15*time.Second, 50*time.Millisecond, "arping to hear the VIP's holder", func() (bool, error) {
		return len(arp.Replies()) > 0, nil
	})
}
