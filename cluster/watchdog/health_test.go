package watchdog_test

import (
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/cluster/watchdog"
)

func TestHealthOK(t *testing.T) {
	now := t0
	b := watchdog.Bounds{LoopStall: 2 * time.Second, VIPOpStuck: 5 * time.Second}
	for _, tc := range []struct {
		name   string
		h      watchdog.Health
		b      watchdog.Bounds
		ok     bool
		reason []string // substrings that must all appear
	}{
		{
			name: "healthy",
			h:    watchdog.Health{LoopBeat: now.Add(-time.Second), LeaseOK: true},
			b:    b, ok: true,
		},
		{
			name: "beat exactly at the bound",
			h:    watchdog.Health{LoopBeat: now.Add(-2 * time.Second), LeaseOK: true},
			b:    b, ok: true,
		},
		{
			name: "beat in the future (clock step)",
			h:    watchdog.Health{LoopBeat: now.Add(time.Second), LeaseOK: true},
			b:    b, ok: true,
		},
		{
			name:   "loop stalled",
			h:      watchdog.Health{LoopBeat: now.Add(-2*time.Second - time.Millisecond), LeaseOK: true},
			b:      b,
			reason: []string{"control loop silent for 2.001s (bound 2s)"},
		},
		{
			name:   "loop never beat",
			h:      watchdog.Health{LeaseOK: true},
			b:      b,
			reason: []string{"control loop has not beaten yet"},
		},
		{
			name:   "lease lost",
			h:      watchdog.Health{LoopBeat: now, LeaseOK: false},
			b:      b,
			reason: []string{"raft leader lease not held"},
		},
		{
			name: "VIP operation in flight within bound",
			h:    watchdog.Health{LoopBeat: now, LeaseOK: true, VIPOpsSince: now.Add(-5 * time.Second)},
			b:    b, ok: true,
		},
		{
			name:   "VIP operation stuck",
			h:      watchdog.Health{LoopBeat: now, LeaseOK: true, VIPOpsSince: now.Add(-6 * time.Second)},
			b:      b,
			reason: []string{"VIP operation in flight for 6s (bound 5s)"},
		},
		{
			name:   "everything wrong at once",
			h:      watchdog.Health{LoopBeat: now.Add(-time.Minute), VIPOpsSince: now.Add(-time.Minute)},
			b:      b,
			reason: []string{"control loop silent", "lease not held", "VIP operation in flight"},
		},
		{
			name:   "zero bounds fail closed",
			h:      watchdog.Health{LoopBeat: now, LeaseOK: true},
			b:      watchdog.Bounds{},
			reason: []string{"loop stall bound 0s is not positive", "VIP operation bound 0s is not positive"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := tc.h.OK(now, tc.b)
			if ok != tc.ok {
				t.Fatalf("OK = %v (%q), want %v", ok, reason, tc.ok)
			}
			if ok && reason != "" {
				t.Errorf("healthy with reason %q", reason)
			}
			for _, want := range tc.reason {
				if !strings.Contains(reason, want) {
					t.Errorf("reason %q lacks %q", reason, want)
				}
			}
		})
	}
}

func TestBoundsValidate(t *testing.T) {
	if err := (watchdog.Bounds{LoopStall: time.Second, VIPOpStuck: time.Second}).Validate(); err != nil {
		t.Fatal(err)
	}
	err := (watchdog.Bounds{VIPOpStuck: -time.Second}).Validate()
	if err == nil || !strings.Contains(err.Error(), "bounds.loop_stall") || !strings.Contains(err.Error(), "bounds.vip_op_stuck") {
		t.Fatalf("Validate = %v, want both fields named", err)
	}
}
