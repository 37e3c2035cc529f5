package main

import (
	"context"
	"net/netip"
	"sort"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
	"github.com/directorate/directorate/fsm"
)

func (a *app) vipCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vip",
		Short: "Add, remove and list the virtual addresses the leader claims",
	}
	cmd.AddCommand(a.vipAddCmd(), a.vipRmCmd(), a.vipLsCmd())
	return group(cmd)
}

func (a *app) vipAddCmd() *cobra.Command {
	var iface string
	cmd := &cobra.Command{
		Use:   "add NAME PREFIX",
		Short: "Add a VIP, such as 'vip add web 192.0.2.10/24'",
		Long: `Add a VIP. PREFIX is the address with its prefix length, as 'ip addr add'
takes it (192.0.2.10/24, 2001:db8::10/64); a bare address means a host
route (/32 or /128). The leader adds it to the interface whose subnet
contains it, unless --interface pins it.`,
		Args: exactArgs("NAME", "PREFIX"),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			prefix, err := parsePrefix(args[1])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.AddVIP(cmd.Context(), fsm.VIP{Name: args[0], Prefix: prefix, Interface: iface})
			if err != nil {
				return err
			}
			return a.wrote(index, "added VIP %s %s", args[0], prefix)
		}),
	}
	cmd.Flags().StringVar(&iface, "interface", "", "pin the VIP to this interface")
	return cmd
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, usagef("PREFIX %q: want an address with a prefix length, such as 192.0.2.10/24 or 2001:db8::10/64", s)
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, usagef("PREFIX %q: an address with a zone cannot be a VIP", s)
	}
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

func (a *app) vipRmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:               "rm NAME",
		Aliases:           []string{"remove", "delete"},
		Short:             "Remove a VIP",
		Long:              "Remove a VIP. It is refused while a service uses the VIP, unless --force, which removes those services too.",
		Args:              exactArgs("NAME"),
		ValidArgsFunction: a.completeFirst(vipNames),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.DeleteVIP(cmd.Context(), args[0], force)
			if err != nil {
				return err
			}
			return a.wrote(index, "removed VIP %s", args[0])
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "also remove the services that use the VIP")
	return cmd
}

func (a *app) vipLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the VIPs",
		Args:    exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			c, err := a.reader()
			if err != nil {
				return err
			}
			vips, index, err := c.VIPs(cmd.Context())
			if err != nil {
				return err
			}
			sort.Slice(vips, func(i, j int) bool { return vips[i].Name < vips[j].Name })
			if a.json() {
				return a.printJSON(index, nonNil(vips))
			}
			t := newTable("NAME", "PREFIX", "INTERFACE")
			for _, v := range vips {
				t.row(v.Name, v.Prefix.String(), dash(v.Interface))
			}
			return t.write(a.stdout)
		}),
	}
}

func vipNames(ctx context.Context, c *api.Client, _ []string) ([]string, error) {
	vips, _, err := c.VIPs(ctx)
	names := make([]string, 0, len(vips))
	for _, v := range vips {
		names = append(names, v.Name)
	}
	return names, err
}
