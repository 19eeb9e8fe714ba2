package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Commands about the cluster rather than a tenant's entities (dead letters,
// republishing a shard's events, switching an actor type's revision) refuse
// --tenant and --workspace instead of taking and ignoring them: an operator
// passing one would believe the command was scoped to it.
func TestUnscopedCommands_RefuseTenantAndWorkspaceFlags(t *testing.T) {
	for _, tc := range []struct {
		cmd  func() *cobra.Command
		args []string
	}{
		{deadLettersCmd, []string{"list"}},
		{deadLettersCmd, []string{"redrive", "1"}},
		{eventsCmd, []string{"republish", "--shard", "0"}},
		{actorCmd, []string{"activate", "--type", "counter", "--revision", "1"}},
	} {
		for _, flag := range []string{"tenant", "workspace"} {
			args := append(append([]string{}, tc.args...), "--"+flag, "x")
			_, err := runCLIErr(t, tc.cmd(), "", args...)
			if err == nil || !strings.Contains(err.Error(), "unknown flag: --"+flag) {
				t.Errorf("%v: %v, want an unknown-flag error", args, err)
			}
		}
	}
}
