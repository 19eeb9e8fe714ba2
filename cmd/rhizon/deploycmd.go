package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/gateway"
)

func deployCmd() *cobra.Command {
	f := &clientFlags{}
	var typ, rev string
	c := &cobra.Command{
		Use:   "deploy FILE.wasm --type T --revision R",
		Short: "Store a WebAssembly actor module in the cluster as revision R of type T; every node loads it",
		Long: "Store a WebAssembly actor module (built with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared)\n" +
			"in the cluster as revision R of actor type T. It is replicated through the control log; every\n" +
			"node loads it without a restart and reports the revision (rhizon actor list). Commands reach\n" +
			"it once it is active: rhizon actor activate --type T --revision R.\n" +
			"A tenant token deploys a type of its tenant (--tenant, default its first scope's), which only\n" +
			"that tenant sees and uses; an admin token without --tenant deploys a type of every tenant.\n" +
			"--workspace is ignored: a type belongs to a whole tenant.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if typ == "" || rev == "" {
				return &exitErr{exitUsage, fmt.Errorf("give --type and --revision, e.g. rhizon actor deploy counter.wasm --type wcounter --revision 1")}
			}
			code, err := os.ReadFile(args[0])
			if err != nil {
				return &exitErr{exitUsage, fmt.Errorf("deploy: %w", err)}
			}
			if len(code) > gateway.MaxModuleBytes {
				return &exitErr{exitUsage, fmt.Errorf("deploy: %s is %d bytes; the limit is %d (build with -ldflags='-s -w' to shrink it)", args[0], len(code), gateway.MaxModuleBytes)}
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			resp, err := cl.DeployActor(ctx, &pb.DeployActorRequest{ActorType: typ, Revision: rev, Module: code, Tenant: f.tenant})
			if err != nil {
				return f.callErr(err)
			}
			w := c.OutOrStdout()
			if f.output == "json" {
				return writeJSON(w, map[string]any{"actor_type": resp.GetActorType(), "revision": resp.GetRevision(),
					"sha256": resp.GetHash(), "bytes": resp.GetSize(), "owner": resp.GetOwner(),
					"map_version": resp.GetMapVersion(), "created": resp.GetCreated()})
			}
			what := "deployed"
			if !resp.GetCreated() {
				what = "already deployed (same module)"
			}
			fmt.Fprintf(w, "actor %s revision %s %s: %d bytes, sha256 %s, tenant %s\nnext: rhizon actor activate --type %s --revision %s\n",
				resp.GetActorType(), resp.GetRevision(), what, resp.GetSize(), resp.GetHash(), resp.GetOwner(), resp.GetActorType(), resp.GetRevision())
			return nil
		},
	}
	f.registerConn(c)
	c.Flags().DurationVar(&f.timeout, "timeout", 60*time.Second, "deadline for the call (it waits until the live nodes loaded the module, at most 30s of it)")
	c.Flags().StringVar(&typ, "type", "", "the actor type (required)")
	c.Flags().StringVar(&rev, "revision", "", "the revision (required; no comma or space)")
	return c
}
