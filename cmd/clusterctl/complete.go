package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	"github.com/directorate/directorate/api"
)

// lister fetches the candidates for one positional argument, given the
// arguments before it.
type lister func(ctx context.Context, c *api.Client, args []string) ([]string, error)

// completeArgs completes positional arguments from the API, one lister per
// position. Completion is best effort: when clusterd does not answer
// within completionTimeout the shell simply offers nothing.
func (a *app) completeArgs(listers ...lister) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) >= len(listers) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return a.complete(cmd, listers[len(args)], args, toComplete)
	}
}

func (a *app) completeFirst(l lister) cobra.CompletionFunc { return a.completeArgs(l) }

// completeFlag completes a flag's value from the API.
func (a *app) completeFlag(l lister) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return a.complete(cmd, l, args, toComplete)
	}
}

func (a *app) complete(cmd *cobra.Command, l lister, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	timeout := completionTimeout
	if a.timeout > 0 && a.timeout < timeout {
		timeout = a.timeout
	}
	c, err := a.clientWithTimeout(timeout)
	if err != nil {
		cobra.CompDebugln(err.Error(), false)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	names, err := l(ctx, c, args)
	if err != nil {
		cobra.CompDebugln(err.Error(), false)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, toComplete) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func fixed(values ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)
}
