package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
)

func (a *app) ipvsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ipvs",
		Short: "Inspect a director's kernel IPVS table",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Show the director's kernel IPVS table next to the desired state",
		Long: `Show the kernel IPVS table of the director at --addr, like 'ipvsadm -Ln',
next to the state Directorate wants there. The DIFF column flags each
difference:

  missing  desired but not in the kernel
  extra    in the kernel but not desired (a destination of a managed service)
  changed  in both, with different settings (the actual value is shown,
           the desired one in the DIFF column)
  foreign  a kernel service Directorate does not manage and leaves alone

The last line says "in sync" or counts the differences. The exit status is
0 either way; use -o json and its in_sync field in scripts. --consistent
does not apply: it would show the leader's table instead.`,
		Args: exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			// Deliberately not a.reader(): the table is this director's.
			c, err := a.client()
			if err != nil {
				return err
			}
			rep, index, err := c.IPVS(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(index, rep)
			}
			return a.printIPVS(rep)
		}),
	})
	return group(cmd)
}

func (a *app) printIPVS(rep api.IPVSReport) error {
	fmt.Fprintf(a.stdout, "director %s (%s backend), configuration index %d\n", dash(rep.Node), dash(rep.Backend), rep.Index)
	t := newTable("PROT", "ADDRESS", "SCHEDULER", "FORWARD", "WEIGHT", "ACTIVECONN", "INACTCONN", "FLAGS", "SERVICE", "DIFF")
	diffs, foreign, retiring := 0, 0, 0
	for _, s := range rep.Services {
		prot, addr, _ := strings.Cut(s.Key, " ")
		attrs := s.Actual
		if attrs == nil {
			attrs = s.Desired
		}
		var sched, flags string
		if attrs != nil {
			sched, flags = attrs.Scheduler, serviceFlagsText(attrs)
		}
		switch s.Diff {
		case "":
		case "foreign":
			foreign++
		default:
			diffs++
		}
		t.row(prot, addr, sched, "", "", "", "", flags, s.Name, serviceDiffText(s))
		for _, d := range s.Destinations {
			da := d.Actual
			if da == nil {
				da = d.Desired
			}
			var fwd, weight, dflags string
			if da != nil {
				fwd, weight, dflags = forwardName(da.Method), fmt.Sprint(da.Weight), thresholdsText(da)
			}
			// Counters exist only in the kernel.
			active, inact := "-", "-"
			if d.Actual != nil {
				active, inact = fmt.Sprint(d.Actual.ActiveConns), fmt.Sprint(d.Actual.InactiveConns)
			}
			switch d.Diff {
			case "":
			case "retiring":
				retiring++
			default:
				diffs++
			}
			t.row("  ->", d.Address, "", fwd, weight, active, inact, dflags, "", destDiffText(d))
		}
	}
	if err := t.write(a.stdout); err != nil {
		return err
	}
	var summary string
	switch {
	case diffs > 0:
		summary = plural(diffs, "difference")
	case rep.InSync:
		summary = "in sync"
	default:
		summary = "not in sync (clusterd reports a difference it did not itemise)"
	}
	if retiring > 0 {
		summary += fmt.Sprintf("; %s removed, at weight 0 until %s connections end", plural(retiring, "destination"), map[bool]string{true: "its", false: "their"}[retiring == 1])
	}
	if foreign > 0 {
		summary += fmt.Sprintf("; %s not managed by Directorate", plural(foreign, "foreign service"))
	}
	_, err := fmt.Fprintln(a.stdout, summary)
	return err
}

// forwardName shows a method as ipvsadm -L does.
func forwardName(m string) string {
	switch strings.ToLower(m) {
	case "nat", "masq":
		return "Masq"
	case "dr", "route":
		return "Route"
	case "tun", "tunnel":
		return "Tunnel"
	case "local":
		return "Local"
	}
	return m
}

func serviceFlagsText(s *api.IPVSServiceAttrs) string {
	parts := append([]string(nil), s.Flags...)
	if s.Timeout > 0 {
		parts = append(parts, fmt.Sprintf("persistent %d", s.Timeout))
	}
	if s.Netmask != "" {
		parts = append(parts, "mask "+s.Netmask)
	}
	return strings.Join(parts, " ")
}

func thresholdsText(d *api.IPVSDestAttrs) string {
	var parts []string
	if d.Upper > 0 {
		parts = append(parts, fmt.Sprintf("upper %d", d.Upper))
	}
	if d.Lower > 0 {
		parts = append(parts, fmt.Sprintf("lower %d", d.Lower))
	}
	return strings.Join(parts, " ")
}

// change describes one differing setting: the kernel's value and the
// desired one.
func change(what, actual, desired string) string {
	return fmt.Sprintf("%s %s (want %s)", what, dash(actual), dash(desired))
}

func serviceDiffText(s api.IPVSService) string {
	if s.Diff != "changed" || s.Desired == nil || s.Actual == nil {
		return s.Diff
	}
	var parts []string
	d, k := s.Desired, s.Actual
	if d.Scheduler != k.Scheduler {
		parts = append(parts, change("scheduler", k.Scheduler, d.Scheduler))
	}
	if df, kf := strings.Join(d.Flags, ","), strings.Join(k.Flags, ","); df != kf {
		parts = append(parts, change("flags", kf, df))
	}
	if d.Timeout != k.Timeout {
		parts = append(parts, change("persistent", fmt.Sprint(k.Timeout), fmt.Sprint(d.Timeout)))
	}
	if d.Netmask != k.Netmask {
		parts = append(parts, change("mask", k.Netmask, d.Netmask))
	}
	if len(parts) == 0 {
		return s.Diff
	}
	return "changed: " + strings.Join(parts, ", ")
}

func destDiffText(dst api.IPVSDestination) string {
	if dst.Diff != "changed" || dst.Desired == nil || dst.Actual == nil {
		return dst.Diff
	}
	var parts []string
	d, k := dst.Desired, dst.Actual
	if forwardName(d.Method) != forwardName(k.Method) {
		parts = append(parts, change("forward", forwardName(k.Method), forwardName(d.Method)))
	}
	if d.Weight != k.Weight {
		parts = append(parts, change("weight", fmt.Sprint(k.Weight), fmt.Sprint(d.Weight)))
	}
	if d.Upper != k.Upper {
		parts = append(parts, change("upper", fmt.Sprint(k.Upper), fmt.Sprint(d.Upper)))
	}
	if d.Lower != k.Lower {
		parts = append(parts, change("lower", fmt.Sprint(k.Lower), fmt.Sprint(d.Lower)))
	}
	if len(parts) == 0 {
		return dst.Diff
	}
	return "changed: " + strings.Join(parts, ", ")
}
