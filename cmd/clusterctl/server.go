package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

const serverArgHelp = `ADDR:PORT is the real server: 10.0.1.1:80 or [2001:db8::1]:80. A bare
address (10.0.1.1, 2001:db8::1) means the service's port.`

func (a *app) serverCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "server",
		Aliases: []string{"rs"},
		Short:   "Add, change, drain, remove and list real servers",
	}
	cmd.AddCommand(
		a.serverAddCmd(), a.serverRmCmd(), a.serverSetCmd(), a.serverLsCmd(),
		a.serverDrainCmd(),
		a.serverAdminCmd("enable", fsm.Enabled, "enabled", "Put a drained or disabled real server back in service"),
		a.serverAdminCmd("disable", fsm.Disabled, "disabled", "Take a real server out of the kernel table"),
	)
	return group(cmd)
}

// serverFlags are the settable fields of a real server.
type serverFlags struct {
	method, tunnel, checksum, admin  string
	weight, upper, lower, tunnelPort int
	checks                           checkFlags
}

func (sf *serverFlags) register(cmd *cobra.Command, add bool) {
	f := cmd.Flags()
	methodHelp := "forwarding method: nat, dr or tun (ipvsadm's masq, route/gate/direct and ipip/tunnel also work)"
	if add {
		methodHelp += "; default: the service's method"
	}
	f.StringVar(&sf.method, "method", "", methodHelp)
	f.IntVar(&sf.weight, "weight", 1, "weight, 0-65535; 0 takes no new connections")
	f.IntVar(&sf.upper, "upper", 0, "upper connection threshold (0: none)")
	f.IntVar(&sf.lower, "lower", 0, "lower connection threshold (0: none)")
	f.StringVar(&sf.tunnel, "tunnel", "", "tun encapsulation: ipip, gue or gre (gue and gre need kernel 5.2)")
	f.IntVar(&sf.tunnelPort, "tunnel-port", 0, "gue: destination UDP port")
	f.StringVar(&sf.checksum, "tunnel-checksum", "", "gue and gre checksum: nocsum, csum or remcsum")
	adminHelp := "admin state: enabled, drained or disabled"
	if add {
		adminHelp += " (default enabled)"
	}
	f.StringVar(&sf.admin, "admin", "", adminHelp)
	_ = cmd.RegisterFlagCompletionFunc("method", fixed("nat", "dr", "tun"))
	_ = cmd.RegisterFlagCompletionFunc("tunnel", fixed("ipip", "gue", "gre"))
	_ = cmd.RegisterFlagCompletionFunc("tunnel-checksum", fixed("nocsum", "csum", "remcsum"))
	_ = cmd.RegisterFlagCompletionFunc("admin", fixed("enabled", "drained", "disabled"))
	sf.checks.register(cmd, "remove the server's own check: the service's check applies again")
}

// patch builds a patch of the flags the user set, validating each.
func (sf *serverFlags) patch(cmd *cobra.Command) (fsm.ServerPatch, bool, error) {
	f := cmd.Flags()
	var p fsm.ServerPatch
	methodFlag := func(s string) (fsm.Method, error) { return parseMethod("method", s) }
	if err := parseIfChanged(f.Changed("method"), sf.method, methodFlag, &p.Method); err != nil {
		return p, false, err
	}
	for _, num := range []struct {
		flag   string
		v      int
		lo, hi int
		dst    **int
	}{
		{"weight", sf.weight, 0, fsm.MaxWeight, &p.Weight},
		{"upper", sf.upper, 0, math.MaxInt32, &p.UpperThreshold},
		{"lower", sf.lower, 0, math.MaxInt32, &p.LowerThreshold},
		{"tunnel-port", sf.tunnelPort, 0, 65535, &p.TunnelPort},
	} {
		if !f.Changed(num.flag) {
			continue
		}
		if err := checkRange(num.flag, num.v, num.lo, num.hi); err != nil {
			return p, false, err
		}
		v := num.v
		*num.dst = &v
	}
	if err := parseIfChanged(f.Changed("tunnel"), sf.tunnel, parseTunnel, &p.Tunnel); err != nil {
		return p, false, err
	}
	if err := parseIfChanged(f.Changed("tunnel-checksum"), sf.checksum, parseChecksum, &p.TunnelChecksum); err != nil {
		return p, false, err
	}
	if err := parseIfChanged(f.Changed("admin"), sf.admin, parseAdmin, &p.Admin); err != nil {
		return p, false, err
	}
	p.NoCheck = sf.checks.none
	return p, p != (fsm.ServerPatch{}) || sf.checks.changed(f), nil
}

// parseIfChanged sets *dst to the parsed raw value of a flag the user gave,
// and leaves it nil otherwise, so the patch carries only what was given.
func parseIfChanged[T any](changed bool, raw string, parse func(string) (T, error), dst **T) error {
	if !changed {
		return nil
	}
	v, err := parse(raw)
	if err != nil {
		return err
	}
	*dst = &v
	return nil
}

// server builds a new real server from the flags: defaults, then the patch.
func (sf *serverFlags) server(cmd *cobra.Command) (fsm.RealServer, error) {
	p, _, err := sf.patch(cmd)
	if err != nil {
		return fsm.RealServer{}, err
	}
	if err := checkRange("weight", sf.weight, 0, fsm.MaxWeight); err != nil {
		return fsm.RealServer{}, err
	}
	rs := fsm.RealServer{Weight: sf.weight}
	if p.Method != nil {
		rs.Method = *p.Method
	}
	if p.Tunnel != nil {
		rs.Tunnel = *p.Tunnel
	}
	if p.TunnelPort != nil {
		rs.TunnelPort = *p.TunnelPort
	}
	if p.TunnelChecksum != nil {
		rs.TunnelChecksum = *p.TunnelChecksum
	}
	if p.UpperThreshold != nil {
		rs.UpperThreshold = *p.UpperThreshold
	}
	if p.LowerThreshold != nil {
		rs.LowerThreshold = *p.LowerThreshold
	}
	if p.Admin != nil {
		rs.Admin = *p.Admin
	}
	if sf.checks.none {
		return fsm.RealServer{}, usagef("--no-check: a new server has no check of its own; use --check none to keep it unchecked")
	}
	if sf.checks.changed(cmd.Flags()) {
		c, err := sf.checks.apply(cmd.Flags(), nil)
		if err != nil {
			return fsm.RealServer{}, err
		}
		rs.Check = c
	}
	return rs, nil
}

// resolveServer parses a real-server argument; a bare address takes the
// service's port, read from the leader.
func resolveServer(ctx context.Context, c *api.Client, service, arg string) (netip.Addr, int, error) {
	sa, err := parseServerArg("ADDR:PORT", arg)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if sa.hasPort {
		return sa.addr, sa.port, nil
	}
	svc, _, err := c.Consistent().Service(ctx, service)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("look up the port of service %s for %s: %w", service, arg, err)
	}
	return sa.addr, svc.Port, nil
}

func (a *app) serverAddCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "add SERVICE ADDR:PORT",
		Short: "Add a real server to a service",
		Long: "Add a real server to a service.\n\n" + serverArgHelp + `

DR and TUN servers must listen on the service port; NAT may remap it.

Examples:
  clusterctl server add web 10.0.1.1:80
  clusterctl server add web 10.0.1.2 --weight 3
  clusterctl server add api 10.0.2.1:8080 --method nat
  clusterctl server add web [2001:db8::1]:80 --method tun --tunnel gue --tunnel-port 6080`,
		Args:              exactArgs("SERVICE", "ADDR:PORT"),
		ValidArgsFunction: a.completeFirst(serviceNames),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			// Flags are checked before anything is sent.
			rs, err := sf.server(cmd)
			if err != nil {
				return err
			}
			if _, err := parseServerArg("ADDR:PORT", args[1]); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			rs.Address, rs.Port, err = resolveServer(cmd.Context(), c, args[0], args[1])
			if err != nil {
				return err
			}
			index, err := c.AddServer(cmd.Context(), args[0], rs)
			if err != nil {
				return err
			}
			return a.wrote(index, "added server %s to service %s", rs.Key(), args[0])
		}),
	}
	sf.register(cmd, true)
	return cmd
}

func (a *app) serverRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "rm SERVICE ADDR:PORT",
		Aliases:           []string{"remove", "delete"},
		Short:             "Remove a real server from a service",
		Long:              "Remove a real server from a service.\n\n" + serverArgHelp,
		Args:              exactArgs("SERVICE", "ADDR:PORT"),
		ValidArgsFunction: a.completeArgs(serviceNames, serverKeys),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			if _, err := parseServerArg("ADDR:PORT", args[1]); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			addr, port, err := resolveServer(cmd.Context(), c, args[0], args[1])
			if err != nil {
				return err
			}
			index, err := c.DeleteServer(cmd.Context(), args[0], addr, port)
			if err != nil {
				return err
			}
			return a.wrote(index, "removed server %s from service %s", fsm.ServerKey(addr, port), args[0])
		}),
	}
}

func (a *app) serverSetCmd() *cobra.Command {
	var sf serverFlags
	cmd := &cobra.Command{
		Use:   "set SERVICE ADDR:PORT [flags]",
		Short: "Change a real server's weight, thresholds, method, tunnel or admin state",
		Long: "Change a real server. Only the flags given change; the rest are kept.\n\n" + serverArgHelp + `

Example:
  clusterctl server set web 10.0.1.1:80 --weight 0`,
		Args:              exactArgs("SERVICE", "ADDR:PORT"),
		ValidArgsFunction: a.completeArgs(serviceNames, serverKeys),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			patch, ok, err := sf.patch(cmd)
			if err != nil {
				return err
			}
			if !ok {
				return usagef("nothing to change: give at least one of --method, --weight, --upper, --lower, --tunnel, --tunnel-port, --tunnel-checksum, --admin, --check... or --no-check")
			}
			if sf.checks.changed(cmd.Flags()) {
				// The override replaces a check whole: a change of one
				// field starts from the server's own check, else the
				// service's.
				base, err := a.currentCheck(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				if patch.Check, err = sf.checks.apply(cmd.Flags(), base); err != nil {
					return err
				}
			}
			return a.updateServer(cmd, args, patch, "updated")
		}),
	}
	sf.register(cmd, false)
	return cmd
}

func (a *app) serverAdminCmd(use string, state fsm.AdminState, verb, short string) *cobra.Command {
	return &cobra.Command{
		Use:               use + " SERVICE ADDR:PORT",
		Short:             short,
		Long:              short + ".\n\n" + serverArgHelp,
		Args:              exactArgs("SERVICE", "ADDR:PORT"),
		ValidArgsFunction: a.completeArgs(serviceNames, serverKeys),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			return a.updateServer(cmd, args, fsm.ServerPatch{Admin: &state}, verb)
		}),
	}
}

func (a *app) updateServer(cmd *cobra.Command, args []string, patch fsm.ServerPatch, verb string) error {
	if _, err := parseServerArg("ADDR:PORT", args[1]); err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	addr, port, err := resolveServer(cmd.Context(), c, args[0], args[1])
	if err != nil {
		return err
	}
	index, err := c.UpdateServer(cmd.Context(), args[0], addr, port, patch)
	if err != nil {
		return err
	}
	return a.wrote(index, "%s server %s of service %s", verb, fsm.ServerKey(addr, port), args[0])
}

func (a *app) serverLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls SERVICE",
		Aliases: []string{"list"},
		Short:   "List the real servers of a service, with their health",
		Long: `List the real servers of a service with their health: the state the
directors agreed on (HEALTH, committed at SINCE), each director's view when
it was committed, and each live director's view now (as gossip brought it
to the director asked; --consistent asks the leader).

HEALTH "up (pending)" is a checked server with no agreed state yet: it
counts as up. Admin state (drained, disabled) always wins over health.`,
		Args:              exactArgs("SERVICE"),
		ValidArgsFunction: a.completeFirst(serviceNames),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			c, err := a.reader()
			if err != nil {
				return err
			}
			list, index, err := c.Servers(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			sortServers(list)
			if a.json() {
				return a.printJSON(index, nonNil(list))
			}
			h, _, err := c.ServiceHealth(cmd.Context(), args[0])
			var ae *api.Error
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				// The service was just listed, so the endpoint is what is
				// missing: a director older than health checks.
				return serverTable(list).write(a.stdout)
			}
			if err != nil {
				return err
			}
			return serverHealthTable(list, h).write(a.stdout)
		}),
	}
}

func sortServers(list []fsm.RealServer) {
	sort.Slice(list, func(i, j int) bool {
		if c := list[i].Address.Compare(list[j].Address); c != 0 {
			return c < 0
		}
		return list[i].Port < list[j].Port
	})
}

func serverTable(list []fsm.RealServer) *table {
	sortServers(list)
	t := newTable("ADDRESS", "METHOD", "WEIGHT", "UPPER", "LOWER", "ADMIN", "TUNNEL")
	for _, rs := range list {
		t.row(serverRow(rs)...)
	}
	return t
}

// serverRow is a server's row of serverTable.
func serverRow(rs fsm.RealServer) []string {
	tunnel := string(rs.Tunnel)
	if rs.TunnelPort != 0 {
		tunnel += fmt.Sprintf(" port %d", rs.TunnelPort)
	}
	if rs.TunnelChecksum != "" {
		tunnel += " " + string(rs.TunnelChecksum)
	}
	return []string{rs.Key(), string(rs.Method), fmt.Sprint(rs.Weight), itoa0(rs.UpperThreshold), itoa0(rs.LowerThreshold),
		dash(string(rs.Admin)), dash(tunnel)}
}

func serverKeys(ctx context.Context, c *api.Client, args []string) ([]string, error) {
	list, _, err := c.Servers(ctx, args[0])
	keys := make([]string, 0, len(list))
	for _, rs := range list {
		keys = append(keys, rs.Key())
	}
	return keys, err
}

// currentCheck returns the check that applies to a server now: its own,
// else its service's (nil when neither has one), read from the leader.
func (a *app) currentCheck(ctx context.Context, service, server string) (*fsm.CheckConfig, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	svc, _, err := c.Consistent().Service(ctx, service)
	if err != nil {
		return nil, err
	}
	sa, err := parseServerArg("ADDR:PORT", server)
	if err != nil {
		return nil, err
	}
	port := sa.port
	if !sa.hasPort {
		port = svc.Port
	}
	rs, ok := svc.Servers[fsm.ServerKey(sa.addr, port)]
	if !ok {
		return nil, fmt.Errorf("service %s has no real server %s", service, fsm.ServerKey(sa.addr, port))
	}
	if rs.Check != nil {
		return rs.Check, nil
	}
	return svc.Check, nil
}

func (a *app) serverDrainCmd() *cobra.Command {
	var (
		wait         bool
		timeout      time.Duration
		pollInterval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "drain SERVICE ADDR:PORT [--wait [--timeout D]]",
		Short: "Drain a real server: weight 0, established connections stay",
		Long: `Drain a real server: its weight becomes 0 on every director, so it takes
no new connections while established ones finish. Admin state wins over
health: a drained server stays drained whatever its checks say, until
'clusterctl server enable'.

With --wait, clusterctl then polls the active connections of the server in
the leader's kernel IPVS table until they reach 0, or --timeout passes (the
exit status is then 1, and the server stays drained). If leadership moves
during the wait, it asks the new leader, whose kernel now carries the
traffic. Here --timeout bounds the whole wait; each request still has the
default per-request timeout.

` + serverArgHelp + `

Example:
  clusterctl server drain web 10.0.1.1:80 --wait --timeout 5m`,
		Args:              exactArgs("SERVICE", "ADDR:PORT"),
		ValidArgsFunction: a.completeArgs(serviceNames, serverKeys),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("timeout") && !wait {
				return usagef("--timeout needs --wait")
			}
			if timeout <= 0 {
				return usagef("--timeout: %s must be positive", timeout)
			}
			if pollInterval <= 0 {
				return usagef("--poll-interval: %s must be positive", pollInterval)
			}
			state := fsm.Drained
			if err := a.updateServer(cmd, args, fsm.ServerPatch{Admin: &state}, "drained"); err != nil {
				return err
			}
			if !wait {
				return nil
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			addr, port, err := resolveServer(cmd.Context(), c, args[0], args[1])
			if err != nil {
				return err
			}
			return a.drainWait(cmd.Context(), c, args[0], addr, port, timeout, pollInterval)
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&wait, "wait", false, "wait until the server has no active connection in the leader's kernel table")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait, give up after this long")
	f.DurationVar(&pollInterval, "poll-interval", time.Second, "with --wait, how often to read the connection count")
	return cmd
}
