// Package probes watches the network from a director: real-server health
// checks, and the ping nodes, Heartbeat's `ping`, `ping_group` and
// ipfail. It imports no other project package: it emits results, and
// clusterd carries them to gossip and to raft.
//
// # Health checks
//
// A CheckSpec is one check of one target: its kind (tcp, http, https,
// dns, exec or none), its timing (Interval, Timeout at most Interval,
// Jitter less than Interval, Rise, Fall) and the kind's own fields.
// Validate names the offending field in the replicated state's
// snake_case, and rejects fields that do not belong to the kind, such as
// a path on a tcp check, rather than ignoring them.
//
// The checkers make one attempt each and return by the context's
// deadline:
//   - tcp connects and closes;
//   - http and https send one GET on a fresh connection (Path, Host
//     header, ExpectStatus ranges, default 200-399, redirects not
//     followed) and match BodyRegex against the first 1 MiB of the body
//     when set; https verifies the certificate only with TLSVerify,
//     against ServerName, else the Host header's name, else the address;
//   - dns sends one query over UDP and wants NOERROR with a record of the
//     type asked whose data, such as "192.0.2.1", matches DNSExpect when
//     set;
//   - exec runs Command with /bin/sh -c in its own process group, with
//     DIRECTORATE_CHECK_ADDR and DIRECTORATE_CHECK_PORT set, and kills the
//     group at the timeout;
//   - none always passes.
//
// Check connections are closed with a reset, not a FIN (SO_LINGER 0, as
// HAProxy's checks do), so that neither a director checking thousands of
// servers a second nor the servers hold TIME_WAIT sockets for the checks.
// On Linux the TCP check is a non-blocking connect on a bare socket,
// waited on in Go's netpoller, without what net.Dial adds for a
// connection that will carry data.
//
// The Scheduler runs the set of specs given to Set. Equal specs are one
// check, so a server that several services check the same way is checked
// once. A spec that stays in the set keeps its state across Set calls. A
// new check is unknown until Rise successes in a row make it up or Fall
// failures in a row make it down; after that, the same counts move it
// between up and down. OnChange hears every transition.
//
// Scheduling keeps the interval under load: one goroutine holds the
// waiting checks in a heap by due time and hands each due attempt to a
// pool of reused workers (at most MaxInFlight at once), so a slow or
// hanging target never delays another. Run k of a check is due k
// intervals after its first plus a fresh jitter, so lateness never
// accumulates into drift, and a run that ends after a whole interval has
// passed skips the missed slots rather than firing them back to back.
// Checks added together are spread evenly over one interval. The
// scheduler sleeps until a few milliseconds (wakeSlack) after the
// earliest due attempt and then starts every attempt due by then: at
// 10,000 checks a second, waking once per attempt cost more CPU than the
// attempts' own user-space work, and the slack is far below any sane
// interval.
//
// A server that stops answering is down within Fall×Interval + Jitter +
// Timeout (+ the slack) of its last success; one that answers again is
// up within Rise×Interval + Jitter + Timeout (+ the slack). docs/benchmarks.md ("Health checks")
// has the scheduler's measured lateness and CPU use at 10,000 checks a
// second.
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
