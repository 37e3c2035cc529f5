// Package probes watches the network from a director. Today it holds the
// ping nodes, Heartbeat's `ping`, `ping_group` and ipfail; real-server
// health checks will join it. It imports no other project package: it
// emits results, and clusterd carries them to gossip and to raft.
//
// # Ping nodes and the score
//
// PingConfig lists ping nodes (`ping_nodes: [addr]`) and ping groups
// (`ping_groups: {name: [addrs]}`). A PingMonitor sends each address an
// ICMP echo request every Interval through a Pinger (ICMPPinger in
// production) and tracks its Reachability with rise/fall hysteresis. A
// director's Score.Value is the number of reachable ping nodes plus the
// number of reachable groups, a group being reachable while any member
// is: each node and each group counts one, as each was one "node" to
// ipfail. Score.Max is the number of nodes plus groups.
//
// # Timing
//
// With Interval I, Timeout T (at most I), Jitter J, Rise r and Fall f, a
// target that stops answering is unreachable within f×I + J + T, and one
// that answers again is reachable within r×I + J + T
// (PingOptions.UnreachableWithin and ReachableWithin). The defaults
// (1 s, 1 s, 100 ms, 2, 3) give 4.1 s and 3.1 s. A target's first result
// sets its state at once, so a starting director has a ready score within
// I + J + T.
//
// # ipfail
//
// The raft leader feeds its own score and its followers' gossiped scores
// to an Arbiter on every control-loop tick. When a follower's score has
// been strictly higher than the leader's in every observation for
// ArbiterOptions.Hysteresis, the Arbiter names it, and the leader should
// transfer leadership to it. A leader that reaches no ping node while a
// follower reaches one must not keep the VIPs (MustRelease): the Arbiter
// then says so at once, naming the best follower. The hysteresis adds to
// the detection bounds above and to the gossip delay: a leader whose
// uplink dies hands over within UnreachableWithin + gossip + Hysteresis.
//
// # Privileges
//
// ICMPPinger prefers Linux's unprivileged ICMP datagram sockets, allowed
// to the groups in net.ipv4.ping_group_range, and falls back to raw
// sockets, which need CAP_NET_RAW. Either way it opens one socket per
// address family, shared by every target.
package probes
