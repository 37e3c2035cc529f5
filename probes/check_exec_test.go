package probes_test

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directorate/directorate/probes"
)

func execSpec(command string, timeout time.Duration) probes.CheckSpec {
	s := spec(probes.CheckExec, netip.MustParseAddrPort("192.0.2.7:8080"), timeout)
	s.Command = command
	return s
}

func TestExecCheck(t *testing.T) {
	c := probes.NewExecChecker()
	if err := check(t, c, execSpec("exit 0", time.Second)); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	env := `test "$DIRECTORATE_CHECK_ADDR" = 192.0.2.7 && test "$DIRECTORATE_CHECK_PORT" = 8080`
	if err := check(t, c, execSpec(env, time.Second)); err != nil {
		t.Errorf("environment: %v", err)
	}
	err := check(t, c, execSpec("echo backend says no >&2; exit 3", time.Second))
	wantErr(t, err, "exec", "exit status 3", "backend says no")

	err = check(t, c, execSpec("/nonexistent/check-script", time.Second))
	wantErr(t, err, "exit status 127", "not found")
}

func TestExecCheckOutputIsBounded(t *testing.T) {
	err := check(t, probes.NewExecChecker(), execSpec("head -c 100000 /dev/zero | tr '\\0' x; exit 1", 2*time.Second))
	wantErr(t, err, "exit status 1")
	if len(err.Error()) > 1000 {
		t.Errorf("error quotes %d bytes of output", len(err.Error()))
	}
}

func TestExecCheckHangingScriptIsKilledWithItsChildren(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	// The script starts a child that would outlive a kill of the shell
	// alone, records its pid and hangs.
	cmd := "sleep 60 & echo $! > " + pidFile + "; wait"
	start := time.Now()
	err := check(t, probes.NewExecChecker(), execSpec(cmd, 300*time.Millisecond))
	wantErr(t, err, "killed at the timeout", "deadline exceeded")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("hanging script held the check for %s", took)
	}
	data, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatalf("the script never ran: %v", rerr)
	}
	pid, perr := strconv.Atoi(strings.TrimSpace(string(data)))
	if perr != nil {
		t.Fatalf("pid file %q: %v", data, perr)
	}
	waitFor(t, "the script's child to die", func() bool { return !alive(pid) })
}

// alive says whether pid runs; a zombie, dead but not yet reaped by its
// new parent, counts as dead.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
