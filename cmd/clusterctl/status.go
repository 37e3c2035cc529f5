package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the director's view of the cluster: leader, term, index, VIPs, last reconcile",
		Long: `Show the view of the director at --addr: its Raft state, the leader, the
term and index, which director holds each VIP, and its last reconcile of
the kernel table. --consistent does not apply: it would have the leader
answer instead.`,
		Args: exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			// Deliberately not a.reader(): the point is this director's view.
			c, err := a.client()
			if err != nil {
				return err
			}
			s, index, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(index, s)
			}
			kv := newTable()
			kv.row("Node:", s.Node)
			kv.row("Version:", dash(s.Version))
			kv.row("State:", s.State)
			leader := dash(s.Leader)
			if s.LeaderAddr != "" {
				leader += " (" + s.LeaderAddr + ")"
			}
			kv.row("Leader:", leader)
			kv.row("Term:", fmt.Sprint(s.Term))
			kv.row("Index:", fmt.Sprint(s.Index))
			kv.row("Voters:", fmt.Sprint(s.Voters))
			if !s.LastLeaderContact.IsZero() {
				kv.row("Last leader contact:", s.LastLeaderContact.Format(time.RFC3339Nano))
			}
			kv.row("Backend:", s.Backend)
			if s.Ping != nil {
				ping := fmt.Sprintf("%d/%d", s.Ping.Value, s.Ping.Max)
				if !s.Ping.Ready {
					ping += " (not all ping nodes probed yet)"
				}
				kv.row("Ping score:", ping)
			}
			if len(s.LatePeers) > 0 {
				kv.row("Late peers:", strings.Join(s.LatePeers, ", "))
			}
			kv.row("Services:", fmt.Sprintf("%d (%s)", s.Services, plural(s.Servers, "real server")))
			kv.row("Last reconcile:", reconcileLine(s.LastReconcile.At, s.LastReconcile.Index, s.LastReconcile.Duration, s.LastReconcile.Changes, s.LastReconcile.Error))
			if err := kv.write(a.stdout); err != nil {
				return err
			}
			if len(s.VIPs) == 0 {
				return nil
			}
			sort.Slice(s.VIPs, func(i, j int) bool { return s.VIPs[i].Name < s.VIPs[j].Name })
			t := newTable("VIP", "PREFIX", "HOLDER", "LEASE")
			for _, v := range s.VIPs {
				lease := "-"
				if !v.Renewed.IsZero() {
					lease = fmt.Sprintf("renewed %s ago, expires in %s", time.Since(v.Renewed).Round(time.Millisecond),
						time.Until(v.Expires).Round(time.Millisecond))
				}
				t.row(v.Name, v.Prefix.String(), dash(v.Holder), lease)
			}
			fmt.Fprintln(a.stdout)
			return t.write(a.stdout)
		}),
	}
}

func reconcileLine(at time.Time, index uint64, d time.Duration, changes int, errText string) string {
	if at.IsZero() {
		return "never"
	}
	line := fmt.Sprintf("%s at index %d, %d changes in %s", at.Format(time.RFC3339), index, changes, d)
	if errText != "" {
		line += ", error: " + errText
	}
	return line
}
