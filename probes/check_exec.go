package probes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// execOutputLimit bounds how much of a failing command's output the
// check's error quotes.
const execOutputLimit = 512

// execWaitDelay is how long a killed command's output pipes may stay open
// (held by a child that escaped its process group) before the check stops
// waiting for them.
const execWaitDelay = 100 * time.Millisecond

// ExecChecker is the checker of CheckExec. It runs Command with /bin/sh
// -c in a process group of its own, so that at the timeout the shell and
// everything it started are killed together, not just the shell.
type ExecChecker struct {
	shell string
}

// NewExecChecker returns the real exec checker.
func NewExecChecker() *ExecChecker { return &ExecChecker{shell: "/bin/sh"} }

// Check implements Checker.
func (c *ExecChecker) Check(ctx context.Context, spec CheckSpec) error {
	cmd := exec.CommandContext(ctx, c.shell, "-c", spec.Command)
	cmd.Env = append(os.Environ(),
		EnvCheckAddr+"="+spec.Target.Addr().String(),
		EnvCheckPort+"="+strconv.Itoa(int(spec.Target.Port())),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The negative pid names the process group that Setpgid made.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = execWaitDelay
	out := &limitedBuffer{limit: execOutputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("exec %q: killed at the timeout: %w", spec.Command, ctx.Err())
	}
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(out.String())
	var exit *exec.ExitError
	if errors.As(err, &exit) && msg != "" {
		return fmt.Errorf("exec %q: %w: %s", spec.Command, err, msg)
	}
	return fmt.Errorf("exec %q: %w", spec.Command, err)
}

// limitedBuffer keeps the first limit bytes written to it and drops the
// rest, so a chatty check cannot grow the director's memory.
type limitedBuffer struct {
	buf   bytes.Buffer
	limit int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string { return b.buf.String() }
