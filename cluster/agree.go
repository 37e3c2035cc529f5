package cluster

import (
	"cmp"
	"slices"
)

// Health states a director reports for a real server, and the committed
// states the agreement rule compares them with. They match probes.Health
// and the FSM's health states; cluster imports neither probes nor a
// health type of its own, so they are spelled out here.
const (
	HealthUp      = "up"
	HealthDown    = "down"
	HealthUnknown = "unknown"
)

// HealthKey names one real server of one service: the unit health is
// committed for.
type HealthKey struct {
	Service string `json:"s"`
	Server  string `json:"r"` // fsm.ServerKey
}

// HealthTransition is a health change the directors agree on: the leader
// proposes it. Views holds every reporting director's view at the time,
// for `clusterctl server ls`.
type HealthTransition struct {
	Key   HealthKey
	State string
	Views map[string]string
}

// Voter is one director's say in the agreement rule.
type Voter struct {
	// Views are its current views by server; a missing key or
	// HealthUnknown is no vote.
	Views map[HealthKey]string
	// CutOff says its own ping-node score shows it cut off from the
	// network, so its views describe its own isolation, not the servers.
	CutOff bool
}

// Agree is the agreement rule. For every server in committed (the states
// in the replicated state, HealthUp for a server never checked), it counts
// the votes of the directors that are not cut off and report up or down
// for it. It returns a transition only when a strict majority of those
// votes names one state and that state differs from the committed one.
// Unknown and cut-off directors do not vote, and a tie changes nothing, so
// one director whose own network fails cannot take servers down. The
// result is sorted by key, so proposals are reproducible.
//
// Agree is pure: the leader calls it with what gossip delivered.
func Agree(committed map[HealthKey]string, voters map[string]Voter) []HealthTransition {
	var out []HealthTransition
	for key, cur := range committed {
		up, down := 0, 0
		var views map[string]string
		for id, v := range voters {
			s, ok := v.Views[key]
			if !ok {
				continue
			}
			if views == nil {
				views = map[string]string{}
			}
			views[id] = s
			if v.CutOff {
				continue
			}
			switch s {
			case HealthUp:
				up++
			case HealthDown:
				down++
			}
		}
		n := up + down
		next := ""
		switch {
		case 2*up > n:
			next = HealthUp
		case 2*down > n:
			next = HealthDown
		}
		if next == "" || next == cur {
			continue
		}
		out = append(out, HealthTransition{Key: key, State: next, Views: views})
	}
	slices.SortFunc(out, func(a, b HealthTransition) int {
		return cmp.Or(cmp.Compare(a.Key.Service, b.Key.Service), cmp.Compare(a.Key.Server, b.Key.Server))
	})
	return out
}

// CutOff reports whether a director with ping-node score s counts as cut
// off for the agreement rule: it probes ping nodes and reaches none. A
// director without ping nodes (Max 0) is never cut off.
func (s Score) CutOff() bool { return s.Max > 0 && s.Value == 0 }
