package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
)

func resultCmd() *cobra.Command {
	f := &clientFlags{}
	var key, target string
	var stale bool
	c := &cobra.Command{
		Use:   "result [<actor_type>/<entity_id>] --key KEY",
		Short: "Print the stored result of a command, found by its entity and idempotency key",
		Long: "Print the result stored for the command submitted to an entity (the argument or --address)\n" +
			"under an idempotency key (--key), as send prints it. Exit status: 0 accepted, 3 rejected,\n" +
			"1 error or no result (not applied yet, or never: a violation stores none), 2 usage.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 1 {
				if target != "" && target != args[0] {
					return &exitErr{exitUsage, fmt.Errorf("the entity is given twice (%s and --address %s): give it once", args[0], target)}
				}
				target = args[0]
			}
			if target == "" || key == "" {
				return &exitErr{exitUsage, errors.New("result needs the entity (<actor_type>/<entity_id> or --address) and --key")}
			}
			addr, err := parseTarget(target)
			if err != nil {
				return err
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			req := &pb.GetResultRequest{Address: f.scope(addr), IdempotencyKey: key}
			if stale {
				req.Consistency = pb.Consistency_CONSISTENCY_STALE
			}
			resp, err := cl.GetResult(ctx, req)
			if err != nil {
				return f.callErr(err)
			}
			return f.printOutcome(c, resp.GetResult())
		},
	}
	f.register(c)
	c.Flags().StringVar(&key, "key", "", "the idempotency key the command was submitted with (required)")
	c.Flags().StringVar(&target, "address", "", "the entity, <actor_type>/<entity_id> (or give it as the argument)")
	c.Flags().BoolVar(&stale, "stale", false, "read this node's replica without confirming leadership")
	return c
}

// printOutcome prints a result as send does and turns a rejection into
// exit status 3.
func (f *clientFlags) printOutcome(c *cobra.Command, r *pb.Result) error {
	if err := printResult(c.OutOrStdout(), f.output, r); err != nil {
		return err
	}
	if r.GetStatus() != pb.Status_STATUS_ACCEPTED {
		return &exitErr{exitRejected, errors.New("rejected")}
	}
	return nil
}

// awaitResult polls GetResult for the command req enqueued until it has a
// result or ctx (the --timeout) ends. A stored result of another command id
// is another submission's, reported as duplicate like Submit does.
func awaitResult(ctx context.Context, cl *client.Client, req *pb.SubmitRequest) (*pb.Result, error) {
	q := &pb.GetResultRequest{Address: req.GetAddress(), IdempotencyKey: req.GetIdempotencyKey()}
	backoff := 20 * time.Millisecond
	for {
		resp, err := cl.GetResult(ctx, q)
		if err == nil {
			r := resp.GetResult()
			if r.GetCommandId() != req.GetCommandId() {
				r.Duplicate = true
			}
			return r, nil
		}
		if status.Code(err) != codes.NotFound || ctx.Err() != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("outcome unknown: the command is enqueued but had no result within --timeout; "+
					"ask later with: rhizon result %s/%s --key %s", req.GetAddress().GetActorType(), req.GetAddress().GetEntityId(), req.GetIdempotencyKey())
			}
			return nil, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}
