package hooks_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/directorate/directorate/internal/testlog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/directorate/directorate/hooks"
	"github.com/directorate/directorate/hooks/hookstest"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  hooks.Config
		want []string // substrings; none for a valid config
	}{
		{name: "empty", cfg: hooks.Config{}},
		{name: "full", cfg: hooks.Config{OnLeader: []string{"a"}, OnFollower: []string{"b", "c"}, OnStop: []string{"d"}, Timeout: time.Second}},
		{name: "negative timeout", cfg: hooks.Config{Timeout: -time.Second}, want: []string{"hooks.timeout: -1s must be positive"}},
		{name: "empty command", cfg: hooks.Config{OnFollower: []string{"ok", ""}}, want: []string{"hooks.on_follower[1]: empty command"}},
		{name: "blank command", cfg: hooks.Config{OnLeader: []string{" \t\n"}}, want: []string{"hooks.on_leader[0]: empty command"}},
		{name: "NUL", cfg: hooks.Config{OnStop: []string{"echo a\x00b"}}, want: []string{"hooks.on_stop[0]: command contains a NUL byte"}},
		{
			name: "every problem reported",
			cfg:  hooks.Config{Timeout: -1, OnLeader: []string{""}, OnStop: []string{"x", ""}},
			want: []string{"hooks.timeout", "hooks.on_leader[0]", "hooks.on_stop[1]"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := hooks.NewRunner(hooks.Config{OnLeader: []string{""}}, hooks.Options{}); err == nil {
		t.Error("NewRunner accepted an invalid config")
	}
	if got := (hooks.Config{}).EffectiveTimeout(); got != hooks.DefaultTimeout {
		t.Errorf("default timeout %s", got)
	}
}

func TestEventEnv(t *testing.T) {
	ev := hooks.Event{Role: hooks.RoleLeader, Previous: hooks.RoleFollower, Node: "d1", Term: 7, Index: 42, VIPs: []string{"10.0.0.1", "2001:db8::1"}}
	want := []string{
		"DIRECTORATE_ROLE=leader",
		"DIRECTORATE_PREVIOUS_ROLE=follower",
		"DIRECTORATE_NODE=d1",
		"DIRECTORATE_TERM=7",
		"DIRECTORATE_INDEX=42",
		"DIRECTORATE_VIPS=10.0.0.1 2001:db8::1",
		"DIRECTORATE_SERVICE=",
	}
	if got := ev.Env(); !slices.Equal(got, want) {
		t.Fatalf("Env() = %q, want %q", got, want)
	}
}

func TestQuorumHooksRunWithTheService(t *testing.T) {
	r, ex, _ := newFakeRunner(t, hooks.Config{
		OnLeader:         []string{"leader"},
		OnQuorumLost:     []string{"lost"},
		OnQuorumRegained: []string{"regained"},
	}, 0)
	r.Run(context.Background(), hooks.Event{Role: hooks.RoleQuorumLost, Node: "d1", Term: 3, Index: 9, Service: "web"})
	r.Run(context.Background(), hooks.Event{Role: hooks.RoleQuorumRegained, Node: "d1", Term: 3, Index: 12, Service: "web"})
	if got := ex.Commands(); !slices.Equal(got, []string{"lost", "regained"}) {
		t.Fatalf("ran %q, want lost, regained", got)
	}
	calls := ex.Calls()
	for i, want := range []map[string]string{
		{"DIRECTORATE_ROLE": "quorum_lost", "DIRECTORATE_SERVICE": "web", "DIRECTORATE_INDEX": "9"},
		{"DIRECTORATE_ROLE": "quorum_regained", "DIRECTORATE_SERVICE": "web", "DIRECTORATE_INDEX": "12"},
	} {
		for k, v := range want {
			if got, ok := calls[i].Getenv(k); !ok || got != v {
				t.Errorf("call %d: %s = %q (set %v), want %q", i, k, got, ok, v)
			}
		}
	}
	if err := (hooks.Config{OnQuorumLost: []string{" "}}).Validate(); err == nil || !strings.Contains(err.Error(), "hooks.on_quorum_lost[0]") {
		t.Errorf("empty quorum hook: %v", err)
	}
}

func newFakeRunner(t *testing.T, cfg hooks.Config, maxPending int) (*hooks.Runner, *hookstest.Executor, *testlog.Sink) {
	t.Helper()
	ex := hookstest.NewExecutor()
	log, tl := newTestLogger(t)
	r, err := hooks.NewRunner(cfg, hooks.Options{
		Executor:   ex,
		Logger:     log,
		MaxPending: maxPending,
		Environ:    func() []string { return []string{"PATH=/usr/bin:/bin", "INHERITED=yes", "DIRECTORATE_ROLE=stale"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, ex, tl
}

func leaderEvent(term uint64) hooks.Event {
	return hooks.Event{Role: hooks.RoleLeader, Previous: hooks.RoleFollower, Node: "d1", Term: term, Index: 100 + term, VIPs: []string{"10.0.0.1"}}
}

func followerEvent(term uint64) hooks.Event {
	return hooks.Event{Role: hooks.RoleFollower, Previous: hooks.RoleLeader, Node: "d1", Term: term, Index: 100 + term}
}

func TestRunSequentialWithEnvironment(t *testing.T) {
	r, ex, _ := newFakeRunner(t, hooks.Config{
		OnLeader:   []string{"a", "b", "c"},
		OnFollower: []string{"f"},
		Timeout:    3 * time.Second,
	}, 0)
	r.Run(context.Background(), leaderEvent(5))
	if got := ex.Commands(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("ran %q, want a, b, c", got)
	}
	if ex.MaxConcurrent() != 1 {
		t.Fatalf("%d commands ran at once", ex.MaxConcurrent())
	}
	call := ex.Calls()[0]
	for k, want := range map[string]string{
		"DIRECTORATE_ROLE":          "leader",
		"DIRECTORATE_PREVIOUS_ROLE": "follower",
		"DIRECTORATE_NODE":          "d1",
		"DIRECTORATE_TERM":          "5",
		"DIRECTORATE_INDEX":         "105",
		"DIRECTORATE_VIPS":          "10.0.0.1",
		"INHERITED":                 "yes",
	} {
		if got, ok := call.Getenv(k); !ok || got != want {
			t.Errorf("%s = %q (set %v), want %q", k, got, ok, want)
		}
	}
	if call.Deadline.IsZero() {
		t.Error("command ran without a deadline")
	}
	if st := r.Stats(); st != (hooks.Stats{Runs: 3}) {
		t.Errorf("stats %+v", st)
	}
}

func TestRunLogsAndCountsFailuresAndTimeouts(t *testing.T) {
	r, ex, tl := newFakeRunner(t, hooks.Config{
		OnLeader: []string{"fails", "hangs", "cannot-start", "works"},
		Timeout:  200 * time.Millisecond,
	}, 0)
	ex.On("fails", hookstest.Behavior{ExitCode: 3, Stderr: "boom"})
	ex.On("hangs", hookstest.Behavior{Hang: true, Stderr: "still going"})
	ex.On("cannot-start", hookstest.Behavior{StartErr: errors.New("exec: no such file")})
	r.Run(context.Background(), leaderEvent(9))

	if got := ex.Commands(); !slices.Equal(got, []string{"fails", "hangs", "cannot-start", "works"}) {
		t.Fatalf("ran %q: a failure must not stop the commands after it", got)
	}
	if st := r.Stats(); st != (hooks.Stats{Runs: 4, Failures: 2, Timeouts: 1}) {
		t.Errorf("stats %+v, want 4 runs, 2 failures, 1 timeout", st)
	}
	for _, want := range [][]string{
		{"hook failed", "hook=fails", "exit_code=3", "stderr=boom", "role=leader", "term=9", "index=109"},
		{"hook timed out", "hook=hangs", "exit_code=-1", `stderr="still going"`, "timeout=200ms"},
		{"hook failed", "hook=cannot-start", "no such file"},
		{"hook done", "hook=works", "exit_code=0", "duration="},
	} {
		if len(tl.Find(want...)) != 1 {
			t.Errorf("no single log line with %q", want)
		}
	}
}

func TestRunCancelledSkipsTheRest(t *testing.T) {
	r, ex, tl := newFakeRunner(t, hooks.Config{OnStop: []string{"hangs", "never"}, Timeout: time.Minute}, 0)
	ex.On("hangs", hookstest.Behavior{Hang: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, hooks.Event{Role: hooks.RoleStop, Previous: hooks.RoleLeader, Node: "d1"})
	}()
	eventually(t, "hook running", func() bool { return ex.Running() == 1 })
	cancel()
	<-done
	if got := ex.Commands(); !slices.Equal(got, []string{"hangs"}) {
		t.Fatalf("ran %q after cancellation", got)
	}
	if st := r.Stats(); st != (hooks.Stats{Runs: 1, Failures: 1}) {
		t.Errorf("stats %+v: a cancelled command is a failure, not a timeout", st)
	}
	if len(tl.Find("hook cancelled")) != 1 || len(tl.Find("remaining commands skipped", "skipped=1")) != 1 {
		t.Error("cancellation not logged")
	}
}

func TestRunUnknownRoleAndNoCommands(t *testing.T) {
	r, ex, tl := newFakeRunner(t, hooks.Config{OnLeader: []string{"a"}}, 0)
	r.Run(context.Background(), hooks.Event{Role: "candidate"})
	r.Run(context.Background(), followerEvent(1)) // none configured
	if len(ex.Calls()) != 0 {
		t.Fatalf("ran %q", ex.Commands())
	}
	if st := r.Stats(); st != (hooks.Stats{Dropped: 1}) {
		t.Errorf("stats %+v", st)
	}
	if len(tl.Find("unknown role", "role=candidate")) != 1 {
		t.Error("unknown role not logged")
	}
}

func TestRunAsyncDoesNotBlock(t *testing.T) {
	r, ex, _ := newFakeRunner(t, hooks.Config{OnFollower: []string{"slow"}, Timeout: time.Minute}, 0)
	gate := make(chan struct{})
	ex.On("slow", hookstest.Behavior{Gate: gate})
	// If RunAsync waited for the hook, this would deadlock: the gate only
	// opens after it returns.
	r.RunAsync(followerEvent(1))
	eventually(t, "hook running", func() bool { return ex.Running() == 1 })
	close(gate)
	if err := r.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st != (hooks.Stats{Runs: 1}) {
		t.Errorf("stats %+v", st)
	}
}

func terms(t *testing.T, ex *hookstest.Executor) []string {
	t.Helper()
	var out []string
	for _, c := range ex.Calls() {
		role, _ := c.Getenv("DIRECTORATE_ROLE")
		term, _ := c.Getenv("DIRECTORATE_TERM")
		out = append(out, role+"@"+term)
	}
	return out
}

func TestRunAsyncKeepsOrder(t *testing.T) {
	r, ex, _ := newFakeRunner(t, hooks.Config{OnLeader: []string{"up"}, OnFollower: []string{"down"}}, 0)
	gate := make(chan struct{})
	ex.On("up", hookstest.Behavior{Gate: gate})
	var want []string
	for term := uint64(1); term <= 5; term++ {
		r.RunAsync(leaderEvent(term))
		r.RunAsync(followerEvent(term))
		want = append(want, fmt.Sprintf("leader@%d", term), fmt.Sprintf("follower@%d", term))
	}
	// The first on_leader is held; nothing may overtake it.
	eventually(t, "first hook running", func() bool { return ex.Running() == 1 })
	if got := terms(t, ex); !slices.Equal(got, want[:1]) {
		t.Fatalf("while the first hook runs: %q", got)
	}
	close(gate)
	if err := r.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := terms(t, ex); !slices.Equal(got, want) {
		t.Fatalf("ran %q, want %q", got, want)
	}
	if ex.MaxConcurrent() != 1 {
		t.Fatalf("%d hooks ran at once", ex.MaxConcurrent())
	}
}

func TestRunAsyncDropsOldestPending(t *testing.T) {
	r, ex, tl := newFakeRunner(t, hooks.Config{OnLeader: []string{"up"}, OnFollower: []string{"down"}}, 2)
	gate := make(chan struct{})
	ex.On("up", hookstest.Behavior{Gate: gate})
	r.RunAsync(leaderEvent(1))
	eventually(t, "first hook running", func() bool { return ex.Running() == 1 })
	// Two may wait; the third pushes out the oldest waiting one (term 2).
	r.RunAsync(followerEvent(2))
	r.RunAsync(leaderEvent(3))
	r.RunAsync(followerEvent(4))
	if st := r.Stats(); st.Dropped != 1 {
		t.Fatalf("dropped %d, want 1", st.Dropped)
	}
	if len(tl.Find("hooks dropped", "role=follower", "term=2", "more than 2 events pending")) != 1 {
		t.Error("the dropped event was not logged")
	}
	close(gate)
	if err := r.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := terms(t, ex), []string{"leader@1", "leader@3", "follower@4"}; !slices.Equal(got, want) {
		t.Fatalf("ran %q, want %q", got, want)
	}
}

// TestRunWaitsForQueuedEvents: on_stop through Run must not overtake an
// on_follower still queued or running.
func TestRunWaitsForQueuedEvents(t *testing.T) {
	r, ex, tl := newFakeRunner(t, hooks.Config{OnFollower: []string{"down"}, OnStop: []string{"stop"}}, 0)
	gate := make(chan struct{})
	ex.On("down", hookstest.Behavior{Gate: gate})
	r.RunAsync(followerEvent(3))
	eventually(t, "follower hook running", func() bool { return ex.Running() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r.Run(ctx, hooks.Event{Role: hooks.RoleStop, Node: "d1", Term: 3})
	if got := ex.Commands(); !slices.Equal(got, []string{"down"}) {
		t.Fatalf("Run did not wait for the queued event: ran %q", got)
	}
	if r.Stats().Dropped != 1 || len(tl.Find("hooks dropped", "role=stop", "earlier events still running")) != 1 {
		t.Fatalf("a Run given up is not counted and logged: %+v", r.Stats())
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(context.Background(), hooks.Event{Role: hooks.RoleStop, Node: "d1", Term: 3})
	}()
	close(gate)
	<-done
	if got := ex.Commands(); !slices.Equal(got, []string{"down", "stop"}) {
		t.Fatalf("ran %q, want down then stop", got)
	}
	if ex.MaxConcurrent() != 1 {
		t.Fatal("Run ran alongside an async event")
	}
}

func TestCloseKillsRunningAndDropsPending(t *testing.T) {
	r, ex, _ := newFakeRunner(t, hooks.Config{OnLeader: []string{"hangs"}, OnFollower: []string{"down"}, OnStop: []string{"stop"}, Timeout: time.Minute}, 0)
	ex.On("hangs", hookstest.Behavior{Hang: true})
	r.RunAsync(leaderEvent(1))
	eventually(t, "hook running", func() bool { return ex.Running() == 1 })
	r.RunAsync(followerEvent(1))
	r.RunAsync(followerEvent(2))
	r.Close()
	if ex.Running() != 0 {
		t.Fatal("Close returned with a hook still running")
	}
	if st := r.Stats(); st != (hooks.Stats{Runs: 1, Failures: 1, Dropped: 2}) {
		t.Fatalf("stats after Close %+v", st)
	}
	r.RunAsync(followerEvent(3))
	if st := r.Stats(); st.Dropped != 3 {
		t.Fatalf("RunAsync after Close: dropped %d, want 3", st.Dropped)
	}
	r.Run(context.Background(), hooks.Event{Role: hooks.RoleStop})
	if got := ex.Commands(); !slices.Equal(got, []string{"hangs", "stop"}) {
		t.Fatalf("ran %q; Run must work after Close", got)
	}
	r.Close() // idempotent
}

func TestNewRunnerRejectsNegativeQueue(t *testing.T) {
	_, err := hooks.NewRunner(hooks.Config{}, hooks.Options{MaxPending: -1})
	if err == nil || !strings.Contains(err.Error(), "max pending") {
		t.Fatalf("NewRunner = %v", err)
	}
}
