package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

// schedulerNames are offered by completion; the server decides which are valid.
func schedulerNames() []string {
	names := make([]string, len(fsm.Schedulers()))
	for i, s := range fsm.Schedulers() {
		names[i] = string(s)
	}
	return names
}

func (a *app) serviceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "service",
		Aliases: []string{"svc"},
		Short:   "Add, change, remove and list virtual services",
	}
	cmd.AddCommand(a.serviceAddCmd(), a.serviceRmCmd(), a.serviceLsCmd(), a.serviceShowCmd(), a.serviceSetCmd())
	return group(cmd)
}

// schedFlagNames are the kernel's sh and mh scheduler flags, as flags.
func schedFlagNames() []string {
	return []string{"sh-fallback", "sh-port", "mh-fallback", "mh-port"}
}

// addSchedFlags binds the scheduler flags to their fields.
func addSchedFlags(cmd *cobra.Command, sf *fsm.SchedFlags) {
	f := cmd.Flags()
	f.BoolVar(&sf.SHFallback, "sh-fallback", false, "sh: pick another server when the hashed one is unavailable")
	f.BoolVar(&sf.SHPort, "sh-port", false, "sh: hash the source port too")
	f.BoolVar(&sf.MHFallback, "mh-fallback", false, "mh: pick another server when the hashed one is unavailable")
	f.BoolVar(&sf.MHPort, "mh-port", false, "mh: hash the source port too")
}

func registerServiceCompletions(cmd *cobra.Command) {
	_ = cmd.RegisterFlagCompletionFunc("scheduler", fixed(schedulerNames()...))
	_ = cmd.RegisterFlagCompletionFunc("method", fixed("nat", "dr", "tun"))
}

func (a *app) serviceAddCmd() *cobra.Command {
	var (
		svc                   fsm.Service
		proto, family, method string
		scheduler             string
		fwmark                int64
		persistent, prefixLen int
		hf                    healthFlags
	)
	cmd := &cobra.Command{
		Use:   "add NAME (--vip VIP --port N [--proto tcp|udp|sctp] | --fwmark N [--vip VIP | --family inet|inet6])",
		Short: "Add a virtual service",
		Long: `Add a virtual service: a VIP, protocol and port, or a firewall mark.

As with ipvsadm, the scheduler defaults to wlc and the forwarding method of
real servers added without one defaults to dr (ipvsadm -g, "gatewaying",
direct routing). DR and TUN cannot remap ports: their real servers listen
on the service port. NAT (masq) may remap.

Examples:
  clusterctl service add web --vip web-vip --port 80
  clusterctl service add dns --vip dns-vip --proto udp --port 53 --scheduler rr --one-packet
  clusterctl service add mail --fwmark 7 --vip mail-vip --persistent 300 --method nat
  clusterctl service add web --vip web-vip --port 80 --check http --check-path /health \
      --quorum 2 --sorry 10.0.9.9:80`,
		Args: exactArgs("NAME"),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			svc.Name = args[0]
			svc.Scheduler = fsm.Scheduler(scheduler)
			if scheduler == "" {
				return usagef("--scheduler: must not be empty")
			}
			if f.Changed("fwmark") {
				if fwmark < 1 || fwmark > 1<<32-1 {
					return usagef("--fwmark: %d is out of range 1-4294967295", fwmark)
				}
				svc.FWMark = fwmark
			} else {
				if err := checkRange("port", svc.Port, 1, 65535); err != nil {
					return err
				}
				if svc.VIP == "" {
					return usagef("--vip is required for a --port service (only a --fwmark service may go without)")
				}
				p, err := parseProtocol(proto)
				if err != nil {
					return err
				}
				svc.Protocol = p
			}
			if f.Changed("family") {
				fam, err := parseFamily(family)
				if err != nil {
					return err
				}
				svc.Family = fam
			}
			m, err := parseMethod("method", method)
			if err != nil {
				return err
			}
			svc.Method = m
			if f.Changed("persistent") {
				if persistent < 1 {
					return usagef("--persistent: %d must be a positive number of seconds", persistent)
				}
				if err := checkRange("persistence-prefix", prefixLen, 0, 128); err != nil {
					return err
				}
				svc.Persistence = &fsm.Persistence{Timeout: persistent, PrefixLen: prefixLen}
			} else if f.Changed("persistence-prefix") {
				return usagef("--persistence-prefix needs --persistent SECONDS")
			}
			if err := hf.applyToService(f, &svc); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.AddService(cmd.Context(), svc)
			if err != nil {
				return err
			}
			return a.wrote(index, "added service %s", svc.Name)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&svc.VIP, "vip", "", "name of the VIP the service listens on (see 'vip ls')")
	f.StringVar(&proto, "proto", "tcp", "protocol of a --port service: tcp, udp or sctp")
	f.IntVar(&svc.Port, "port", 0, "port the service listens on")
	f.Int64Var(&fwmark, "fwmark", 0, "firewall mark of a fwmark service, instead of --proto and --port")
	f.StringVar(&family, "family", "", "address family of a fwmark service without --vip: inet or inet6")
	f.StringVar(&scheduler, "scheduler", "wlc", "scheduler: "+strings.Join(schedulerNames(), ", "))
	addSchedFlags(cmd, &svc.SchedFlags)
	f.IntVar(&persistent, "persistent", 0, "make clients stick to one real server for this many seconds")
	f.IntVar(&prefixLen, "persistence-prefix", 0, "with --persistent, group clients by this prefix length (default: the whole address)")
	f.BoolVar(&svc.OnePacket, "one-packet", false, "schedule each UDP datagram on its own (ipvsadm -o)")
	f.StringVar(&method, "method", "dr", "default forwarding method of its real servers: nat, dr or tun (ipvsadm's -m, -g, -i)")
	hf.register(cmd, false)
	cmd.MarkFlagsOneRequired("port", "fwmark")
	cmd.MarkFlagsMutuallyExclusive("port", "fwmark")
	cmd.MarkFlagsMutuallyExclusive("proto", "fwmark")
	_ = cmd.RegisterFlagCompletionFunc("vip", a.completeFlag(vipNames))
	_ = cmd.RegisterFlagCompletionFunc("proto", fixed("tcp", "udp", "sctp"))
	_ = cmd.RegisterFlagCompletionFunc("family", fixed("inet", "inet6"))
	registerServiceCompletions(cmd)
	return cmd
}

func (a *app) serviceRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "rm NAME",
		Aliases:           []string{"remove", "delete"},
		Short:             "Remove a virtual service and its real servers",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: a.completeFirst(serviceNames),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.DeleteService(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.wrote(index, "removed service %s", args[0])
		}),
	}
}

func (a *app) serviceLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the virtual services",
		Args:    exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			c, err := a.reader()
			if err != nil {
				return err
			}
			list, index, err := c.Services(cmd.Context())
			if err != nil {
				return err
			}
			sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
			if a.json() {
				return a.printJSON(index, nonNil(list))
			}
			t := newTable("NAME", "VIP", "SERVICE", "SCHEDULER", "METHOD", "PERSISTENT", "SERVERS", "WEIGHT")
			for _, s := range list {
				t.row(s.Name, dash(s.VIP), endpoint(s.Service), schedulerText(s.Service), string(s.Method),
					persistenceText(s.Persistence), fmt.Sprint(s.ServerCount), fmt.Sprint(s.ActiveWeight))
			}
			return t.write(a.stdout)
		}),
	}
}

func (a *app) serviceShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "show NAME",
		Aliases:           []string{"get"},
		Short:             "Show a virtual service and its real servers",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: a.completeFirst(serviceNames),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			c, err := a.reader()
			if err != nil {
				return err
			}
			s, index, err := c.Service(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(index, s)
			}
			kv := newTable()
			kv.row("Name:", s.Name)
			kv.row("VIP:", dash(s.VIP))
			kv.row("Service:", endpoint(s))
			kv.row("Scheduler:", schedulerText(s))
			kv.row("Method:", string(s.Method))
			kv.row("Persistent:", persistenceText(s.Persistence))
			kv.row("One-packet:", yesNo(s.OnePacket))
			if s.Check != nil {
				kv.row("Check:", checkText(s.Check))
			}
			if s.DownAction != "" {
				kv.row("Down action:", string(s.DownAction))
			}
			if q := s.EffectiveQuorum(); q > 0 {
				state := "held"
				if s.QuorumLost {
					state = "LOST"
				}
				kv.row("Quorum:", fmt.Sprintf("%d (hysteresis %d, healthy weight %d): %s", q, s.QuorumHysteresis, fsm.HealthyWeight(&s), state))
			}
			if s.Sorry != nil {
				sorry := fsm.ServerKey(s.Sorry.Address, s.Sorry.Port)
				if s.Sorry.Method != "" {
					sorry += " " + string(s.Sorry.Method)
				}
				kv.row("Sorry server:", sorry)
			}
			kv.row("Index:", fmt.Sprint(index))
			if err := kv.write(a.stdout); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout)
			servers := make([]fsm.RealServer, 0, len(s.Servers))
			for _, rs := range s.Servers {
				servers = append(servers, *rs)
			}
			return serverTable(servers).write(a.stdout)
		}),
	}
}

func (a *app) serviceSetCmd() *cobra.Command {
	var (
		scheduler, method     string
		sf                    fsm.SchedFlags
		persistent, prefixLen int
		noPersistent          bool
		onePacket             bool
		hf                    healthFlags
	)
	cmd := &cobra.Command{
		Use:   "set NAME [flags]",
		Short: "Change a virtual service's scheduling, persistence or default method",
		Long: `Change the settings of a virtual service. Only the flags given change;
the rest are kept. The VIP, protocol, port and firewall mark are the
service's identity and cannot change: remove and add it instead.

Examples:
  clusterctl service set web --scheduler sh --sh-port
  clusterctl service set web --persistent 600
  clusterctl service set web --no-persistent
  clusterctl service set dns --one-packet=false
  clusterctl service set web --check-path /ready --check-fall 2
  clusterctl service set web --quorum 3 --quorum-hysteresis 1 --down-action remove`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: a.completeFirst(serviceNames),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			f := cmd.Flags()
			var patch fsm.ServicePatch
			changed := false
			if f.Changed("scheduler") {
				if scheduler == "" {
					return usagef("--scheduler: must not be empty")
				}
				s := fsm.Scheduler(scheduler)
				patch.Scheduler = &s
				changed = true
			}
			if f.Changed("method") {
				m, err := parseMethod("method", method)
				if err != nil {
					return err
				}
				patch.Method = &m
				changed = true
			}
			if f.Changed("one-packet") {
				patch.OnePacket = &onePacket
				changed = true
			}
			if f.Changed("no-persistent") && noPersistent {
				patch.NoPersistence = true
				changed = true
			}
			if f.Changed("persistent") && persistent < 1 {
				return usagef("--persistent: %d must be a positive number of seconds", persistent)
			}
			if f.Changed("persistence-prefix") {
				if err := checkRange("persistence-prefix", prefixLen, 0, 128); err != nil {
					return err
				}
			}
			schedChanged := false
			for _, n := range schedFlagNames() {
				schedChanged = schedChanged || f.Changed(n)
			}
			persistChanged := f.Changed("persistent") || f.Changed("persistence-prefix")
			healthChanged := hf.anyChanged(f)
			if !changed && !schedChanged && !persistChanged && !healthChanged {
				return usagef("nothing to change: give at least one of --scheduler, --%s, --persistent, --persistence-prefix, --no-persistent, --one-packet, --method, --check..., --no-check, --down-action, --quorum, --quorum-hysteresis, --sorry or --no-sorry",
					strings.Join(schedFlagNames(), ", --"))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			// The patch replaces the scheduler flags and the persistence as
			// wholes, so a partial change starts from the leader's current
			// values.
			var cur fsm.Service
			// A partial check change, and a sorry server given as a bare
			// address, start from the leader's current service as well.
			needCur := healthChanged && (hf.checks.changed(f) || f.Changed("sorry"))
			if needCur || schedChanged || (persistChanged && !(f.Changed("persistent") && f.Changed("persistence-prefix"))) {
				cur, _, err = c.Consistent().Service(cmd.Context(), name)
				if err != nil {
					return err
				}
			}
			if schedChanged {
				flags := cur.SchedFlags
				setIfChanged(f.Changed("sh-fallback"), &flags.SHFallback, sf.SHFallback)
				setIfChanged(f.Changed("sh-port"), &flags.SHPort, sf.SHPort)
				setIfChanged(f.Changed("mh-fallback"), &flags.MHFallback, sf.MHFallback)
				setIfChanged(f.Changed("mh-port"), &flags.MHPort, sf.MHPort)
				patch.SchedFlags = &flags
			}
			if persistChanged {
				var p fsm.Persistence
				if cur.Persistence != nil {
					p = *cur.Persistence
				}
				setIfChanged(f.Changed("persistent"), &p.Timeout, persistent)
				setIfChanged(f.Changed("persistence-prefix"), &p.PrefixLen, prefixLen)
				if p.Timeout == 0 {
					return usagef("--persistence-prefix: service %s is not persistent; give --persistent SECONDS too", name)
				}
				patch.Persistence = &p
			}
			if healthChanged {
				if err := hf.patchService(f, cur, &patch); err != nil {
					return err
				}
			}
			index, err := c.UpdateService(cmd.Context(), name, patch)
			if err != nil {
				return err
			}
			return a.wrote(index, "updated service %s", name)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&scheduler, "scheduler", "", "scheduler: "+strings.Join(schedulerNames(), ", "))
	addSchedFlags(cmd, &sf)
	f.IntVar(&persistent, "persistent", 0, "make clients stick to one real server for this many seconds")
	f.IntVar(&prefixLen, "persistence-prefix", 0, "group persistent clients by this prefix length (0: the whole address)")
	f.BoolVar(&noPersistent, "no-persistent", false, "turn persistence off")
	f.BoolVar(&onePacket, "one-packet", false, "schedule each UDP datagram on its own: --one-packet=true or --one-packet=false")
	f.StringVar(&method, "method", "", "default forwarding method of real servers added without one: nat, dr or tun")
	cmd.MarkFlagsMutuallyExclusive("persistent", "no-persistent")
	cmd.MarkFlagsMutuallyExclusive("persistence-prefix", "no-persistent")
	hf.register(cmd, true)
	registerServiceCompletions(cmd)
	return cmd
}

func setIfChanged[T any](changed bool, dst *T, v T) {
	if changed {
		*dst = v
	}
}

// endpoint names what a service listens on: "tcp/80" or "fwmark 7".
func endpoint(s fsm.Service) string {
	if s.FWMark != 0 {
		e := fmt.Sprintf("fwmark %d", s.FWMark)
		if s.Family != "" {
			e += " " + string(s.Family)
		}
		return e
	}
	return fmt.Sprintf("%s/%d", s.Protocol, s.Port)
}

func schedulerText(s fsm.Service) string {
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{
		{s.SchedFlags.SHFallback, "sh-fallback"},
		{s.SchedFlags.SHPort, "sh-port"},
		{s.SchedFlags.MHFallback, "mh-fallback"},
		{s.SchedFlags.MHPort, "mh-port"},
	} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	if len(flags) == 0 {
		return string(s.Scheduler)
	}
	return fmt.Sprintf("%s (%s)", s.Scheduler, strings.Join(flags, ","))
}

func persistenceText(p *fsm.Persistence) string {
	if p == nil {
		return "-"
	}
	if p.PrefixLen > 0 {
		return fmt.Sprintf("%ds /%d", p.Timeout, p.PrefixLen)
	}
	return fmt.Sprintf("%ds", p.Timeout)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func serviceNames(ctx context.Context, c *api.Client, _ []string) ([]string, error) {
	list, _, err := c.Services(ctx)
	names := make([]string, 0, len(list))
	for _, s := range list {
		names = append(names, s.Name)
	}
	return names, err
}
