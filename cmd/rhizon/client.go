package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
)

type clientFlags struct {
	addr      string
	token     string
	tenant    string
	workspace string
	output    string
	timeout   time.Duration
	tls       tlsClientFlags
}

func (f *clientFlags) register(c *cobra.Command) {
	f.registerConn(c)
	f.registerTimeout(c)
}

// registerAdmin is register without --tenant and --workspace (see
// registerUnscoped).
func (f *clientFlags) registerAdmin(c *cobra.Command) {
	f.registerUnscoped(c)
	f.registerTimeout(c)
}

func (f *clientFlags) registerTimeout(c *cobra.Command) {
	c.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline for the whole call, retries included")
}

// registerConn registers the flags every client command has except
// --timeout, whose default depends on the command.
func (f *clientFlags) registerConn(c *cobra.Command) {
	f.registerUnscoped(c)
	fs := c.Flags()
	fs.StringVar(&f.tenant, "tenant", "", "tenant (default: the token's own)")
	fs.StringVar(&f.workspace, "workspace", "", "workspace (default: the token's own)")
}

// registerUnscoped is registerConn without --tenant and --workspace, for
// commands about the cluster rather than a tenant's entities (dead letters):
// they refuse the flags instead of taking and ignoring them.
func (f *clientFlags) registerUnscoped(c *cobra.Command) {
	fs := c.Flags()
	fs.StringVar(&f.addr, "addr", "127.0.0.1:7400", "gateway gRPC address, host[:port] (port 7400 when omitted; RHIZON_ADDR)")
	fs.StringVar(&f.token, "token", "", "bearer token (RHIZON_TOKEN)")
	fs.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	f.tls.register(fs)
}

func (f *clientFlags) dial(c *cobra.Command) (*client.Client, context.Context, context.CancelFunc, error) {
	if err := applyConfig(c.Flags()); err != nil {
		return nil, nil, nil, &exitErr{exitUsage, err}
	}
	if f.output != "text" && f.output != "json" {
		return nil, nil, nil, &exitErr{exitUsage, fmt.Errorf("-o %q: use text or json", f.output)}
	}
	topts, err := f.tls.options()
	if err != nil {
		return nil, nil, nil, &exitErr{exitUsage, err}
	}
	f.addr = withDefaultPort(f.addr)
	cl, err := client.Dial(f.addr, append([]client.Option{client.WithToken(f.token), client.WithTenant(f.tenant), client.WithWorkspace(f.workspace)}, topts...)...)
	if err != nil {
		return nil, nil, nil, &exitErr{exitError, err}
	}
	if f.timeout <= 0 {
		ctx, cancel := context.WithCancel(context.Background())
		return cl, ctx, cancel, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	return cl, ctx, cancel, nil
}

// parseTarget splits "actor_type/entity_id".
func parseTarget(s string) (*pb.Address, error) {
	at, id, ok := strings.Cut(s, "/")
	if !ok || at == "" || id == "" {
		return nil, &exitErr{exitUsage, fmt.Errorf("%q: the target is <actor_type>/<entity_id>, e.g. counter/c1", s)}
	}
	return &pb.Address{ActorType: at, EntityId: id}, nil
}

func (f *clientFlags) scope(a *pb.Address) *pb.Address {
	a.Tenant, a.Workspace = f.tenant, f.workspace
	return a
}

func sendCmd() *cobra.Command {
	f := &clientFlags{}
	var idem, cmdID, corr string
	var expected int64
	var async, wait bool
	c := &cobra.Command{
		Use:   "send <actor_type>/<entity_id> <command type> [json payload | @file | -]",
		Short: "Submit a command and print its result",
		Long: "Submit a command and wait until it is committed. The command type is cmd.<actor_type>.<verb>\n" +
			"or just the verb. Exit status: 0 accepted, 3 rejected, 1 error, 2 usage.\n\n" +
			"With --async the command is enqueued on the node's JetStream ingress and send returns once it\n" +
			"is stored, printing the stream, sequence and shard: exit 0 then means stored, not applied (the\n" +
			"result is decided later; follow it with rhizon watch or rhizon get). Retrying with the same\n" +
			"--idempotency-key applies the command once. The node needs NATS. --async --wait then waits\n" +
			"(up to --timeout) for the command's result and prints and exits as send without --async does.\n\n" +
			"The payload is the JSON itself, @path to read it from a file, or - to read it from stdin\n" +
			"(an argument is limited to 128 KiB).",
		Args: cobra.RangeArgs(2, 3),
		RunE: func(c *cobra.Command, args []string) error {
			addr, err := parseTarget(args[0])
			if err != nil {
				return err
			}
			typ := args[1]
			if !strings.HasPrefix(typ, "cmd.") {
				typ = "cmd." + addr.ActorType + "." + typ
			}
			req := &pb.SubmitRequest{Address: f.scope(addr), Type: typ, IdempotencyKey: idem, CommandId: cmdID, CorrelationId: corr}
			if len(args) == 3 {
				if req.Payload, err = readPayload(args[2], c.InOrStdin()); err != nil {
					return err
				}
			} else {
				req.Payload = []byte("{}")
			}
			if expected >= 0 {
				v := uint64(expected)
				req.ExpectedVersion = &v
			}
			if wait && !async {
				return &exitErr{exitUsage, errors.New("--wait waits for an --async command's result; send without --async waits anyway")}
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			if async {
				resp, err := cl.SubmitAsync(ctx, req)
				if err != nil {
					return f.sendErr(err)
				}
				if !wait {
					printEnqueued(c.OutOrStdout(), f.output, resp, req.IdempotencyKey)
					return nil
				}
				if f.output != "json" {
					printEnqueued(c.ErrOrStderr(), f.output, resp, req.IdempotencyKey)
				}
				res, err := awaitResult(ctx, cl, req)
				if err != nil {
					return f.callErr(err)
				}
				return f.printOutcome(c, res)
			}
			resp, err := cl.Submit(ctx, req)
			if err != nil {
				return f.sendErr(err)
			}
			if err := printResult(c.OutOrStdout(), f.output, resp.GetResult()); err != nil {
				return err
			}
			if resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
				return &exitErr{exitRejected, errors.New("rejected")}
			}
			return nil
		},
	}
	f.register(c)
	c.Flags().StringVar(&idem, "idempotency-key", "", "retries with the same key apply once (default: a fresh key)")
	c.Flags().Int64Var(&expected, "expected-version", -1, "reject with a conflict unless the entity is at this version")
	c.Flags().StringVar(&cmdID, "command-id", "", "command id (default: assigned by the gateway)")
	c.Flags().StringVar(&corr, "correlation-id", "", "correlation id linking related commands")
	c.Flags().BoolVar(&async, "async", false, "enqueue through JetStream and return once stored, before the command is applied")
	c.Flags().BoolVar(&wait, "wait", false, "with --async: wait (up to --timeout) for the result and print it as send does")
	return c
}

// printEnqueued prints where SubmitAsync stored a command, with the key a
// retry must reuse.
func printEnqueued(w io.Writer, format string, r *pb.SubmitAsyncResponse, key string) {
	if format == "json" {
		_ = writeJSON(w, map[string]any{
			"stream": r.GetStream(), "sequence": r.GetSequence(), "duplicate": r.GetDuplicate(),
			"shard": r.GetShard(), "command_id": r.GetCommandId(), "idempotency_key": key,
		})
		return
	}
	if r.GetDuplicate() {
		// The stored command keeps the id it was first sent with, which this
		// invocation may not know: do not print one that could mislead.
		fmt.Fprintf(w, "already enqueued (duplicate, nothing new stored): stream %s sequence %d, shard %d (idempotency key %s)\n",
			r.GetStream(), r.GetSequence(), r.GetShard(), key)
		return
	}
	fmt.Fprintf(w, "enqueued: stream %s sequence %d, shard %d (command id %s, idempotency key %s)\n",
		r.GetStream(), r.GetSequence(), r.GetShard(), r.GetCommandId(), key)
}

func getCmd() *cobra.Command {
	f := &clientFlags{}
	var stale bool
	c := &cobra.Command{
		Use:   "get <actor_type>/<entity_id>",
		Short: "Print an entity's state and version",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			addr, err := parseTarget(args[0])
			if err != nil {
				return err
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			req := &pb.GetRequest{Address: f.scope(addr)}
			if stale {
				req.Consistency = pb.Consistency_CONSISTENCY_STALE
			}
			resp, err := cl.Get(ctx, req)
			if err != nil {
				return f.callErr(err)
			}
			w := c.OutOrStdout()
			if f.output == "json" {
				return writeJSON(w, map[string]any{
					"address": addressJSON(resp.GetAddress()), "found": resp.GetFound(), "version": resp.GetVersion(),
					"state": rawJSON(resp.GetState()), "shard": resp.GetShard(), "applied_index": resp.GetAppliedIndex(),
				})
			}
			if !resp.GetFound() {
				fmt.Fprintf(w, "%s: not found (version 0)\n", args[0])
				return nil
			}
			fmt.Fprintf(w, "version %d (shard %d, applied index %d)\n%s\n", resp.GetVersion(), resp.GetShard(), resp.GetAppliedIndex(), resp.GetState())
			return nil
		},
	}
	f.register(c)
	c.Flags().BoolVar(&stale, "stale", false, "read this node's replica without confirming leadership")
	return c
}

func historyCmd() *cobra.Command {
	f := &clientFlags{}
	var rejections, all bool
	var pageSize uint32
	var pageToken string
	c := &cobra.Command{
		Use:   "history <actor_type>/<entity_id>",
		Short: "Print an entity's events (and rejections with --rejections)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			addr, err := parseTarget(args[0])
			if err != nil {
				return err
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			req := &pb.HistoryRequest{Address: f.scope(addr), IncludeRejections: rejections, PageSize: pageSize, PageToken: pageToken}
			var recs []*pb.HistoryRecord
			var trimmed *pb.Position
			next := ""
			for {
				resp, err := cl.History(ctx, req)
				if err != nil {
					return f.callErr(err)
				}
				if trimmed == nil {
					trimmed = resp.GetTrimmedBefore()
				}
				recs = append(recs, resp.GetRecords()...)
				next = resp.GetNextPageToken()
				if !all || next == "" {
					break
				}
				req.PageToken = next
			}
			w := c.OutOrStdout()
			if f.output == "json" {
				items := make([]any, 0, len(recs))
				for _, r := range recs {
					items = append(items, recordJSON(r))
				}
				out := map[string]any{"records": items, "next_page_token": next}
				if trimmed != nil {
					out["trimmed_before"] = map[string]any{"index": trimmed.GetIndex(), "ordinal": trimmed.GetOrdinal()}
				}
				return writeJSON(w, out)
			}
			if trimmed != nil {
				// Say so before the records: older ones were deleted by
				// history retention, the list does not start at the beginning.
				fmt.Fprintf(w, "trimmed: records before %d.%d were deleted by history retention\n", trimmed.GetIndex(), trimmed.GetOrdinal())
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "POSITION\tVERSION\tTYPE\tSCHEMA\tPRINCIPAL\tDETAIL")
			for _, r := range recs {
				if ev := r.GetEvent(); ev != nil {
					fmt.Fprintf(tw, "%d.%d\t%d\t%s\tv%d\t%s\t%s\n", ev.Index, ev.Ordinal, ev.Version, ev.Type, max(ev.SchemaVersion, 1), ev.GetPrincipal().GetId(), ev.Payload)
				} else if rj := r.GetRejection(); rj != nil {
					fmt.Fprintf(tw, "%d.%d\t-\t%s\t-\t%s\t%s: %s (%s)\n", rj.Index, rj.Ordinal, rj.Type, rj.GetPrincipal().GetId(), reasonName(rj.Reason), rj.Message, rj.CommandType)
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(w, "more: --page-token %s\n", next)
			}
			return nil
		},
	}
	f.register(c)
	c.Flags().BoolVar(&rejections, "rejections", false, "include recorded rejections (conflicts, violations, business rules)")
	c.Flags().BoolVar(&all, "all", false, "follow page tokens to the end")
	c.Flags().Uint32Var(&pageSize, "page-size", 100, "records per page (at most 1000)")
	c.Flags().StringVar(&pageToken, "page-token", "", "continue from a previous page")
	return c
}

func statusCmd() *cobra.Command {
	f := &clientFlags{}
	var wait bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Print the node's shards: role, leader; indexes and state hash with an admin token",
		Long: "Print the cluster map as the node sees it: nodes, shards, roles, leaders, indexes and state hashes (indexes and hashes with an admin token),\n" +
			"and the node's and each shard's health: READY, DEGRADED or FAILED, with the reasons (with an admin token).\n\n" +
			"With --wait, status first waits (up to --timeout) until the node is ready to serve: a cluster\n" +
			"exists, every shard has a leader and the node's JetStream ingress is ready (when it has NATS).\n" +
			"It keeps asking while the node is still starting (connection refused), so scripts can run it\n" +
			"right after starting the nodes. Exit 0 once ready, 1 when --timeout passes first.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			var st *pb.StatusResponse
			if wait {
				if st, err = waitReady(ctx, cl, f); err != nil {
					return err
				}
			} else if st, err = cl.Status(ctx); err != nil {
				return f.callErr(err)
			}
			w := c.OutOrStdout()
			if f.output == "json" {
				return writeProtoJSON(w, st)
			}
			if wait {
				fmt.Fprintf(w, "ready: %d shards have leaders\n", st.ShardCount)
			}
			if st.ShardCount == 0 {
				// An empty map reads as a cluster with nothing in it; say
				// what it is.
				fmt.Fprintf(w, "no cluster yet: node %s (version %s) has not formed or joined one (cluster map v0, 0 shards).\n"+
					"A new cluster forms once --bootstrap-expect nodes are up; a joining node waits for --join to answer.\n"+
					"Wait for it with: rhizon status --wait --timeout 2m\n", st.NodeId, st.Version)
				return nil
			}
			printStatus(w, st)
			return nil
		},
	}
	f.register(c)
	c.Flags().BoolVar(&wait, "wait", false, "wait until every shard has a leader and the node's ingress is ready (bounded by --timeout)")
	return c
}

// notReady says why st is not a cluster ready to serve, or returns nil.
func notReady(st *pb.StatusResponse) error {
	// The shard count, not the map version: a tenant token's Status view
	// carries no map version.
	if st.ShardCount == 0 {
		return errors.New("no cluster yet (cluster map v0, 0 shards)")
	}
	led := map[uint32]bool{}
	for _, s := range st.Shards {
		if s.Leader != "" {
			led[s.Shard] = true
		}
	}
	if missing := int(st.ShardCount) - len(led); missing > 0 {
		return fmt.Errorf("%d of %d shards have no leader yet", missing, st.ShardCount)
	}
	return nil
}

// waitReady polls the node until the cluster exists, every shard has a
// leader and the node reports itself ready (its readiness includes the
// JetStream streams), or ctx ends. Errors while polling (the node still
// starting) are remembered, not returned: the last one explains a timeout.
func waitReady(ctx context.Context, cl *client.Client, f *clientFlags) (*pb.StatusResponse, error) {
	const every = 250 * time.Millisecond
	var last error
	for {
		st, err := cl.Status(ctx)
		if err == nil {
			err = notReady(st)
		}
		if err == nil {
			err = checkHealth(ctx, f.addr, &f.tls, pb.Gateway_ServiceDesc.ServiceName)
		}
		if err == nil {
			return st, nil
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return nil, &exitErr{exitError, fmt.Errorf("not ready after --timeout %v: %w", f.timeout, explain(f.addr, last))}
		case <-time.After(every):
		}
	}
}

func printStatus(w io.Writer, st *pb.StatusResponse) {
	fmt.Fprintf(w, "cluster %s  map v%d  control leader %s  (asked %s, version %s)\n", st.ClusterId, st.MapVersion, st.ControlLeader, st.NodeId, st.Version)
	grouped := st.RaftGroups != 0 && st.RaftGroups < st.ShardCount // groups carry several shards
	if grouped {
		groups := "groups"
		if st.RaftGroups == 1 {
			groups = "group"
		}
		fmt.Fprintf(w, "shards %d in %d raft %s  actors %s\n", st.ShardCount, st.RaftGroups, groups, strings.Join(st.ActorTypes, ","))
	} else {
		fmt.Fprintf(w, "shards %d  actors %s\n", st.ShardCount, strings.Join(st.ActorTypes, ","))
	}
	if len(st.ActiveRevisions) > 0 {
		// Only the switched types: the others run their base revision.
		var revs []string
		for _, t := range slices.Sorted(maps.Keys(st.ActiveRevisions)) {
			revs = append(revs, t+"="+st.ActiveRevisions[t])
		}
		fmt.Fprintf(w, "active actor revisions %s\n", strings.Join(revs, ","))
	}
	fmt.Fprintf(w, "health %s (node %s)\n", st.Health, st.NodeId)
	for _, r := range st.HealthReasons {
		fmt.Fprintln(w, "  "+r)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tREPLICAS\tLEADING\tCONTROL\tGRPC\tZONE")
	for _, n := range st.Nodes {
		state, ctl := n.State, "non-voter"
		if n.Draining {
			state += ",draining"
		}
		if n.ControlVoter {
			ctl = "voter"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", n.NodeId, state, n.Replicas, n.Leading, ctl, n.GrpcAddr, n.Zone)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	health := map[uint32]string{}
	for _, h := range st.ShardHealth {
		health[h.Shard] = h.State
	}
	// With groups, a GROUP column: a group's Raft facts repeat on each of
	// its shards' rows.
	group := func(*pb.ShardStatus) string { return "" }
	if grouped {
		fmt.Fprint(tw, "SHARD\tGROUP\t")
		group = func(s *pb.ShardStatus) string { return fmt.Sprint(s.RaftGroup) + "\t" }
	} else {
		fmt.Fprint(tw, "SHARD\t")
	}
	fmt.Fprintln(tw, "HEALTH\tNODE\tROLE\tTERM\tAPPLIED\tCOMMIT\tLAST\tSTATE HASH\tVOTERS\tLEARNERS")
	for _, s := range st.Shards {
		role := s.Role
		if s.Halted {
			role += ",halted"
		}
		fmt.Fprintf(tw, "%d\t%s%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.16s\t%s\t%s\n", s.Shard, group(s), health[s.Shard], s.NodeId, role, s.Term, s.AppliedIndex,
			s.CommitIndex, s.LastLogIndex, s.StateHash, strings.Join(s.Voters, ","), strings.Join(s.Learners, ","))
	}
	_ = tw.Flush()
	if len(st.Rebalancing) > 0 {
		fmt.Fprintln(w, "\nrebalancing:")
		for _, r := range st.Rebalancing {
			fmt.Fprintln(w, "  "+r)
		}
	}
}

func drainCmd() *cobra.Command {
	f := &clientFlags{}
	var undo, wait bool
	c := &cobra.Command{
		Use:   "drain [node id]",
		Short: "Move every replica and leadership off a node before stopping it (token with role admin)",
		Long: "Move every replica and leadership off a node before stopping it (token with role admin).\n" +
			"Without a node id it drains $RHIZON_NODE_ID, so a Kubernetes preStop hook needs no shell.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				id := os.Getenv("RHIZON_NODE_ID")
				if id == "" {
					return &exitErr{exitUsage, errors.New("give the node id, or set RHIZON_NODE_ID")}
				}
				args = []string{id}
			}
			cl, ctx, cancel, err := f.dial(c)
			if err != nil {
				return err
			}
			defer cancel()
			defer func() { _ = cl.Close() }()
			if _, err := cl.Drain(ctx, args[0], undo); err != nil {
				return f.callErr(err)
			}
			w := c.OutOrStdout()
			if undo || !wait {
				fmt.Fprintf(w, "node %s draining: %v\n", args[0], !undo)
				return nil
			}
			for {
				st, err := cl.Status(ctx)
				if err != nil {
					return f.callErr(err)
				}
				for _, n := range st.Nodes {
					if n.NodeId == args[0] && n.Replicas == 0 && len(st.Rebalancing) == 0 {
						fmt.Fprintf(w, "node %s holds no replicas; it can be stopped\n", args[0])
						return nil
					}
				}
				select {
				case <-ctx.Done():
					return &exitErr{exitError, fmt.Errorf("node %s still holds replicas: %w", args[0], ctx.Err())}
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	f.register(c)
	c.Flags().BoolVar(&undo, "undo", false, "stop draining")
	c.Flags().BoolVar(&wait, "wait", false, "wait until the node holds no replicas (bounded by --timeout)")
	return c
}

func reasonName(r pb.Reason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "REASON_"))
}

func statusName(s pb.Status) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATUS_"))
}

func printResult(w io.Writer, format string, r *pb.Result) error {
	if format == "json" {
		return writeJSON(w, resultJSON(r))
	}
	switch {
	case r.GetStatus() == pb.Status_STATUS_ACCEPTED:
		dup := ""
		if r.Duplicate {
			dup = " (duplicate: the original result)"
		} else if r.Replay {
			dup = " (applied by an earlier attempt of this command)"
		}
		fmt.Fprintf(w, "accepted%s: version %d, index %d\n", dup, r.Version, r.Index)
		for _, ev := range r.Events {
			fmt.Fprintf(w, "  %s v%d %s\n", ev.Type, ev.Version, ev.Payload)
		}
		if len(r.Reply) > 0 {
			fmt.Fprintf(w, "  reply: %s\n", r.Reply)
		}
	default:
		dup := ""
		if r.Duplicate {
			dup = " (duplicate: the original result)"
		}
		fmt.Fprintf(w, "rejected%s: %s %s: %s (entity at version %d)\n", dup, reasonName(r.Reason), r.Code, r.Message, r.Version)
	}
	return nil
}

// rawJSON passes JSON bytes through as JSON, and anything else as a string.
func rawJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	return string(b)
}

func addressJSON(a *pb.Address) map[string]string {
	return map[string]string{"tenant": a.GetTenant(), "workspace": a.GetWorkspace(), "actor_type": a.GetActorType(), "entity_id": a.GetEntityId()}
}

func eventJSON(e *pb.Event) map[string]any {
	return map[string]any{
		"id": e.Id, "type": e.Type, "address": addressJSON(e.Address), "version": e.Version,
		"payload": rawJSON(e.Payload), "at": e.At, "command_id": e.CommandId,
		"causation_id": e.CausationId, "correlation_id": e.CorrelationId,
		"principal": map[string]string{"id": e.GetPrincipal().GetId(), "type": e.GetPrincipal().GetType()},
		"shard":     e.Shard, "index": e.Index, "ordinal": e.Ordinal,
		"schema_version": max(e.SchemaVersion, 1),
	}
}

func resultJSON(r *pb.Result) map[string]any {
	evs := make([]any, 0, len(r.GetEvents()))
	for _, e := range r.GetEvents() {
		evs = append(evs, eventJSON(e))
	}
	m := map[string]any{
		"command_id": r.GetCommandId(), "status": statusName(r.GetStatus()), "accepted": r.GetStatus() == pb.Status_STATUS_ACCEPTED,
		"duplicate": r.GetDuplicate(), "replay": r.GetReplay(), "version": r.GetVersion(), "index": r.GetIndex(), "events": evs,
	}
	if r.GetStatus() == pb.Status_STATUS_REJECTED {
		m["reason"], m["code"], m["message"] = reasonName(r.GetReason()), r.GetCode(), r.GetMessage()
	}
	if len(r.GetReply()) > 0 {
		m["reply"] = rawJSON(r.GetReply())
	}
	return m
}

func recordJSON(r *pb.HistoryRecord) map[string]any {
	if ev := r.GetEvent(); ev != nil {
		return map[string]any{"event": eventJSON(ev)}
	}
	rj := r.GetRejection()
	m := map[string]any{
		"type": rj.Type, "command_id": rj.CommandId, "command_type": rj.CommandType, "address": addressJSON(rj.Address),
		"reason": reasonName(rj.Reason), "code": rj.Code, "message": rj.Message, "at": rj.At,
		"principal":       map[string]string{"id": rj.GetPrincipal().GetId(), "type": rj.GetPrincipal().GetType()},
		"idempotency_key": rj.IdempotencyKey, "actual_version": rj.ActualVersion, "index": rj.Index, "ordinal": rj.Ordinal,
	}
	if rj.ExpectedVersion != nil {
		m["expected_version"] = *rj.ExpectedVersion
	}
	return map[string]any{"rejection": m}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeProtoJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}
