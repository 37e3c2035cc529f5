package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
)

func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens",
		Long: `API tokens authorise every request to the API. A token has a role: read
(status, lists, snapshots) or operator (everything, token management
included). clusterd keeps only a hash of each token's secret, so a token
is shown once, when it is created.

The first operator token comes from bootstrap_token_file in the director
configuration, or from 'clusterctl token bootstrap' with a client
certificate from the cluster CA while the cluster has no token.`,
	}
	cmd.AddCommand(a.tokenLsCmd(), a.tokenCreateCmd(), a.tokenRevokeCmd(), a.tokenBootstrapCmd())
	return group(cmd)
}

func (a *app) tokenLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the API tokens (never their secrets)",
		Args:    exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			c, err := a.reader()
			if err != nil {
				return err
			}
			tokens, index, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(index, nonNil(tokens))
			}
			t := newTable("ID", "ROLE", "CREATED", "DESCRIPTION")
			for _, tk := range tokens {
				created := "-"
				if !tk.Created.IsZero() {
					created = tk.Created.UTC().Format(time.RFC3339)
				}
				t.row(tk.ID, tk.Role, created, dash(tk.Description))
			}
			return t.write(a.stdout)
		}),
	}
}

// printNewToken writes the token alone on stdout, so a script can capture
// it, and says on stderr that it is shown only once.
func (a *app) printNewToken(nt api.NewToken, index uint64, what string) error {
	if a.json() {
		return a.printJSON(index, nt)
	}
	fmt.Fprintf(a.stderr, "%s token %s (role %s) created (index %d). Its secret is shown only now; store it safely:\n",
		what, nt.ID, nt.Role, index)
	_, err := fmt.Fprintln(a.stdout, nt.Token)
	return err
}

func (a *app) tokenCreateCmd() *cobra.Command {
	var role, desc string
	cmd := &cobra.Command{
		Use:   "create --role read|operator [--description TEXT]",
		Short: "Create an API token and print it once",
		Args:  exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			if role != api.RoleRead && role != api.RoleOperator {
				return usagef("--role: %q is not a role (want read or operator)", role)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			nt, index, err := c.CreateToken(cmd.Context(), api.TokenCreate{Role: role, Description: desc})
			if err != nil {
				return err
			}
			return a.printNewToken(nt, index, "API")
		}),
	}
	cmd.Flags().StringVar(&role, "role", "", "read or operator (required)")
	cmd.Flags().StringVar(&desc, "description", "", "what the token is for, shown by token ls")
	_ = cmd.MarkFlagRequired("role")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{api.RoleRead, api.RoleOperator}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (a *app) tokenRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API token; requests that present it fail from then on",
		Args:  exactArgs("ID"),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			index, err := c.RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.wrote(index, "token %s revoked", args[0])
		}),
	}
}

func (a *app) tokenBootstrapCmd() *cobra.Command {
	var desc string
	cmd := &cobra.Command{
		Use:   "bootstrap --ca FILE --cert FILE --key FILE",
		Short: "Create the first operator token, with a client certificate from the cluster CA",
		Long: `bootstrap creates the cluster's first operator token. It needs no token,
but a client certificate issued by the cluster CA (clusterd tls init writes
one), and it works only while the cluster has no token at all.`,
		Args: exactArgs(),
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			if a.creds.cert == "" {
				return usagef("--cert and --key: bootstrap needs a client certificate from the cluster CA")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			nt, index, err := c.BootstrapToken(cmd.Context(), desc)
			if err != nil {
				return err
			}
			return a.printNewToken(nt, index, "Bootstrap operator")
		}),
	}
	cmd.Flags().StringVar(&desc, "description", "bootstrap", "what the token is for, shown by token ls")
	return cmd
}
