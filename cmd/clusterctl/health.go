package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// checkKinds are the health check kinds, for help and completion.
var checkKinds = []string{fsm.CheckTCP, fsm.CheckHTTP, fsm.CheckHTTPS, fsm.CheckDNS, fsm.CheckExec, fsm.CheckNone}

// checkFlags are the --check-* flags of a service's default check or a
// real server's override.
type checkFlags struct {
	kind                                    string
	port, rise, fall                        int
	interval, timeout, jitter               time.Duration
	path, host, expect, body                string
	tlsVerify                               bool
	serverName, dnsName, dnsType, dnsExpect string
	command                                 string
	none                                    bool
}

func (cf *checkFlags) register(cmd *cobra.Command, noCheckHelp string) {
	f := cmd.Flags()
	f.StringVar(&cf.kind, "check", "", "health check: "+strings.Join(checkKinds, ", ")+" (none: always up)")
	f.IntVar(&cf.port, "check-port", 0, "port to check (default: the real server's port)")
	f.DurationVar(&cf.interval, "check-interval", 0, "time between checks (default 2s)")
	f.DurationVar(&cf.timeout, "check-timeout", 0, "time one check may take (default 1s)")
	f.DurationVar(&cf.jitter, "check-jitter", 0, "random delay of each check, below the interval")
	f.IntVar(&cf.rise, "check-rise", 0, "successes in a row that bring a server up (default 2)")
	f.IntVar(&cf.fall, "check-fall", 0, "failures in a row that take a server down (default 3)")
	f.StringVar(&cf.path, "check-path", "", "http(s): path to GET (default /)")
	f.StringVar(&cf.host, "check-host", "", "http(s): Host header")
	f.StringVar(&cf.expect, "check-expect", "", `http(s): expected status codes, such as "200-299,301" (default 200-399)`)
	f.StringVar(&cf.body, "check-body", "", "http(s): regexp the body must match")
	f.BoolVar(&cf.tlsVerify, "check-tls-verify", false, "https: verify the server's certificate")
	f.StringVar(&cf.serverName, "check-server-name", "", "https: TLS server name (SNI and verification)")
	f.StringVar(&cf.dnsName, "check-dns-name", "", "dns: name to query")
	f.StringVar(&cf.dnsType, "check-dns-type", "", "dns: query type (default A)")
	f.StringVar(&cf.dnsExpect, "check-dns-expect", "", "dns: regexp one answer must match")
	f.StringVar(&cf.command, "check-command", "", "exec: shell command; exit 0 is up ($DIRECTORATE_CHECK_ADDR, $DIRECTORATE_CHECK_PORT)")
	f.BoolVar(&cf.none, "no-check", false, noCheckHelp)
	cmd.MarkFlagsMutuallyExclusive("check", "no-check")
	_ = cmd.RegisterFlagCompletionFunc("check", fixed(checkKinds...))
}

// checkFlagNames are the flags that change a check, --check included.
func checkFlagNames(f *pflag.FlagSet) []string {
	var names []string
	f.VisitAll(func(fl *pflag.Flag) {
		if fl.Name == "check" || strings.HasPrefix(fl.Name, "check-") {
			names = append(names, fl.Name)
		}
	})
	return names
}

// changed reports whether any flag of the check was given.
func (cf *checkFlags) changed(f *pflag.FlagSet) bool {
	return slices.ContainsFunc(checkFlagNames(f), f.Changed)
}

// apply returns base (nil: no check yet) with the given flags applied. The
// replicated state replaces a check whole, so a change of one field starts
// from the current check.
func (cf *checkFlags) apply(f *pflag.FlagSet, base *fsm.CheckConfig) (*fsm.CheckConfig, error) {
	var c fsm.CheckConfig
	if base != nil {
		c = *base
	}
	if f.Changed("check") {
		if !slices.Contains(checkKinds, cf.kind) {
			return nil, usagef("--check: %q is not a check kind: want one of %s", cf.kind, strings.Join(checkKinds, ", "))
		}
		if cf.kind != c.Kind {
			// Fields of another kind would be refused; keep the timing.
			c = fsm.CheckConfig{Kind: cf.kind, Port: c.Port, Interval: c.Interval, Timeout: c.Timeout, Jitter: c.Jitter, Rise: c.Rise, Fall: c.Fall}
		}
	}
	if c.Kind == "" {
		return nil, usagef("--check: give the kind of check (%s) with the other --check-* flags", strings.Join(checkKinds, ", "))
	}
	if f.Changed("check-port") {
		if err := checkRange("check-port", cf.port, 0, 65535); err != nil {
			return nil, err
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"check-interval", cf.interval}, {"check-timeout", cf.timeout}, {"check-jitter", cf.jitter}} {
		if f.Changed(d.flag) && d.v < 0 {
			return nil, usagef("--%s: %s must not be negative", d.flag, d.v)
		}
	}
	setIfChanged(f.Changed("check-port"), &c.Port, cf.port)
	setIfChanged(f.Changed("check-interval"), &c.Interval, fsm.Duration(cf.interval))
	setIfChanged(f.Changed("check-timeout"), &c.Timeout, fsm.Duration(cf.timeout))
	setIfChanged(f.Changed("check-jitter"), &c.Jitter, fsm.Duration(cf.jitter))
	setIfChanged(f.Changed("check-rise"), &c.Rise, cf.rise)
	setIfChanged(f.Changed("check-fall"), &c.Fall, cf.fall)
	setIfChanged(f.Changed("check-path"), &c.Path, cf.path)
	setIfChanged(f.Changed("check-host"), &c.Host, cf.host)
	setIfChanged(f.Changed("check-expect"), &c.ExpectStatus, cf.expect)
	setIfChanged(f.Changed("check-body"), &c.BodyRegex, cf.body)
	setIfChanged(f.Changed("check-tls-verify"), &c.TLSVerify, cf.tlsVerify)
	setIfChanged(f.Changed("check-server-name"), &c.ServerName, cf.serverName)
	setIfChanged(f.Changed("check-dns-name"), &c.DNSName, cf.dnsName)
	setIfChanged(f.Changed("check-dns-type"), &c.DNSType, cf.dnsType)
	setIfChanged(f.Changed("check-dns-expect"), &c.DNSExpect, cf.dnsExpect)
	setIfChanged(f.Changed("check-command"), &c.Command, cf.command)
	return &c, nil
}

// healthFlags are a service's health settings besides its check.
type healthFlags struct {
	downAction         string
	quorum, hysteresis int
	sorry, sorryMethod string
	noSorry            bool
	checks             checkFlags
}

func (hf *healthFlags) register(cmd *cobra.Command, set bool) {
	f := cmd.Flags()
	hf.checks.register(cmd, "remove the service's default check (its servers count as up)")
	f.StringVar(&hf.downAction, "down-action", "", "what a server found down becomes: quiesce (weight 0, established connections stay; the default) or remove")
	f.IntVar(&hf.quorum, "quorum", 0, "least total weight of healthy servers; below it the sorry server takes the traffic (0: none, or 1 with --sorry)")
	f.IntVar(&hf.hysteresis, "quorum-hysteresis", 0, "quorum is lost below quorum-N and regained at quorum+N")
	f.StringVar(&hf.sorry, "sorry", "", "sorry server ADDR:PORT, which takes the traffic while the service is below its quorum")
	f.StringVar(&hf.sorryMethod, "sorry-method", "", "forwarding method of the sorry server (default: the service's)")
	_ = cmd.RegisterFlagCompletionFunc("down-action", fixed(string(fsm.DownQuiesce), string(fsm.DownRemove)))
	_ = cmd.RegisterFlagCompletionFunc("sorry-method", fixed("nat", "dr", "tun"))
	if set {
		f.BoolVar(&hf.noSorry, "no-sorry", false, "remove the sorry server")
		cmd.MarkFlagsMutuallyExclusive("sorry", "no-sorry")
	}
}

// sorryServer parses --sorry and --sorry-method; port is the service's,
// for a bare address.
func (hf *healthFlags) sorryServer(f *pflag.FlagSet, servicePort int) (*fsm.SorryServer, error) {
	if !f.Changed("sorry") {
		if f.Changed("sorry-method") {
			return nil, usagef("--sorry-method needs --sorry ADDR:PORT")
		}
		return nil, nil
	}
	sa, err := parseServerArg("sorry", hf.sorry)
	if err != nil {
		return nil, err
	}
	s := &fsm.SorryServer{Address: sa.addr, Port: sa.port}
	if !sa.hasPort {
		s.Port = servicePort
	}
	if f.Changed("sorry-method") {
		m, err := parseMethod("sorry-method", hf.sorryMethod)
		if err != nil {
			return nil, err
		}
		s.Method = m
	}
	return s, nil
}

func (hf *healthFlags) parseDownAction() (fsm.DownAction, error) {
	switch a := fsm.DownAction(hf.downAction); a {
	case fsm.DownQuiesce, fsm.DownRemove:
		return a, nil
	}
	return "", usagef("--down-action: %q is not quiesce or remove", hf.downAction)
}

// applyToService sets a new service's health fields from the flags.
func (hf *healthFlags) applyToService(f *pflag.FlagSet, svc *fsm.Service) error {
	if hf.checks.none {
		return usagef("--no-check: a new service has no check to remove")
	}
	if hf.checks.changed(f) {
		c, err := hf.checks.apply(f, nil)
		if err != nil {
			return err
		}
		svc.Check = c
	}
	if f.Changed("down-action") {
		a, err := hf.parseDownAction()
		if err != nil {
			return err
		}
		svc.DownAction = a
	}
	if err := hf.checkQuorum(f); err != nil {
		return err
	}
	svc.Quorum, svc.QuorumHysteresis = hf.quorum, hf.hysteresis
	s, err := hf.sorryServer(f, svc.Port)
	if err != nil {
		return err
	}
	svc.Sorry = s
	return nil
}

func (hf *healthFlags) checkQuorum(f *pflag.FlagSet) error {
	if f.Changed("quorum") && hf.quorum < 0 {
		return usagef("--quorum: %d must not be negative", hf.quorum)
	}
	if f.Changed("quorum-hysteresis") && hf.hysteresis < 0 {
		return usagef("--quorum-hysteresis: %d must not be negative", hf.hysteresis)
	}
	return nil
}

// anyChanged reports whether a health flag of service set was given.
func (hf *healthFlags) anyChanged(f *pflag.FlagSet) bool {
	return hf.checks.changed(f) || slices.ContainsFunc([]string{"no-check", "down-action", "quorum", "quorum-hysteresis", "sorry", "sorry-method", "no-sorry"}, f.Changed)
}

// patchService adds the health flags to a service patch; cur is the
// service as the leader has it, which a partial check change starts from.
func (hf *healthFlags) patchService(f *pflag.FlagSet, cur fsm.Service, p *fsm.ServicePatch) error {
	if hf.checks.changed(f) {
		c, err := hf.checks.apply(f, cur.Check)
		if err != nil {
			return err
		}
		p.Check = c
	}
	p.NoCheck = hf.checks.none
	if f.Changed("down-action") {
		a, err := hf.parseDownAction()
		if err != nil {
			return err
		}
		p.DownAction = &a
	}
	if err := hf.checkQuorum(f); err != nil {
		return err
	}
	if f.Changed("quorum") {
		p.Quorum = &hf.quorum
	}
	if f.Changed("quorum-hysteresis") {
		p.QuorumHysteresis = &hf.hysteresis
	}
	s, err := hf.sorryServer(f, cur.Port)
	if err != nil {
		return err
	}
	p.Sorry = s
	p.NoSorry = hf.noSorry
	return nil
}

// checkText describes a check in one short phrase.
func checkText(c *fsm.CheckConfig) string {
	if c == nil {
		return "-"
	}
	parts := []string{c.Kind}
	if c.Port != 0 {
		parts = append(parts, fmt.Sprintf("port %d", c.Port))
	}
	if c.Path != "" {
		parts = append(parts, c.Path)
	}
	if c.Kind != fsm.CheckNone {
		parts = append(parts, fmt.Sprintf("every %s, timeout %s, rise %d, fall %d", c.Interval, c.Timeout, c.Rise, c.Fall))
	}
	return strings.Join(parts, " ")
}

// viewsText prints per-director views compactly: "d1=up d2=up d3=down".
func viewsText(v map[string]string) string {
	if len(v) == 0 {
		return "-"
	}
	ids := make([]string, 0, len(v))
	for id := range v {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = id + "=" + v[id]
	}
	return strings.Join(parts, " ")
}

// serverHealthTable is serverTable with, when any server is checked, each
// server's check, its committed health (SINCE is the raft index of the
// transition), each director's view at that commit, and each live
// director's view now.
func serverHealthTable(list []fsm.RealServer, h api.ServiceHealth) *table {
	byKey := map[string]api.ServerHealth{}
	checked := false
	for _, s := range h.Servers {
		byKey[s.Server] = s
		checked = checked || s.Check != ""
	}
	if !checked {
		return serverTable(list)
	}
	sortServers(list)
	t := newTable("ADDRESS", "METHOD", "WEIGHT", "UPPER", "LOWER", "ADMIN", "TUNNEL", "CHECK", "HEALTH", "SINCE", "COMMITTED", "LIVE")
	for _, rs := range list {
		sh := byKey[rs.Key()]
		health, since := "-", "-"
		switch {
		case sh.Check == "":
			health = "unchecked"
		case sh.State == "":
			health = "up (pending)"
		default:
			health = sh.State
			since = fmt.Sprintf("index %d", sh.Index)
		}
		t.row(append(serverRow(rs), dash(sh.Check), health, since, viewsText(sh.Views), viewsText(sh.Live))...)
	}
	return t
}

// drainWait polls the leader's kernel table until the server has no
// active connection or timeout passes, printing progress on stderr.
func (a *app) drainWait(ctx context.Context, c *api.Client, service string, addr netip.Addr, port int, timeout, every time.Duration) error {
	deadline := time.Now().Add(timeout)
	key := fsm.ServerKey(addr, port)
	last := -1
	for {
		conns, _, err := c.Connections(ctx, service, addr, port)
		if err != nil && leaderChanging(err) {
			// A failover in the middle of a long drain: ask the
			// next leader, whose kernel now carries the traffic.
			left := time.Until(deadline)
			if left <= 0 {
				return &drainTimeout{key: key, service: service, active: last, after: timeout, cause: err}
			}
			if last != -2 {
				fmt.Fprintf(a.stderr, "waiting: no leader to ask (%v); retrying\n", err)
				last = -2
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(every, left)):
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("read the connections of %s: %w", key, err)
		}
		if conns.Active == 0 {
			_, err := fmt.Fprintf(a.stdout, "drained: %s of service %s has no active connection (%d inactive) on leader %s\n", key, service, conns.Inactive, conns.Node)
			return err
		}
		if conns.Active != last {
			fmt.Fprintf(a.stderr, "waiting: %s has %d active connections on leader %s\n", key, conns.Active, conns.Node)
			last = conns.Active
		}
		left := time.Until(deadline)
		if left <= 0 {
			return &drainTimeout{key: key, service: service, active: conns.Active, after: timeout}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(every, left)):
		}
	}
}

// leaderChanging reports whether err means leadership is moving, so the
// same question is worth asking again shortly.
func leaderChanging(err error) bool {
	var ae *api.Error
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.Code {
	case api.CodeNotLeader, api.CodeNoLeader, api.CodeUnavailable:
		return true
	}
	return false
}

// drainTimeout is the result of a drain whose connections did not finish
// in time: the server stays drained.
type drainTimeout struct {
	key, service string
	active       int
	after        time.Duration
	// cause, when set, is why no leader could be asked at the end.
	cause error
}

func (e *drainTimeout) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("--timeout: no leader could tell the connections of %s of service %s after %s (%v); it stays drained (weight 0)", e.key, e.service, e.after, e.cause)
	}
	return fmt.Sprintf("--timeout: %s of service %s still has %d active connections after %s; it stays drained (weight 0)", e.key, e.service, e.active, e.after)
}
