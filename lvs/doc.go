// Package lvs keeps a director's kernel IPVS table converged to the
// replicated state.
//
// It has three parts:
//
//   - DesiredFromState turns an fsm.State into the Desired kernel table:
//     services keyed by identity (ServiceKey), destinations keyed by
//     address and port, in cloudflare/ipvs's vocabulary (ipvs.Service,
//     ipvs.Destination). Desired.Patch converts only the services a
//     commit changed, for the common case of one change in a big table.
//   - A Backend lists the kernel table in one call and applies a batch of
//     operations in one call. Kernel talks generic netlink to IPVS and
//     pipelines its requests; DryRun keeps the table in memory for hosts
//     without IPVS; Fake records everything for tests.
//   - A Reconciler diffs Desired against the table it read (or, between
//     resyncs, against its cached view; for a patched table, only the
//     patched services) and applies only the difference.
//
// A director's loop, in outline:
//
//	d, err := lvs.DesiredFromState(state)      // at start, after VIP changes or a restore
//	d, err = d.Patch(state, "web")             // after a change to service "web" or its servers
//	res, err := reconciler.Reconcile(ctx, d)   // after each of those, and at least every resync interval
//
// # Which kernel services are Directorate's
//
// The reconciler never flushes and never touches a service it does not
// manage. A kernel service is managed when any of these holds:
//
//  1. its identity is in the desired table;
//  2. it was in the last desired table this reconciler applied, or this
//     reconciler created it in a batch that failed (an in-memory record,
//     pruned on every full read);
//  3. it is a TCP, UDP or SCTP service on the address of a VIP in the
//     replicated state: a VIP's address belongs to Directorate alone, so
//     a service on it that is no longer configured (for example one
//     deleted while this director was down) is stale and is removed;
//  4. it is a firewall-mark service whose mark a service in the
//     replicated state uses (in either address family);
//  5. its address lies in Options.OwnedPrefixes or its mark in
//     Options.OwnedFWMarks, which an operator sets to declare whole ranges
//     Directorate's.
//
// Everything else is foreign and survives every reconcile. The rule's one
// gap: after a restart, a service deleted from the configuration while
// the director was down is left in the kernel if its VIP was deleted too
// (or its firewall mark is no longer used) and no owned range covers it.
// Declaring OwnedPrefixes and OwnedFWMarks closes that gap.
//
// A service the state holds but lvs cannot express (Desired.Held) is left
// exactly as the kernel has it: neither created, changed nor deleted.
//
// # Admin state, health, quorum and sorry servers
//
// Each real server's destination follows from, in this order (the first
// that applies wins, so admin state always beats health):
//
//  1. admin disabled: no destination;
//  2. admin drained: weight 0;
//  3. health down (committed by the directors' agreement, fsm.Health)
//     and the service's down action is remove: no destination;
//  4. health down, down action quiesce (the default): weight 0;
//  5. otherwise its configured weight.
//
// A server never checked, or not checked, counts as up. Weight 0 keeps
// the destination, so the kernel keeps forwarding established
// connections to it while sending it no new ones.
//
// # Removing a destination
//
// A destination that leaves a service that stays (rules 1 and 3, a
// server removed from the state, a sorry server leaving) is retired, not
// deleted at once: the Reconciler sets its weight to 0 and deletes it at
// the first Reconcile, at least RetireRecheck later, at which the kernel
// counts no active connection to it (for UDP and firewall-mark services,
// no connection at all), or once it has been at weight 0 for
// Options.RemoveGrace. Deleting it at once would cut the connections still using it,
// even one whose handshake the scheduler had just sent there. While any
// destination is retiring, Result.Recheck tells the caller when to
// reconcile again. A retiring destination that is desired again gets its
// weight back; Report lists the others as Retiring, which leaves it in
// sync. A service that is removed goes at once, destinations and all.
//
// While a service with a sorry server has lost its quorum
// (fsm.Service.QuorumUp, maintained by Apply with hysteresis), every real
// server's destination gets weight 0 and the sorry server is added with
// weight 1, so new connections go to the sorry server and established
// ones finish. When the quorum is regained the sorry server's destination
// is retired and the weights return. A service with a quorum but no sorry
// server keeps its table as rules 1-5 make it: only the quorum hooks
// react.
//
// Reconciler.ReadService reads one service's destinations with the
// kernel's active and inactive connection counters, which is what
// `clusterctl server drain --wait` polls.
package lvs
