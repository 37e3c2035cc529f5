package probes

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// PeerScore is a follower's ping score as the leader last heard it
// (gossiped node metadata).
type PeerScore struct {
	// ID names the follower; it is what Decision.Target returns.
	ID string
	// Score is the follower's Score.Value. A follower should report only
	// a ready score: an unready one undercounts, so it can only delay a
	// handover to that follower, never cause a wrong one.
	Score int
	// At is when the leader received this score; see ArbiterOptions.MaxAge.
	At time.Time
}

// MustRelease says whether a leader must give up its VIPs at once,
// without waiting for any hysteresis: it reaches none of its ping nodes
// while a follower reaches at least one. A leader whose score is not ready
// or that has no ping nodes configured never must.
func MustRelease(leader Score, bestPeerScore int) bool {
	return leader.Ready && leader.Max > 0 && leader.Value == 0 && bestPeerScore > 0
}

// ArbiterOptions tune an Arbiter.
type ArbiterOptions struct {
	// Hysteresis is how long a follower's score must stay strictly better
	// than the leader's before leadership moves to it. It must be
	// positive: without it two directors whose scores flicker would trade
	// leadership, and the VIPs, on every flicker.
	Hysteresis time.Duration
	// MaxAge ignores follower scores received longer ago than this, so a
	// follower that died or was cut off cannot attract leadership with its
	// last good score. Zero disables the check.
	MaxAge time.Duration
}

// Decision is what the leader should do about its ping scores.
type Decision struct {
	// Target is the follower to transfer leadership to; empty for none.
	Target string
	// Release is true when the leader must release its VIPs now
	// (MustRelease); Target is then the best follower, chosen without
	// waiting for the hysteresis.
	Release bool
	// Reason explains a non-empty decision for the log.
	Reason string
}

// Arbiter is Heartbeat's ipfail for the raft leader: it is fed the
// leader's own score and its followers' scores on every control-loop tick,
// and says when to hand leadership over. A follower whose score has been
// strictly better than the leader's, in every observation, for the
// hysteresis period is a candidate; the best candidate has the highest
// score, then has been better the longest, then has the lowest ID, so
// every run over the same observations decides the same. It is not safe
// for concurrent use; the leader's control loop owns it.
type Arbiter struct {
	opts ArbiterOptions
	// betterSince records when each follower was first seen strictly
	// better than the leader, in the current unbroken run.
	betterSince map[string]time.Time
}

// NewArbiter returns an Arbiter with no observations.
func NewArbiter(opts ArbiterOptions) (*Arbiter, error) {
	var errs []error
	if opts.Hysteresis <= 0 {
		errs = append(errs, fmt.Errorf("hysteresis: %s must be positive", opts.Hysteresis))
	}
	if opts.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("max_age: %s is negative", opts.MaxAge))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ipfail arbiter: %w", err)
	}
	return &Arbiter{opts: opts, betterSince: make(map[string]time.Time)}, nil
}

// Reset forgets all observations. Call it when leadership changes hands:
// a new leader's hysteresis starts from its own observations.
func (a *Arbiter) Reset() { clear(a.betterSince) }

// Observe records the leader's score and its followers' (one entry per
// follower, the leader excluded) at now, and decides. A follower missing
// from peers, or whose score is older than MaxAge, loses its run of being
// better. While the leader's score is not ready nothing is decided and all
// runs restart, since an unready score undercounts.
func (a *Arbiter) Observe(now time.Time, leader Score, peers []PeerScore) Decision {
	if !leader.Ready {
		a.Reset()
		return Decision{}
	}
	var better, waited []candidate
	for _, p := range peers {
		fresh := a.opts.MaxAge == 0 || now.Sub(p.At) <= a.opts.MaxAge
		if !fresh || p.Score <= leader.Value {
			continue
		}
		since, ok := a.betterSince[p.ID]
		if !ok {
			since = now
			a.betterSince[p.ID] = now
		}
		c := candidate{PeerScore: p, since: since}
		better = append(better, c)
		if now.Sub(since) >= a.opts.Hysteresis {
			waited = append(waited, c)
		}
	}
	for id := range a.betterSince {
		if !slices.ContainsFunc(better, func(c candidate) bool { return c.ID == id }) {
			delete(a.betterSince, id)
		}
	}
	if len(better) == 0 {
		return Decision{}
	}
	if best := bestOf(better); MustRelease(leader, best.Score) {
		return Decision{Target: best.ID, Release: true, Reason: fmt.Sprintf(
			"leader reaches none of its %d ping nodes and groups; %s reaches %d", leader.Max, best.ID, best.Score)}
	}
	// The best-scoring follower may not have been better for long enough
	// while a lower-scoring one has: hand over to the best of those.
	if len(waited) == 0 {
		return Decision{}
	}
	c := bestOf(waited)
	return Decision{Target: c.ID, Reason: fmt.Sprintf(
		"%s has reached more ping nodes than the leader (%d > %d) for %s",
		c.ID, c.Score, leader.Value, now.Sub(c.since))}
}

type candidate struct {
	PeerScore
	since time.Time
}

// bestOf picks the highest score, then the follower better for longest,
// then the lowest ID.
func bestOf(cs []candidate) candidate {
	return slices.MinFunc(cs, func(p, q candidate) int {
		if c := cmp.Compare(q.Score, p.Score); c != 0 {
			return c
		}
		if c := p.since.Compare(q.since); c != 0 {
			return c
		}
		return cmp.Compare(p.ID, q.ID)
	})
}
