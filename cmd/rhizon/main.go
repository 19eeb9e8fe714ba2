// Command rhizon is the one Rhizon binary: it runs a node (`node`, `dev`) and
// is the command-line client (`send`, `get`, `history`, `status`).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit codes scripts can rely on.
const (
	exitError    = 1 // transport, auth or input error
	exitUsage    = 2 // bad flags or arguments
	exitRejected = 3 // the command was rejected (conflict, business rule, ...)
)

// exitErr carries an exit code through cobra.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }

func main() {
	root := &cobra.Command{
		Use:           "rhizon",
		Short:         "Rhizon: a deterministic, event-sourced actor runtime",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(devCmd(), nodeCmd(), sendCmd(), getCmd(), historyCmd(), resultCmd(), statusCmd(), drainCmd(), versionCmd(), benchCmd(), benchPeerCmd(), healthCmd(), watchCmd(), natsURLCmd(), eventsCmd(), replayCmd(), replicaCmd(), exportCmd(), importCmd(), actorCmd(), listCmd(), deadLettersCmd())
	if err := root.Execute(); err != nil {
		code := exitUsage
		var ee *exitErr
		if errors.As(err, &ee) {
			code = ee.code
		}
		if code != exitRejected {
			fmt.Fprintln(os.Stderr, "rhizon:", err)
		}
		os.Exit(code)
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), version)
		},
	}
}
