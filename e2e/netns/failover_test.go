package netns

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	e2elab "github.com/directorate/directorate/e2e/lab"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelExpirySlack is how much later than its lifetime the kernel may
// delete an expired address: its address-lifetime worker runs about once a
// second (vip.KernelExpirySlack, restated here because e2e uses only the
// binaries).
const kernelExpirySlack = 1250 * time.Millisecond

// releaseBound is how soon a director that can act must have dropped the
// VIP after it stops being the leader: the lease (100 ms in the default
// profile) plus a generous margin for a loaded two-core machine. The
// scenarios that check it give the VIP a 10 s lifetime, so a VIP that is
// gone within the bound was released, not expired.
const releaseBound = 2 * time.Second

// vipSample is one look at a director's VIP.
type vipSample struct {
	at       time.Time
	present  bool
	validLft int // seconds left, as the kernel reports it
}

// watchVIP samples d's VIP every probeInterval until the returned function
// is called, which returns the samples.
func watchVIP(tb testing.TB, d *director) func() []vipSample {
	stop := make(chan struct{})
	var (
		wg      sync.WaitGroup
		samples []vipSample
	)
	wg.Go(func() {
		t := time.NewTicker(probeInterval)
		defer t.Stop()
		for {
			a, ok, err := d.addr(vipPrefix.Addr())
			if err != nil {
				tb.Errorf("watch %s's VIP: %v", d.id, err)
				return
			}
			samples = append(samples, vipSample{at: time.Now(), present: ok, validLft: a.ValidLft})
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	var once sync.Once
	finish := func() []vipSample {
		once.Do(func() {
			close(stop)
			wg.Wait()
		})
		return samples
	}
	tb.Cleanup(func() { finish() })
	return finish
}

// renewals returns the samples in which the VIP's remaining lifetime went
// up: a renewal.
func renewals(samples []vipSample) []string {
	var out []string
	prev := math.MaxInt
	for _, s := range samples {
		if !s.present {
			prev = math.MaxInt
			continue
		}
		if s.validLft > prev {
			out = append(out, fmt.Sprintf("%s: valid_lft %ds after %ds", s.at.Format("15:04:05.000"), s.validLft, prev))
		}
		prev = s.validLft
	}
	return out
}

// waitVIPGone polls d until its VIP is gone and returns when it went.
func waitVIPGone(tb testing.TB, d *director, timeout time.Duration) time.Time {
	tb.Helper()
	return e2elab.Poll(tb, timeout, probeInterval, d.id+"'s VIP to go", func() (bool, error) {
		_, ok, err := d.addr(vipPrefix.Addr())
		return !ok, err
	})
}

// fenceWait is vip.FenceWait: how long a VIP can outlive its last renewal.
func fenceWait(lifetime time.Duration) time.Duration {
	return lifetime.Round(time.Second) + kernelExpirySlack
}

func spansString(spans []macSpan, t0 time.Time) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, " %s from %+dms to %+dms (%d frames);", s.mac, s.first.Sub(t0).Milliseconds(), s.last.Sub(t0).Milliseconds(), s.frames)
	}
	return strings.TrimSuffix(b.String(), ";")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

// TestLeaderKillMovesVIP kills the leader's clusterd with the default
// settings (fence none): the next leader claims at once and its
// gratuitous ARP steers the client to it while the dead leader's VIP still
// lives out its lifetime. The killed director, restarted, removes its
// stale VIP and follows.
func TestLeaderKillMovesVIP(t *testing.T) {
	const lifetime = 3 * time.Second
	c, leader := newCluster(t, settings{profile: "default", fence: "none", lifetime: lifetime})

	next, failover, t0 := c.killLeader(leader, 15*time.Second)
	t.Logf("failover: SIGKILL of leader %s; %s answered the client %s later", leader.id, next.id, ms(failover))
	if l := c.waitLeader(10 * time.Second); l != next {
		t.Fatalf("the client is answered by %s, but the directors name %s leader", next.id, l.id)
	}
	// The client reaches next because its neighbour table says so: the
	// gratuitous ARP moved it, although the dead leader still answers ARP.
	e2elab.Poll(t, 2*time.Second, probeInterval, "the client's neighbour entry for the VIP to be "+next.id+"'s MAC", func() (bool, error) {
		mac, ok, err := c.client.neighbour(vipPrefix.Addr())
		return ok && mac.String() == next.mac.String(), err
	})
	_, stale, err := leader.addr(vipPrefix.Addr())
	if err != nil {
		t.Fatal(err)
	}

	// Restart the killed director: it must drop any VIP it still holds
	// and follow.
	restarted := time.Now()
	c.start(leader)
	gone := waitVIPGone(t, leader, fenceWait(lifetime)+time.Second)
	if stale {
		t.Logf("the dead leader still held the VIP when restarted %s after the kill; it was gone %s after the restart",
			ms(restarted.Sub(t0)), ms(gone.Sub(restarted)))
	} else {
		t.Logf("the dead leader's VIP had expired before its restart %s after the kill", ms(restarted.Sub(t0)))
	}
	c.waitSettled(next, 30*time.Second)
	mac, ok, err := c.client.neighbour(vipPrefix.Addr())
	if err != nil || !ok || mac.String() != next.mac.String() {
		t.Fatalf("after the old VIP went, the client's neighbour entry for the VIP is %v (ok %t, err %v), want %s's %s", mac, ok, err, next.id, next.mac)
	}
	t.Logf("ARP claims for the VIP since the kill (fence none, so both answer until the old VIP goes):%s",
		spansString(c.probe.arpSpans(t0, time.Now()), t0))
}

// TestFenceLeaseNoTwoMACs kills the leader's clusterd, leaving its
// namespace and link up. Its VIP disappears by the kernel lifetime alone,
// and with fence lease the next leader claims only after that, so no ARP
// sample ever has two MACs answering for the VIP.
func TestFenceLeaseNoTwoMACs(t *testing.T) {
	const lifetime = 3 * time.Second
	c, leader := newCluster(t, settings{profile: "default", fence: "lease", lifetime: lifetime})
	a, ok, err := leader.addr(vipPrefix.Addr())
	if err != nil || !ok {
		t.Fatalf("%s does not hold the VIP (err %v)", leader.id, err)
	}
	if a.ValidLft <= 0 || time.Duration(a.ValidLft)*time.Second > lifetime {
		t.Fatalf("the leader's VIP has valid_lft %ds, want a finite lifetime of at most %s", a.ValidLft, lifetime)
	}

	t0 := time.Now()
	c.kill(leader)
	gone := waitVIPGone(t, leader, fenceWait(lifetime)+2*time.Second)
	// The last renewal came before the kill, so the kernel must have
	// deleted the VIP within fenceWait of it.
	if bound := fenceWait(lifetime) + 250*time.Millisecond; gone.Sub(t0) > bound {
		t.Errorf("the dead leader's VIP went %s after the kill, later than its lifetime allows (%s)", ms(gone.Sub(t0)), ms(bound))
	}
	first := c.probe.waitAnswer(t, t0, fenceWait(lifetime)+10*time.Second, "another director to answer the client",
		func(who string) bool { return who != leader.id })
	next := c.byID(first.who)
	// Take the next leader's whole announcement burst into the sample
	// window: by default three rounds of a gratuitous request and reply.
	end := e2elab.Poll(t, 5*time.Second, probeInterval, next.id+"'s announcement burst", func() (bool, error) {
		return c.probe.announcements(next.mac.String(), t0) >= 6, nil
	})
	t.Logf("fence lease: SIGKILL of leader %s; its VIP was gone by its lifetime %s later (valid_lft was %ds); %s answered the client %s after the kill",
		leader.id, ms(gone.Sub(t0)), a.ValidLft, next.id, ms(first.at.Sub(t0)))

	spans := c.probe.arpSpans(t0.Add(-time.Second), end)
	t.Logf("ARP claims for the VIP around the kill:%s", spansString(spans, t0))
	if twice := c.probe.twoMACSamples(t0.Add(-time.Second), end); len(twice) > 0 {
		t.Errorf("with fence lease, %d ARP samples had two MACs answering for the VIP: %v", len(twice), twice)
	}
	for i := 1; i < len(spans); i++ {
		if !spans[i-1].last.Before(spans[i].first) {
			t.Errorf("with fence lease, %s and %s both claimed the VIP between %+dms and %+dms",
				spans[i-1].mac, spans[i].mac, spans[i].first.Sub(t0).Milliseconds(), spans[i-1].last.Sub(t0).Milliseconds())
		}
	}
	if len(spans) == 2 {
		t.Logf("ARP blackout (last frame from the old MAC to the first from the new): %s", ms(spans[1].first.Sub(spans[0].last)))
	}
	if n := c.probe.answeredBy(first.at, end)[leader.id]; n > 0 {
		t.Errorf("the dead leader answered the client %d times after %s did", n, next.id)
	}
	if l := c.waitLeader(10 * time.Second); l != next {
		t.Fatalf("the client is answered by %s, but the directors name %s leader", next.id, l.id)
	}
}

// TestStoppedLeaderReleasesOnResume SIGSTOPs the leader's clusterd: the
// next leader takes the VIP over, and the stopped one, resumed while its
// VIP still has lifetime left, must release it at once rather than renew
// or announce it.
func TestStoppedLeaderReleasesOnResume(t *testing.T) {
	// A long lifetime keeps the stopped leader's VIP alive until it
	// resumes, so its disappearance shows a release, not an expiry.
	const lifetime = 10 * time.Second
	// A slow announcement burst (three rounds 2 s apart) makes sure the
	// leader is stopped in the middle of it, as a leader that hangs soon
	// after winning would be: a round falls due while it is stopped.
	c, leader := newCluster(t, settings{profile: "default", fence: "none", lifetime: lifetime, burstInterval: 2 * time.Second})

	stopWatch := watchVIP(t, leader)
	t0 := time.Now()
	c.signal(leader, syscall.SIGSTOP)
	// Each round is a gratuitous request and reply.
	if n := c.probe.announcements(leader.mac.String(), time.Time{}); n >= 6 {
		t.Fatalf("%s had finished its announcement burst (%d frames) before it was stopped: the scenario needs a slower burst", leader.id, n)
	}
	leader.setAway(true)
	first := c.probe.waitAnswer(t, t0, 15*time.Second, "another director to answer the client",
		func(who string) bool { return who != leader.id })
	next := c.byID(first.who)
	t.Logf("failover: SIGSTOP of leader %s; %s answered the client %s later", leader.id, next.id, ms(first.at.Sub(t0)))
	if l := c.waitLeader(10 * time.Second); l != next {
		t.Fatalf("the client is answered by %s, but the directors name %s leader", next.id, l.id)
	}
	// Stay stopped until a renewal is overdue (renewals come every third
	// of the lifetime), so the resumed leader finds its renew tick
	// pending: it must check its lease and step down, not renew. Enough
	// lifetime is left that an expiry cannot pass for a release.
	const overdue = 5
	var left int
	e2elab.Poll(t, lifetime, probeInterval, fmt.Sprintf("the stopped leader's VIP to have at most %ds left", overdue), func() (bool, error) {
		a, ok, err := leader.addr(vipPrefix.Addr())
		if err == nil && !ok {
			err = fmt.Errorf("the stopped leader's VIP went before it resumed: the scenario needs a longer lifetime")
		}
		left = a.ValidLft
		return left <= overdue, err
	})

	tc := time.Now()
	c.signal(leader, syscall.SIGCONT)
	gone := waitVIPGone(t, leader, fenceWait(lifetime)+time.Second)
	samples := stopWatch()
	t.Logf("SIGCONT after %s stopped, with %ds of VIP lifetime left: the VIP was gone %s later", ms(tc.Sub(t0)), left, ms(gone.Sub(tc)))
	if gone.Sub(tc) > releaseBound {
		t.Errorf("the resumed leader dropped its VIP %s after SIGCONT, want within %s: it did not release it, the kernel expired it\n%s",
			ms(gone.Sub(tc)), releaseBound, leader.logExcerpt("leader", "VIP", "lease"))
	}
	if r := renewals(samples); len(r) > 0 {
		t.Errorf("the stopped or resumed leader renewed its VIP after SIGSTOP: %v\n%s", r, leader.logExcerpt("VIP", "lease"))
	}
	// Its kernel may answer ARP for the VIP until the release, but
	// clusterd must not announce it: a deposed leader's gratuitous ARP
	// steers the client to a MAC about to drop the VIP, and nothing steers
	// it back until the new leader's next periodic announcement.
	if n := c.probe.announcements(leader.mac.String(), tc); n > 0 {
		t.Errorf("the resumed leader sent %d gratuitous ARP frames for the VIP after SIGCONT, although %s leads\n%s",
			n, next.id, leader.logExcerpt("VIP", "leadership"))
	}
	if n := c.probe.answeredBy(first.at, time.Now())[leader.id]; n > 0 {
		t.Logf("the stopped leader still answered the client %d times after %s first did (fence none: both held the VIP)", n, next.id)
	}
	leader.setAway(false)
	c.waitSettled(next, 30*time.Second)
	gap, at := c.probe.longestGap(next.id, tc, time.Now())
	t.Logf("after SIGCONT the client went at most %s without an answer from %s (from %+dms)", ms(gap), next.id, at.Sub(tc).Milliseconds())
}

// TestPartitionedLeaderDropsVIP cuts the leader off at the bridge: it loses
// its lease and must drop the VIP at once, well before the VIP's lifetime
// would, while the others elect a leader that takes the VIP over.
func TestPartitionedLeaderDropsVIP(t *testing.T) {
	// As for SIGSTOP: a VIP gone well within its 10 s lifetime was
	// released.
	const lifetime = 10 * time.Second
	c, leader := newCluster(t, settings{profile: "default", fence: "none", lifetime: lifetime})

	stopWatch := watchVIP(t, leader)
	t0 := time.Now()
	if err := c.lab.setPort(leader.host, false); err != nil {
		t.Fatal(err)
	}
	leader.setAway(true)
	gone := waitVIPGone(t, leader, fenceWait(lifetime)+time.Second)
	first := c.probe.waitAnswer(t, t0, 15*time.Second, "another director to answer the client",
		func(who string) bool { return who != leader.id })
	next := c.byID(first.who)
	samples := stopWatch()
	t.Logf("partition of leader %s: it dropped the VIP %s later; %s answered the client %s after the cut",
		leader.id, ms(gone.Sub(t0)), next.id, ms(first.at.Sub(t0)))
	if gone.Sub(t0) > releaseBound {
		t.Errorf("the partitioned leader dropped its VIP %s after the cut, want within %s (lease plus margin)\n%s",
			ms(gone.Sub(t0)), releaseBound, leader.logExcerpt("leader", "VIP", "lease"))
	}
	if r := renewals(samples); len(r) > 0 {
		t.Errorf("the partitioned leader renewed its VIP after the cut: %v", r)
	}
	if l := c.waitLeader(10 * time.Second); l != next {
		t.Fatalf("the client is answered by %s, but the directors name %s leader", next.id, l.id)
	}

	// Heal: the old leader comes back as a follower without the VIP.
	if err := c.lab.setPort(leader.host, true); err != nil {
		t.Fatal(err)
	}
	leader.setAway(false)
	if healed := c.waitSettled(nil, 30*time.Second); healed != next {
		t.Logf("healing the partition moved leadership from %s to %s", next.id, healed.id)
	}
}

// TestLeaderLosingPingNodeHandsOver is Heartbeat's ipfail: every director
// pings the client's address; the leader's path to it is cut (a blackhole
// route in its namespace) while its peers keep theirs. A leader that
// reaches no ping node while a peer does releases the VIP and hands over.
func TestLeaderLosingPingNodeHandsOver(t *testing.T) {
	c, leader := newCluster(t, settings{profile: "default", fence: "none", lifetime: 3 * time.Second,
		extra: fmt.Sprintf("ping_nodes: [%s]\nping:\n  interval: 100ms\n  hysteresis: 1s\n", clientIP)})
	// Every director must have announced a full score before the cut, or
	// the leader could not know that a peer does better.
	e2elab.Poll(t, 20*time.Second, 100*time.Millisecond, "every director to reach its ping node", func() (bool, error) {
		out, _, err := c.ctl(leader, "member", "ls", "-o", "json")
		return err == nil && strings.Count(out, `"ping_score": 1`) == 3, nil
	})
	blackhole := &netlink.Route{Dst: netlink.NewIPNet(clientIP.AsSlice()), Type: unix.RTN_BLACKHOLE, LinkIndex: 0}
	t0 := time.Now()
	if err := leader.host.nl.RouteAdd(blackhole); err != nil {
		t.Fatalf("cut %s's path to the ping node: %v", leader.id, err)
	}
	gone := waitVIPGone(t, leader, 15*time.Second)
	first := c.probe.waitAnswer(t, t0, 15*time.Second, "another director to answer the client",
		func(who string) bool { return who != leader.id })
	next := c.waitLeader(10 * time.Second)
	if next == leader {
		t.Fatalf("%s still leads without its ping node\n%s", leader.id, leader.logExcerpt("ipfail", "ping"))
	}
	t.Logf("ipfail: %s lost its ping node; it released the VIP %s later, %s leads, and %s answered the client %s after the cut",
		leader.id, ms(gone.Sub(t0)), next.id, first.who, ms(first.at.Sub(t0)))
	if err := leader.host.nl.RouteDel(blackhole); err != nil {
		t.Fatalf("restore %s's path: %v", leader.id, err)
	}
}

// TestPlannedHandover measures `clusterctl leader transfer`: the old leader
// releases, the new one claims after its barrier, and the client's outage
// is the gap between its last answer from the old leader and its first
// from the new one.
func TestPlannedHandover(t *testing.T) {
	c, leader := newCluster(t, settings{profile: "default", fence: "none", lifetime: 3 * time.Second})
	var to *director
	for _, d := range c.dirs {
		if d != leader {
			to = d
			break
		}
	}
	t0 := time.Now()
	c.mustCtl(leader, "leader", "transfer", "--to", to.id)
	first := c.probe.waitAnswer(t, t0, 10*time.Second, to.id+" to answer the client", func(who string) bool { return who == to.id })
	outage, at := c.probe.longestSilence(t0, first.at.Add(time.Second))
	t.Logf("planned handover %s -> %s: the client's longest time without any answer was %s, from +%s; first answer from %s %s after the command",
		leader.id, to.id, ms(outage), ms(at.Sub(t0)), to.id, ms(first.at.Sub(t0)))
	if l := c.waitLeader(10 * time.Second); l != to {
		t.Fatalf("leader after the transfer: %s, want %s", l.id, to.id)
	}
}
