//go:build linux

package scenarios

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/directorate/directorate/e2e/lab"
)

// TestForwardingMethods is scenario 2: one service per forwarding method,
// each serving the client before and after a leader crash.
//   - DR on 10.0.0.100:80: the VIP on the real servers' lo, arp_ignore=1,
//     arp_announce=2.
//   - TUN on 10.0.0.102:80: IPIP to the same real servers, decapsulated on
//     tunl0.
//   - NAT on 10.0.0.101:80 to two inside real servers on 8080 (a port
//     remap), which route through the floating inside gateway VIP
//     10.1.0.254 that the leader holds next to the others.
func TestForwardingMethods(t *testing.T) {
	c := newCluster(t, lab.Options{NATServers: 2})
	leader := c.WaitLeader(formTimeout)
	addWeb(t, c, leader, "dr")
	leader.MustCtl("vip", "add", "tun", lab.TunVIP.String())
	leader.MustCtl("service", "add", "tun", "--vip", "tun", "--port", "80", "--scheduler", "rr", "--method", "tun")
	for _, rs := range c.Servers {
		leader.MustCtl("server", "add", "tun", netip.AddrPortFrom(rs.IP(), 80).String())
	}
	leader.MustCtl("vip", "add", "gw-in", lab.InsideGatewayVIP.String())
	leader.MustCtl("vip", "add", "nat", lab.NATVIP.String())
	leader.MustCtl("service", "add", "nat", "--vip", "nat", "--port", "80", "--scheduler", "rr", "--method", "nat")
	for _, rs := range c.NATServers {
		leader.MustCtl("server", "add", "nat", netip.AddrPortFrom(rs.IP(), 8080).String())
	}
	vips := []netip.Addr{webVIP, lab.TunVIP.Addr(), lab.NATVIP.Addr(), lab.InsideGatewayVIP.Addr()}
	services := []struct {
		name    string
		addr    netip.AddrPort
		servers []string
	}{
		{"dr", webAddr, names(c.Servers)},
		{"tun", netip.AddrPortFrom(lab.TunVIP.Addr(), 80), names(c.Servers)},
		{"nat", netip.AddrPortFrom(lab.NATVIP.Addr(), 80), names(c.NATServers)},
	}
	check := func(when string) {
		t.Helper()
		for _, s := range services {
			var answers []string
			// The first requests after a failover may still find the
			// client's ARP entry stale; wait for one answer, then
			// require a clean round.
			lab.Poll(t, settleTimeout, 100*time.Millisecond, s.name+" to answer "+when, func() (bool, error) {
				_, err := lab.Get(c.Client, s.addr, time.Second)
				return err == nil, nil
			})
			answers = sequence(t, c, s.addr, 2*len(s.servers))
			t.Logf("%s %s: %v", s.name, when, answers)
			for _, want := range s.servers {
				if !slices.Contains(answers, want) {
					t.Fatalf("%s %s: answers %v miss %s", s.name, when, answers, want)
				}
			}
		}
	}
	leader = c.WaitSettled(settleTimeout, vips...)
	c.WaitTables(tableTimeout, leader, 0)
	check("before failover")

	t0 := time.Now()
	leader.Kill()
	leader.SetLinks(false)
	c.SetAway(leader, true)
	nl := c.WaitSettled(settleTimeout, vips...)
	t.Logf("%s crashed; %s holds every VIP after %s", leader.ID, nl.ID, time.Since(t0).Round(time.Millisecond))
	check("after failover")
}
