// Package vip claims, renews and releases the VIPs the raft leader owns, and
// announces them with gratuitous ARP (IPv4) or unsolicited neighbour
// advertisements (IPv6). It implements DESIGN.md's invariant 3 (at most one
// director holds a VIP) on the kernel side; leadership itself is decided
// elsewhere and handed in by clusterd.
//
// # Kernel-enforced lease
//
// Every VIP is added with a finite valid and preferred lifetime
// (Options.Lifetime, default 3 s) that the leader restarts with Renew every
// RenewInterval (default Lifetime/3 = 1 s) while it holds the raft lease. If
// clusterd crashes or hangs with the host still up, the kernel deletes the VIP
// itself, at most FenceWait(Lifetime) = Lifetime + KernelExpirySlack (4.25 s
// by default) after the last renewal. Lifetimes are whole seconds because the
// kernel counts them so.
//
// The raft lease is far shorter (LeaderLeaseTimeout 100 ms by default): a
// leader that is alive but cut off releases its VIPs actively within that
// lease plus a margin. The lifetime only bounds a clusterd that cannot act.
// It is a trade: a shorter one shortens that bound, but then a healthy
// leader whose renewals stall for Lifetime (a long GC pause, CPU starvation,
// a slow netlink call) loses its VIP, an outage rather than a split brain.
//
// # Fencing
//
// With FenceLease a new leader waits FenceWait(Lifetime) after winning before
// it claims, so no neighbour can see two MACs for a VIP; failover then takes
// election + FenceWait (about 0.45 s + 4.25 s with the default raft profile).
// With FenceNone it claims at once: failover takes an election, and if the
// old leader's host is still up (clusterd crashed or hung, not the machine),
// both hold the VIP for at most FenceWait(Lifetime) minus the election time;
// the new leader's gratuitous ARP and the periodic repeats steer neighbours to
// it. A crashed host holds nothing, so fencing costs only time there.
// FenceWait is safe only if the old leader never renewed after the new
// leader was elected: Renew must follow a fresh lease check.
//
// # Prefix routes
//
// VIPs are added with IFA_F_NOPREFIXROUTE unless Options.PrefixRoute is set:
// the VIP's local route (which makes the kernel accept its traffic) is added
// as always, but no connected route for its prefix. A connected route that
// exists only on the leader, and disappears with the VIP's lifetime, would
// make routing differ between leader and followers; routes the director needs
// come from its own permanent addresses. A VIP in the same IPv4 subnet as an
// existing address becomes a secondary address either way.
//
// # LVS-NAT inside gateway
//
// Real servers behind LVS-NAT route their replies through the director, so
// their default gateway must follow the leader: make it a VIP on the inside
// interface. With real servers in 10.1.0.0/24 on eth1, each director keeps its
// own permanent address there (10.1.0.2, .3, .4, needed anyway for the
// followers' IPVS tables and health checks), and the cluster adds a VIP
// "dip" 10.1.0.1/24 on eth1 that the real servers use as their gateway. It
// moves, with gratuitous ARP, together with the public VIPs.
package vip
