package cluster

import (
	"reflect"
	"testing"
)

func TestAgree(t *testing.T) {
	a := HealthKey{Service: "web", Server: "10.0.0.1:80"}
	b := HealthKey{Service: "web", Server: "10.0.0.2:80"}
	v := func(cutOff bool, kv ...any) Voter {
		m := map[HealthKey]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(HealthKey)] = kv[i+1].(string)
		}
		return Voter{Views: m, CutOff: cutOff}
	}
	up, down, unk := HealthUp, HealthDown, HealthUnknown
	for _, tc := range []struct {
		name      string
		committed map[HealthKey]string
		voters    map[string]Voter
		want      []HealthTransition
	}{
		{
			name:      "one director sees everything down, two see it up: nothing changes",
			committed: map[HealthKey]string{a: up, b: up},
			voters: map[string]Voter{
				"d1": v(false, a, down, b, down),
				"d2": v(false, a, up, b, up),
				"d3": v(false, a, up, b, up),
			},
		},
		{
			name:      "two of three see a server down: it goes down, with every view",
			committed: map[HealthKey]string{a: up, b: up},
			voters: map[string]Voter{
				"d1": v(false, a, down, b, up),
				"d2": v(false, a, down, b, up),
				"d3": v(false, a, up, b, up),
			},
			want: []HealthTransition{{Key: a, State: down, Views: map[string]string{"d1": down, "d2": down, "d3": up}}},
		},
		{
			name:      "a majority up brings a down server back",
			committed: map[HealthKey]string{a: down},
			voters: map[string]Voter{
				"d1": v(false, a, up), "d2": v(false, a, up), "d3": v(false, a, down),
			},
			want: []HealthTransition{{Key: a, State: up, Views: map[string]string{"d1": up, "d2": up, "d3": down}}},
		},
		{
			name:      "agreement with the committed state proposes nothing",
			committed: map[HealthKey]string{a: down},
			voters:    map[string]Voter{"d1": v(false, a, down), "d2": v(false, a, down)},
		},
		{
			name:      "a tie changes nothing",
			committed: map[HealthKey]string{a: up},
			voters: map[string]Voter{
				"d1": v(false, a, down), "d2": v(false, a, down), "d3": v(false, a, up), "d4": v(false, a, up),
			},
		},
		{
			name:      "unknown does not vote: two down and one unknown is a majority",
			committed: map[HealthKey]string{a: up},
			voters: map[string]Voter{
				"d1": v(false, a, down), "d2": v(false, a, down), "d3": v(false, a, unk),
			},
			want: []HealthTransition{{Key: a, State: down, Views: map[string]string{"d1": down, "d2": down, "d3": unk}}},
		},
		{
			name:      "the first director to report cannot decide alone",
			committed: map[HealthKey]string{a: ""},
			voters: map[string]Voter{
				"d1": v(false, a, down), "d2": v(false, a, unk), "d3": v(false),
			},
		},
		{
			name:      "nothing committed yet: the first agreed state is recorded",
			committed: map[HealthKey]string{a: ""},
			voters: map[string]Voter{
				"d1": v(false, a, up), "d2": v(false, a, up), "d3": v(false, a, unk),
			},
			want: []HealthTransition{{Key: a, State: up, Views: map[string]string{"d1": up, "d2": up, "d3": unk}}},
		},
		{
			name:      "only unknown views: nothing changes",
			committed: map[HealthKey]string{a: up},
			voters:    map[string]Voter{"d1": v(false, a, unk), "d2": v(false, a, unk)},
		},
		{
			name:      "a cut-off director does not vote, but its view is recorded",
			committed: map[HealthKey]string{a: up},
			voters: map[string]Voter{
				"d1": v(true, a, down), "d2": v(true, a, down), "d3": v(false, a, up),
			},
		},
		{
			name:      "cut-off votes cannot break a tie",
			committed: map[HealthKey]string{a: up},
			voters: map[string]Voter{
				"d1": v(true, a, down), "d2": v(false, a, down), "d3": v(false, a, up),
			},
		},
		{
			name:      "views of servers not in the committed set are ignored",
			committed: map[HealthKey]string{},
			voters:    map[string]Voter{"d1": v(false, a, down), "d2": v(false, a, down)},
		},
		{
			name:      "no voters: nothing changes",
			committed: map[HealthKey]string{a: down},
		},
		{
			name:      "cut-off directors are not eligible: the others decide",
			committed: map[HealthKey]string{a: up},
			voters: map[string]Voter{
				"d1": v(true, a, up), "d2": v(true, a, up), "d3": v(false, a, down),
			},
			want: []HealthTransition{{Key: a, State: down, Views: map[string]string{"d1": up, "d2": up, "d3": down}}},
		},
		{
			name:      "transitions are sorted by key",
			committed: map[HealthKey]string{b: up, a: up},
			voters:    map[string]Voter{"d1": v(false, a, down, b, down)},
			want: []HealthTransition{
				{Key: a, State: down, Views: map[string]string{"d1": down}},
				{Key: b, State: down, Views: map[string]string{"d1": down}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Agree(tc.committed, tc.voters)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Agree:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestScoreCutOff(t *testing.T) {
	for _, tc := range []struct {
		s    Score
		want bool
	}{
		{Score{0, 0}, false}, {Score{0, 2}, true}, {Score{1, 2}, false}, {Score{2, 2}, false},
	} {
		if got := tc.s.CutOff(); got != tc.want {
			t.Errorf("%+v.CutOff() = %v, want %v", tc.s, got, tc.want)
		}
	}
}
