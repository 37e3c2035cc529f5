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
// in the replicated state; "" for a server with none committed yet, so
// the first agreed state is recorded), it counts the views of the
// eligible directors: those in voters that are not cut off. A director
// with no view of the server, or HealthUnknown, has no vote, but it still
// counts as eligible. A transition is returned only when
//
//   - a majority of the eligible directors have a view (up or down), so
//     the first director to finish its checks cannot decide alone, and
//   - a strict majority of those views names one state, and it differs
//     from the committed one.
//
// A tie changes nothing, and so does one director whose own network
// fails: it is outvoted, or, when its ping nodes are unreachable too, not
// counted at all. The result is sorted by key, so proposals are
// reproducible.
//
// Agree is pure: the leader calls it with what gossip delivered.
func Agree(committed map[HealthKey]string, voters map[string]Voter) []HealthTransition {
	eligible := 0
	for _, v := range voters {
		if !v.CutOff {
			eligible++
		}
	}
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
		if 2*n <= eligible {
			continue
		}
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
