package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// registry is the node's (and an offline replay's) actor registry: the
// built-in types, the document types of docs (--document-types), the
// WebAssembly actors of wasmSpecs (--wasm-actor) and, in a test build only,
// the test actors (testactors_on.go).
func registry(docs *docTypesFlag, wasmSpecs []string) (*actor.Registry, error) {
	reg, err := docs.registry()
	if err != nil {
		return nil, &exitErr{exitUsage, err}
	}
	if err := addTestActors(reg); err != nil {
		return nil, &exitErr{exitUsage, err}
	}
	if err := addWasmActors(reg, wasmSpecs); err != nil {
		return nil, err
	}
	return reg, nil
}

func actorCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "actor",
		Short: "Deploy WebAssembly actors, list actor types and revisions, switch a type's code revision",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(deployCmd(), activateCmd(), actorListCmd())
	return c
}

func activateCmd() *cobra.Command {
	f := &clientFlags{}
	var typ, rev string
	c := &cobra.Command{
		Use:   "activate --type T --revision R",
		Short: "Switch an actor type to a code revision: commands proposed after it are decided by R",
		Long: "Switch an actor type to a code revision. The switch-over is an entry in the cluster's control log;\n" +
			"every shard leader then records R in each entry it proposes, so every replica and every replay\n" +
			"decides those commands with R, and entries before it with the revision they recorded. Refused\n" +
			"(FailedPrecondition, naming them) while a node holding replicas does not have R: deploy it\n" +
			"(rhizon actor deploy) or restart those nodes with a binary that has it first. Activating the\n" +
			"previous revision rolls back. Needs role admin, except for a type deployed by the token's tenant.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if typ == "" || rev == "" {
				return &exitErr{exitUsage, fmt.Errorf("give --type and --revision (`rhizon status -o json` lists the revisions each node has and the active ones)")}
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			resp, err := cl.ActivateRevision(ctx, &pb.ActivateRevisionRequest{ActorType: typ, Revision: rev})
			if err != nil {
				return f.callErr(err)
			}
			w := c.OutOrStdout()
			if f.output == "json" {
				return writeJSON(w, map[string]any{"actor_type": resp.GetActorType(), "revision": resp.GetRevision(),
					"previous": resp.GetPrevious(), "map_version": resp.GetMapVersion()})
			}
			prev := resp.GetPrevious()
			if prev == "" {
				prev = "the base revision"
			}
			fmt.Fprintf(w, "actor %s: revision %s active (was %s; cluster map version %d)\n", resp.GetActorType(), resp.GetRevision(), prev, resp.GetMapVersion())
			return nil
		},
	}
	f.registerUnscoped(c)
	c.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline for the call (it waits until every live node applied the switch, at most 5s of it)")
	c.Flags().StringVar(&typ, "type", "", "the actor type (required)")
	c.Flags().StringVar(&rev, "revision", "", "the revision to switch to (required)")
	return c
}
