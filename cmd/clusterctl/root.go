package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
)

// Exit statuses. Scripts can tell a refused change (1) from a mistyped
// command (2) and from a cluster that cannot take requests right now (3),
// which is worth retrying.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitUnavailable = 3
)

const (
	defaultAddr = "127.0.0.1:7950"
	addrEnv     = "CLUSTERCTL_ADDR"
	// completionTimeout keeps a shell responsive when clusterd is down.
	completionTimeout = 2 * time.Second
)

// env is what clusterctl takes from its process, injected so tests run
// commands in-process.
type env struct {
	Stdin io.Reader
	// StdinIsTerminal says whether a person can answer a confirmation.
	StdinIsTerminal bool
	Getenv          func(string) string
	Version         string
}

// app holds one invocation's global flags and streams.
type app struct {
	env            env
	stdout, stderr io.Writer

	addr       string
	output     string
	timeout    time.Duration
	consistent bool
	creds      credentials
}

// usageError marks a mistake in the command line, caught before or instead
// of asking clusterd.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// ranError marks a failure of a command that ran, as opposed to one cobra
// refused while parsing the command line.
type ranError struct{ err error }

func (e ranError) Error() string { return e.err.Error() }
func (e ranError) Unwrap() error { return e.err }

// run executes one clusterctl command line and returns its exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, e env) int {
	if e.Getenv == nil {
		e.Getenv = func(string) string { return "" }
	}
	if e.Stdin == nil {
		e.Stdin = strings.NewReader("")
	}
	a := &app{env: e, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(e.Stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	fmt.Fprintf(stderr, "clusterctl: %s\n", err)
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	var unreachable *api.UnreachableError
	var timeout *api.TimeoutError
	if errors.As(err, &unreachable) || errors.As(err, &timeout) {
		return exitUnavailable
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		switch {
		case ae.Code == api.CodeNoLeader || ae.Code == api.CodeUnavailable || ae.Code == api.CodeTimeout ||
			ae.Code == api.CodeNotLeader:
			return exitUnavailable
		case ae.Status == 0 && ae.Code == api.CodeInvalid:
			// The client refused it before sending: a bad argument.
			return exitUsage
		}
		return exitFailure
	}
	var re ranError
	if errors.As(err, &re) {
		return exitFailure
	}
	// Anything else comes from cobra parsing the command line: an unknown
	// command or flag, or a missing argument or required flag.
	return exitUsage
}

// action adapts a command body so its errors count as failures of a
// command that ran, not of the command line.
func action(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := fn(cmd, args); err != nil {
			return ranError{err}
		}
		return nil
	}
}

// exactArgs names the missing or surplus positional argument, which
// cobra's ExactArgs does not.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return usagef("missing argument %s", strings.Join(names[len(args):], " "))
		}
		if len(args) > len(names) {
			if len(names) == 0 {
				return usagef("unexpected argument %q: %s takes none", args[0], cmd.CommandPath())
			}
			return usagef("unexpected argument %q (want %s)", args[len(names)], strings.Join(names, " "))
		}
		return nil
	}
}

const rootLong = `clusterctl changes and inspects a Directorate cluster: three or more LVS
directors that replicate their VIPs, virtual services and real servers with
Raft. Every change is committed on a quorum before clusterctl reports it,
with the configuration index that committed it.

clusterctl talks to any director's API (--addr, or $CLUSTERCTL_ADDR);
followers forward writes to the leader. Reads are answered by the director
asked and may lag a moment behind the leader; --consistent asks the leader.

Exit status:
  0  success
  1  clusterd refused the request (it names the field and the reason), or a
     local operation such as writing a file failed
  2  the command line is invalid (unknown flag, bad argument, bad ADDR:PORT)
  3  clusterd is unreachable, did not answer in time, or the cluster has no
     leader: the request may be retried`

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "clusterctl",
		Short:         "Manage a Directorate LVS cluster",
		Long:          rootLong,
		Version:       a.env.Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if a.output != "table" && a.output != "json" {
				return usagef("-o/--output: %q is not an output format (want table or json)", a.output)
			}
			if a.timeout < 0 {
				return usagef("--timeout: %s must not be negative", a.timeout)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	addr := a.env.Getenv(addrEnv)
	if addr == "" {
		addr = defaultAddr
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", addr, "clusterd API address, host:port or URL; $"+addrEnv+" sets the default")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "how long to wait for each answer, including a write's commit (0: no limit)")
	pf.BoolVar(&a.consistent, "consistent", false, "have reads answered by the leader, reflecting every acknowledged change")
	a.addCredentialFlags(pf)
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		a.statusCmd(),
		a.vipCmd(),
		a.serviceCmd(),
		a.serverCmd(),
		a.memberCmd(),
		a.leaderCmd(),
		a.snapshotCmd(),
		a.ipvsCmd(),
		a.tokenCmd(),
		a.keyringCmd(),
	)
	return root
}

// client returns an API client for --addr.
func (a *app) client() (*api.Client, error) {
	return a.clientWithTimeout(a.timeout)
}

func (a *app) clientWithTimeout(timeout time.Duration) (*api.Client, error) {
	return a.clientAt(a.addr, timeout)
}

// clientAt returns an API client of the director at addr, with the
// credentials of the command line.
func (a *app) clientAt(addr string, timeout time.Duration) (*api.Client, error) {
	opts := []api.Option{
		api.WithTimeout(timeout),
		api.WithUserAgent("clusterctl/" + a.env.Version),
		api.WithUnreachableHint("is it running? set --addr or " + addrEnv),
	}
	a.creds.withEnvToken(a.env.Getenv)
	secOpts, addr, err := a.creds.options(addr)
	if err != nil {
		return nil, err
	}
	c, err := api.New(addr, append(opts, secOpts...)...)
	if err != nil {
		return nil, usagef("--addr: %w", err)
	}
	return c, nil
}

// reader returns a client for reads, consistent when --consistent is set.
func (a *app) reader() (*api.Client, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	if a.consistent {
		c = c.Consistent()
	}
	return c, nil
}

func (a *app) json() bool { return a.output == "json" }

// printJSON writes data and the configuration index as the API's envelope;
// a nil data (a write) prints the index alone.
func (a *app) printJSON(index uint64, data any) error {
	env := struct {
		Index uint64          `json:"index"`
		Data  json.RawMessage `json:"data,omitempty"`
	}{Index: index}
	if data != nil {
		raw, err := json.Marshal(data)
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		env.Data = raw
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(env); err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err := a.stdout.Write(buf.Bytes())
	return err
}

// nonNil makes an empty list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// wrote reports a committed change: one line with the index for people,
// the bare index for programs.
func (a *app) wrote(index uint64, format string, args ...any) error {
	if a.json() {
		return a.printJSON(index, nil)
	}
	_, err := fmt.Fprintf(a.stdout, "%s (index %d)\n", fmt.Sprintf(format, args...), index)
	return err
}

// table aligns rows into columns. Trailing blanks are trimmed so an empty
// last column leaves no padding behind.
type table struct {
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(header ...string) *table {
	t := &table{}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) write(w io.Writer) error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	var out strings.Builder
	for _, line := range strings.SplitAfter(t.buf.String(), "\n") {
		if line == "" {
			continue
		}
		out.WriteString(strings.TrimRight(line, " \n"))
		out.WriteString("\n")
	}
	_, err := io.WriteString(w, out.String())
	return err
}

// dash shows an empty value as "-" so columns stay readable.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func itoa0(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// group makes cmd a command that only holds subcommands. Cobra would show
// the help and succeed for a mistyped subcommand ("vip lss"); a script
// must see that fail.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.SuggestionsMinimumDistance = 2
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
		}
		return usagef("%s", msg)
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return cmd
}
