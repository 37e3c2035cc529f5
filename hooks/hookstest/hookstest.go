// Package hookstest provides a fake hooks.Executor that records every
// command it is asked to run and plays back scripted outcomes: success,
// failure, hanging until the timeout, or blocking until the test opens a
// gate.
package hookstest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/directorate/directorate/hooks"
)

// Behavior scripts how a command ends. The zero value succeeds at once.
type Behavior struct {
	// ExitCode non-zero makes the command fail with that status.
	ExitCode int
	// Stderr is returned as the command's stderr tail.
	Stderr string
	// StartErr makes the command fail to start (exit code -1).
	StartErr error
	// Hang blocks until ctx is done, as a command that never exits.
	Hang bool
	// Gate, if set, blocks until it is closed (or ctx is done), then the
	// other fields apply.
	Gate <-chan struct{}
}

// Call is one recorded Exec.
type Call struct {
	Command string
	Env     []string
	// Deadline is the ctx deadline Exec was given; zero if none.
	Deadline time.Time
}

// Getenv returns the value of key in the call's environment, the last one
// if repeated (as exec does), and whether it was set.
func (c Call) Getenv(key string) (string, bool) {
	for _, kv := range slices.Backward(c.Env) {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// Executor is a fake hooks.Executor, safe for concurrent use.
type Executor struct {
	mu        sync.Mutex
	behaviors map[string]Behavior
	calls     []Call
	running   int
	maxRun    int
}

var _ hooks.Executor = (*Executor)(nil)

// NewExecutor returns an executor under which every command succeeds until
// told otherwise with On.
func NewExecutor() *Executor {
	return &Executor{behaviors: make(map[string]Behavior)}
}

// On scripts how command ends from now on.
func (e *Executor) On(command string, b Behavior) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.behaviors[command] = b
}

// Exec records the call and plays back command's Behavior.
func (e *Executor) Exec(ctx context.Context, command string, env []string) hooks.Result {
	deadline, _ := ctx.Deadline()
	e.mu.Lock()
	b := e.behaviors[command]
	e.calls = append(e.calls, Call{Command: command, Env: slices.Clone(env), Deadline: deadline})
	e.running++
	e.maxRun = max(e.maxRun, e.running)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running--
		e.mu.Unlock()
	}()

	if b.Gate != nil {
		select {
		case <-b.Gate:
		case <-ctx.Done():
			return hooks.Result{ExitCode: -1, Err: fmt.Errorf("killed: %w", ctx.Err())}
		}
	}
	if b.Hang {
		<-ctx.Done()
		return hooks.Result{ExitCode: -1, Stderr: b.Stderr, Err: fmt.Errorf("killed: %w", ctx.Err())}
	}
	switch {
	case b.StartErr != nil:
		return hooks.Result{ExitCode: -1, Err: b.StartErr}
	case b.ExitCode != 0:
		return hooks.Result{ExitCode: b.ExitCode, Stderr: b.Stderr, Err: fmt.Errorf("exit status %d", b.ExitCode)}
	}
	return hooks.Result{Stderr: b.Stderr}
}

// Calls returns every call so far, in order.
func (e *Executor) Calls() []Call {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}

// Commands returns the commands of every call so far, in order.
func (e *Executor) Commands() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.calls))
	for i, c := range e.calls {
		out[i] = c.Command
	}
	return out
}

// Running counts calls still inside Exec.
func (e *Executor) Running() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running
}

// MaxConcurrent is the most calls that were ever inside Exec at once.
func (e *Executor) MaxConcurrent() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.maxRun
}
