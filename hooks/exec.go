package hooks

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Executor runs one hook command. Runner owns the timeout: it passes a ctx
// that ends at the deadline, and Exec must return promptly once ctx is done,
// having killed whatever the command started.
type Executor interface {
	Exec(ctx context.Context, command string, env []string) Result
}

// Result is how one command ended.
type Result struct {
	// ExitCode is the command's exit status; -1 if it did not start or was
	// killed by a signal.
	ExitCode int
	// Stderr is the tail of the command's standard error.
	Stderr string
	// Err is nil if and only if the command ran and exited 0.
	Err error
	// Lingered reports that the command exited but a process it started
	// kept its stderr open past the executor's wait delay; the command
	// still counts as having succeeded or failed by its own exit status.
	Lingered bool
}

// Defaults of ShellExecutor.
const (
	DefaultShell      = "/bin/sh"
	DefaultStderrTail = 1024
	DefaultWaitDelay  = 500 * time.Millisecond
)

// ShellExecutor runs commands with `sh -c` in a process group of their own,
// so that on timeout the whole group (the shell and every child it forked
// that did not leave the group) dies with SIGKILL. Zero fields take the
// defaults above.
type ShellExecutor struct {
	// Shell runs each command as `Shell -c command`.
	Shell string
	// StderrTail is how many trailing bytes of stderr Result keeps.
	StderrTail int
	// WaitDelay is how long Exec waits, after the command exited or was
	// killed, for processes it started in the background to close its
	// stderr, before giving up on them (exec.Cmd.WaitDelay).
	WaitDelay time.Duration
}

var _ Executor = ShellExecutor{}

// Exec runs command and waits for it, or kills its process group once ctx
// is done.
func (e ShellExecutor) Exec(ctx context.Context, command string, env []string) Result {
	shell, tailSize, waitDelay := e.Shell, e.StderrTail, e.WaitDelay
	if shell == "" {
		shell = DefaultShell
	}
	if tailSize <= 0 {
		tailSize = DefaultStderrTail
	}
	if waitDelay <= 0 {
		waitDelay = DefaultWaitDelay
	}
	stderr := &tailBuffer{max: tailSize}
	cmd := exec.CommandContext(ctx, shell, "-c", command)
	cmd.Env = env
	cmd.Stderr = stderr // stdin and stdout stay nil: /dev/null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The shell's pid is its group's id (Setpgid). Killing the group
		// takes its children too, which killing the shell alone would
		// leave running.
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = waitDelay

	err := cmd.Run()
	res := Result{ExitCode: -1, Err: err}
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		res.Lingered = true
		if res.ExitCode == 0 {
			res.Err = nil
		}
	}
	res.Stderr = stderr.String()
	return res
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu        sync.Mutex
	max       int
	buf       []byte
	truncated bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	// Trim only when twice over, so a chatty command costs amortized O(1)
	// per byte rather than a copy per write.
	if len(b.buf) > 2*b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
		b.truncated = true
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf
	if len(s) > b.max {
		s, b.truncated = s[len(s)-b.max:], true
	}
	if b.truncated {
		return "…" + string(s)
	}
	return string(s)
}
