package main

import (
	"context"
	"fmt"
	"sort"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
)

func (a *app) memberCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "List, add and remove the Raft members (the directors that vote)",
	}
	cmd.AddCommand(a.memberLsCmd(), a.memberAddCmd(), a.memberRmCmd())
	return group(cmd)
}

func (a *app) memberLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the Raft members with their gossip state",
		Args:    exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			c, err := a.reader()
			if err != nil {
				return err
			}
			members, index, err := c.Members(cmd.Context())
			if err != nil {
				return err
			}
			sort.Slice(members, func(i, j int) bool { return members[i].ID < members[j].ID })
			if a.json() {
				return a.printJSON(index, nonNil(members))
			}
			t := newTable("ID", "ADDRESS", "SUFFRAGE", "LEADER", "API", "GOSSIP", "PING", "WARNING")
			for _, m := range members {
				leader := ""
				if m.Leader {
					leader = "*"
				}
				ping := "-"
				if m.PingMax > 0 {
					ping = fmt.Sprintf("%d/%d", m.PingScore, m.PingMax)
				}
				t.row(m.ID, m.Address, m.Suffrage, leader, dash(m.APIAddress), dash(m.Gossip), ping, dash(m.Warning))
			}
			return t.write(a.stdout)
		}),
	}
}

func (a *app) memberAddCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "add ID RAFT_ADDR",
		Short: "Add a director as a Raft voter",
		Long: `Add a director as a Raft voter. ID is its node name and RAFT_ADDR the
IP:PORT of its Raft transport, its raft_addr.`,
		Args: exactArgs("ID", "RAFT_ADDR"),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			if err := checkHostPort("RAFT_ADDR", args[1]); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.AddMember(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return a.wrote(index, "added member %s at %s", args[0], args[1])
		}),
	}
}

func (a *app) memberRmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a director from the Raft voters",
		Long: `Remove a director from the Raft voters. clusterd refuses a removal its
safety checks consider dangerous, such as one that would leave the cluster
without a quorum of live voters; --force overrides those checks.`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeFirst(memberIDs),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.RemoveMember(cmd.Context(), args[0], force)
			if err != nil {
				return err
			}
			return a.wrote(index, "removed member %s", args[0])
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "override the safety checks that refuse the removal")
	return cmd
}

func (a *app) leaderCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leader",
		Short: "Move Raft leadership, and with it the VIPs",
	}
	var to string
	transfer := &cobra.Command{
		Use:   "transfer [--to NODE]",
		Short: "Hand leadership, and the VIPs, to another director",
		Long: `Hand leadership to another director: a planned handover, for instance
before maintenance. Without --to, Raft picks the most up-to-date follower.`,
		Args: exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.TransferLeader(cmd.Context(), to)
			if err != nil {
				return err
			}
			if to == "" {
				return a.wrote(index, "transferred leadership")
			}
			return a.wrote(index, "transferred leadership to %s", to)
		}),
	}
	transfer.Flags().StringVar(&to, "to", "", "node ID of the director to hand over to")
	_ = transfer.RegisterFlagCompletionFunc("to", a.completeFlag(followerIDs))
	cmd.AddCommand(transfer)
	return group(cmd)
}

func memberIDs(ctx context.Context, c *api.Client, _ []string) ([]string, error) {
	members, _, err := c.Members(ctx)
	ids := make([]string, 0, len(members))
	for _, m := range members {
		ids = append(ids, m.ID)
	}
	return ids, err
}

func followerIDs(ctx context.Context, c *api.Client, _ []string) ([]string, error) {
	members, _, err := c.Members(ctx)
	ids := make([]string, 0, len(members))
	for _, m := range members {
		if !m.Leader {
			ids = append(ids, m.ID)
		}
	}
	return ids, err
}
