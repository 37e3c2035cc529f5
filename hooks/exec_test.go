package hooks_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directorate/directorate/hooks"
)

// sq quotes s for sh.
func sq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func TestShellHooksGetEnvironmentAndRunInOrder(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	log, _ := newTestLogger(t)
	r, err := hooks.NewRunner(hooks.Config{
		OnLeader: []string{
			`echo "first $DIRECTORATE_ROLE" >> ` + sq(out),
			`printf '%s|%s|%s|%s|%s|%s|%s\n' "$DIRECTORATE_ROLE" "$DIRECTORATE_PREVIOUS_ROLE" "$DIRECTORATE_NODE" "$DIRECTORATE_TERM" "$DIRECTORATE_INDEX" "$DIRECTORATE_VIPS" "$HOOKS_TEST_INHERITED" >> ` + sq(out),
			`echo last >> ` + sq(out),
		},
		Timeout: 10 * time.Second,
	}, hooks.Options{
		Logger:  log,
		Environ: func() []string { return append(os.Environ(), "HOOKS_TEST_INHERITED=yes") },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Run(context.Background(), hooks.Event{
		Role: hooks.RoleLeader, Previous: hooks.RoleFollower, Node: "d2", Term: 12, Index: 345,
		VIPs: []string{"192.0.2.10", "2001:db8::10"},
	})
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "first leader\nleader|follower|d2|12|345|192.0.2.10 2001:db8::10|yes\nlast\n"
	if string(got) != want {
		t.Fatalf("hooks wrote\n%s\nwant\n%s", got, want)
	}
	if st := r.Stats(); st != (hooks.Stats{Runs: 3}) {
		t.Errorf("stats %+v", st)
	}
}

func TestShellNonZeroExitIsCounted(t *testing.T) {
	log, tl := newTestLogger(t)
	r, err := hooks.NewRunner(hooks.Config{OnFollower: []string{"echo something broke >&2; exit 7"}}, hooks.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Run(context.Background(), followerEvent(4))
	if st := r.Stats(); st != (hooks.Stats{Runs: 1, Failures: 1}) {
		t.Fatalf("stats %+v", st)
	}
	if len(tl.Find("hook failed", "exit_code=7", `stderr="something broke\n"`, "role=follower", "term=4")) != 1 {
		t.Error("failure not logged with exit code and stderr")
	}
}

func TestShellExecutorResult(t *testing.T) {
	ex := hooks.ShellExecutor{StderrTail: 16}
	res := ex.Exec(context.Background(), `printf '%0100d' 0 >&2; printf 'the end' >&2; exit 3`, os.Environ())
	if res.ExitCode != 3 || res.Err == nil {
		t.Fatalf("exit %d err %v, want 3 and an error", res.ExitCode, res.Err)
	}
	if !strings.HasSuffix(res.Stderr, "000000000the end") || len(res.Stderr) > 16+len("…") {
		t.Fatalf("stderr tail %q", res.Stderr)
	}

	res = ex.Exec(context.Background(), "true", os.Environ())
	if res.ExitCode != 0 || res.Err != nil || res.Stderr != "" || res.Lingered {
		t.Fatalf("true: %+v", res)
	}

	res = hooks.ShellExecutor{Shell: filepath.Join(t.TempDir(), "no-shell")}.Exec(context.Background(), "true", nil)
	if res.ExitCode != -1 || !errors.Is(res.Err, os.ErrNotExist) {
		t.Fatalf("missing shell: %+v", res)
	}
}

// pidGone reports whether pid has exited. A killed orphan may stay a zombie
// when the container's init does not reap; it is dead all the same.
func pidGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	eventually(t, path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

// TestShellTimeoutKillsProcessGroup: at the deadline the shell, its child
// and its grandchild all die.
func TestShellTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	child, grandchild := filepath.Join(dir, "child"), filepath.Join(dir, "grandchild")
	script := fmt.Sprintf(`sleep 60 & echo $! > %s; sh -c 'sleep 61 & echo $! > %s; wait' & wait`, sq(child), sq(grandchild))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan hooks.Result, 1)
	go func() { done <- (hooks.ShellExecutor{}).Exec(ctx, script, os.Environ()) }()
	// Cancel only once both descendants exist, so the test does not depend
	// on how fast the shell starts them.
	pids := []int{readPid(t, child), readPid(t, grandchild)}
	cancel()
	var res hooks.Result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Exec did not return after its context ended")
	}
	if res.Err == nil || res.ExitCode != -1 {
		t.Fatalf("killed command: %+v", res)
	}
	for _, pid := range pids {
		eventually(t, fmt.Sprintf("pid %d to die", pid), func() bool { return pidGone(pid) })
	}
}

// TestShellHookTimeout runs the timeout through Runner: the hook is killed
// and counted as a timeout.
func TestShellHookTimeout(t *testing.T) {
	dir := t.TempDir()
	child := filepath.Join(dir, "child")
	log, tl := newTestLogger(t)
	r, err := hooks.NewRunner(hooks.Config{
		OnLeader: []string{fmt.Sprintf(`sleep 60 & echo $! > %s; wait`, sq(child))},
		Timeout:  300 * time.Millisecond,
	}, hooks.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Run(context.Background(), leaderEvent(2))
	if st := r.Stats(); st != (hooks.Stats{Runs: 1, Timeouts: 1}) {
		t.Fatalf("stats %+v", st)
	}
	if len(tl.Find("hook timed out", "role=leader", "term=2", "timeout=300ms")) != 1 {
		t.Error("timeout not logged")
	}
	// The shell may have been killed before it started the child.
	if b, err := os.ReadFile(child); err == nil {
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil {
			eventually(t, "child to die", func() bool { return pidGone(pid) })
		}
	}
}

// TestShellLingeringChild: a hook that leaves a background process holding
// its stderr succeeds after the wait delay instead of hanging.
func TestShellLingeringChild(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	ex := hooks.ShellExecutor{WaitDelay: 50 * time.Millisecond}
	res := ex.Exec(context.Background(), fmt.Sprintf(`sleep 60 & echo $! > %s`, sq(pidFile)), os.Environ())
	pid := readPid(t, pidFile)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if res.Err != nil || res.ExitCode != 0 || !res.Lingered {
		t.Fatalf("result %+v, want success with Lingered", res)
	}
	if pidGone(pid) {
		t.Fatal("a successful hook's background process was killed")
	}
}

func TestShellRunAsyncAndClose(t *testing.T) {
	started := filepath.Join(t.TempDir(), "started")
	log, _ := newTestLogger(t)
	r, err := hooks.NewRunner(hooks.Config{
		OnFollower: []string{fmt.Sprintf("echo $$ > %s; sleep 60", sq(started))},
		Timeout:    time.Minute,
	}, hooks.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	r.RunAsync(followerEvent(1)) // returns at once; a blocking call would hold the test for a minute
	shell := readPid(t, started)
	r.Close()
	if st := r.Stats(); st != (hooks.Stats{Runs: 1, Failures: 1}) {
		t.Fatalf("stats %+v", st)
	}
	eventually(t, "hook shell to die", func() bool { return pidGone(shell) })
}
