package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/replay"
)

// exitDiverged: a replay produced something other than the record.
const exitDiverged = 4

func replayCmd() *cobra.Command {
	f := &clientFlags{}
	var dataDir, entity string
	var shardFlag int64
	var shardCount uint32
	var docTypes docTypesFlag
	var wasmActors []string
	c := &cobra.Command{
		Use:   "replay",
		Short: "Re-execute a shard's recorded log with this binary's actors (or a live node's) and compare",
		Long: "Replay re-executes each shard's recorded Raft log with the actor code of a binary and compares,\n" +
			"bit for bit, every command's result, every entry's events and the state hash at the end with\n" +
			"what the node recorded. It starts from an empty store, or from the shard's newest snapshot\n" +
			"where Raft compacted the log.\n\n" +
			"Offline (--data-dir, the default ./data): a STOPPED node's data directory (or a copy), with this\n" +
			"binary's actors. --tenant, --workspace and --entity (<actor_type>/<entity_id>, with --tenant and\n" +
			"--workspace) limit the per-command comparison; the state hash is always the whole shard's.\n\n" +
			"Live (--addr or RHIZON_ADDR, without --data-dir): a running cluster replays on a node holding a\n" +
			"replica of the shard (the leader preferred), with that node's actors, up to the applied index it\n" +
			"had when the call arrived. --entity <actor_type>/<entity_id> (tenant and workspace default to\n" +
			"the token's) needs a token that may read the entity; --shard N (optionally narrowed by --tenant\n" +
			"and --workspace), or no scope at all (every shard), needs role admin. Either way the node\n" +
			"re-executes the shard's whole log: about the time the log took to apply, at most 10 minutes.\n\n" +
			"With Raft groups carrying several shards (rhizon node --raft-groups), a log is a group's: a replay\n" +
			"covers every shard of the group, and offline --shard names the group (its directory under shards/).\n\n" +
			"A state that differs while every result and event agrees (a changed Evolve) is located at the\n" +
			"first of the leader's periodic state checks in the log that differs.\n\n" +
			"Exit status: 0 identical, 4 diverged (the first divergence is printed), 1 error, 2 usage. An\n" +
			"--entity none of whose commands is in the replayed log exits 0 with a note on stderr that\n" +
			"nothing of it was compared.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if f.output != "text" && f.output != "json" {
				return &exitErr{exitUsage, fmt.Errorf("-o %q: text or json", f.output)}
			}
			fs := c.Flags()
			switch {
			case fs.Changed("data-dir") && fs.Changed("addr"):
				return &exitErr{exitUsage, errors.New("--data-dir replays a stopped node's directory, --addr a running node: give one")}
			case !fs.Changed("data-dir") && (fs.Changed("addr") || os.Getenv("RHIZON_ADDR") != ""):
				return replayLive(c, f, entity, shardFlag)
			}
			reg, err := registry(&docTypes, wasmActors)
			if err != nil {
				return err
			}
			opts := replay.Options{Registry: reg, Tenant: f.tenant, Workspace: f.workspace, ShardCount: shardCount}
			if entity != "" {
				at, id, ok := strings.Cut(entity, "/")
				if !ok || at == "" || id == "" || f.tenant == "" || f.workspace == "" {
					return &exitErr{exitUsage, fmt.Errorf("--entity is <actor_type>/<entity_id> and, with --data-dir, needs --tenant and --workspace")}
				}
				opts.Entity = &actor.Address{Tenant: f.tenant, Workspace: f.workspace, ActorType: at, EntityID: id}
			}
			shards, err := replayShards(dataDir, shardFlag)
			if err != nil {
				return err
			}
			var reps []*replay.Report
			diverged := false
			for _, id := range shards {
				opts.Shard = id
				rep, err := replay.DataDir(dataDir, opts)
				if errors.Is(err, replay.ErrNoData) && shardFlag < 0 {
					continue // a shard directory whose replica never applied anything
				}
				if err != nil {
					return &exitErr{exitError, fmt.Errorf("shard %d: %w", id, err)}
				}
				reps = append(reps, rep)
				diverged = diverged || !rep.Identical
				if f.output == "text" {
					printReplay(c.OutOrStdout(), rep)
				}
			}
			if f.output == "json" {
				if err := writeJSON(c.OutOrStdout(), map[string]any{"shards": reps}); err != nil {
					return err
				}
			}
			if entity != "" {
				noteNothingCompared(c.ErrOrStderr(), entity, reps)
			}
			if diverged {
				return &exitErr{exitDiverged, errors.New("replay diverged from the record")}
			}
			return nil
		},
	}
	f.registerConn(c)
	fs := c.Flags()
	fs.DurationVar(&f.timeout, "timeout", 10*time.Minute, "live: deadline for the whole replay (each shard re-executes its log)")
	fs.StringVar(&dataDir, "data-dir", "./data", "the stopped node's data directory")
	fs.Int64Var(&shardFlag, "shard", -1, "the shard to replay (default: every shard; live: role admin)")
	fs.Uint32Var(&shardCount, "shard-count", 0, "offline: the cluster's shard count (default: read from the node's control group)")
	addWasmActorFlag(fs, &wasmActors)
	fs.StringVar(&entity, "entity", "", "compare only commands of this entity: <actor_type>/<entity_id>")
	fs.Var(&docTypes, "document-types", "offline: the node's --document-types (its document types decide commands)")
	return c
}

// liveReport is a live replay's report: the node that ran it added.
type liveReport struct {
	*replay.Report
	NodeID string `json:"node_id"`
}

// replayLive asks a running cluster for the replay of one entity, one
// shard or every shard.
func replayLive(c *cobra.Command, f *clientFlags, entity string, shardFlag int64) error {
	var reqs []*pb.ReplayRequest
	switch {
	case entity != "" && shardFlag >= 0:
		return &exitErr{exitUsage, errors.New("--entity already names its shard: give --entity or --shard, not both")}
	case entity != "":
		addr, err := parseTarget(entity)
		if err != nil {
			return err
		}
		reqs = append(reqs, &pb.ReplayRequest{Scope: &pb.ReplayRequest_Address{Address: f.scope(addr)}})
	case shardFlag > math.MaxUint32:
		return &exitErr{exitUsage, fmt.Errorf("--shard %d: out of range", shardFlag)}
	case shardFlag >= 0:
		reqs = append(reqs, &pb.ReplayRequest{Scope: &pb.ReplayRequest_Shard{Shard: uint32(shardFlag)}, Tenant: f.tenant, Workspace: f.workspace})
	}
	cl, ctx, cancel, err := f.dial(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer func() { _ = cl.Close() }()
	every := reqs == nil
	if every {
		st, err := cl.Status(ctx)
		if err != nil {
			return f.callErr(err)
		}
		// One replay per log: with Raft groups carrying several shards,
		// shard g (< groups) names group g, which carries it.
		logs := st.GetShardCount()
		if g := st.GetRaftGroups(); g != 0 && g < logs {
			logs = g
		}
		for id := range logs {
			reqs = append(reqs, &pb.ReplayRequest{Scope: &pb.ReplayRequest_Shard{Shard: id}, Tenant: f.tenant, Workspace: f.workspace})
		}
	}
	var reps []liveReport
	diverged := false
	for _, req := range reqs {
		resp, err := cl.Replay(ctx, req)
		if status.Code(err) == codes.NotFound && every {
			continue // a shard that applied nothing yet
		}
		if err != nil {
			return f.callErr(err)
		}
		rep := reportOf(resp)
		reps = append(reps, liveReport{rep, resp.GetNodeId()})
		diverged = diverged || !rep.Identical
		if f.output == "text" {
			printReplay(c.OutOrStdout(), rep)
		}
	}
	if f.output == "json" {
		if err := writeJSON(c.OutOrStdout(), map[string]any{"shards": reps}); err != nil {
			return err
		}
	}
	if entity != "" {
		var plain []*replay.Report
		for _, r := range reps {
			plain = append(plain, r.Report)
		}
		noteNothingCompared(c.ErrOrStderr(), entity, plain)
	}
	if diverged {
		return &exitErr{exitDiverged, errors.New("replay diverged from the record")}
	}
	return nil
}

// noteNothingCompared says so on stderr when an entity replay compared none
// of the entity's commands: "identical" then vouches only for the shard's
// state hash, not for the entity the user asked about.
func noteNothingCompared(w io.Writer, entity string, reps []*replay.Report) {
	for _, r := range reps {
		if r.Compared > 0 {
			return
		}
	}
	fmt.Fprintf(w, "note: %s has no recorded command in the replayed log (no history, a wrong --tenant/--workspace, "+
		"or commands only before the snapshot the replay started from): none of its commands was compared, only the shard's state hash\n", entity)
}

func reportOf(r *pb.ReplayReport) *replay.Report {
	out := &replay.Report{
		Shard: r.GetShard(), From: r.GetFrom(), To: r.GetTo(), Snapshot: r.GetSnapshot(),
		Entries: int(r.GetEntries()), Commands: int(r.GetCommands()), Compared: int(r.GetCompared()),
		Identical: r.GetIdentical(), RecordedHash: r.GetRecordedHash(), ReplayedHash: r.GetReplayedHash(),
	}
	if d := r.GetDivergence(); d != nil {
		out.Divergence = &replay.Divergence{Index: d.GetIndex(), CommandID: d.GetCommandId(), Address: d.GetAddress(),
			What: d.GetWhat(), Recorded: d.GetRecorded(), Replayed: d.GetReplayed()}
	}
	return out
}

// replayShards is the shard asked for, or every shard with a directory.
func replayShards(dataDir string, shard int64) ([]uint32, error) {
	if _, err := os.Stat(filepath.Join(dataDir, "state")); err != nil {
		return nil, &exitErr{exitUsage, fmt.Errorf("--data-dir %s: not a node's data directory (no state/): %w", dataDir, err)}
	}
	if shard >= 0 {
		if shard > 1<<32-1 {
			return nil, &exitErr{exitUsage, fmt.Errorf("--shard %d: out of range", shard)}
		}
		return []uint32{uint32(shard)}, nil
	}
	ents, err := os.ReadDir(filepath.Join(dataDir, "shards"))
	if err != nil {
		return nil, &exitErr{exitError, fmt.Errorf("--data-dir %s: %w", dataDir, err)}
	}
	var ids []uint32
	for _, e := range ents {
		if n, err := strconv.ParseUint(e.Name(), 10, 32); err == nil && e.IsDir() {
			ids = append(ids, uint32(n))
		}
	}
	slices.Sort(ids)
	if len(ids) == 0 {
		return nil, &exitErr{exitError, fmt.Errorf("--data-dir %s: no shards", dataDir)}
	}
	return ids, nil
}

func printReplay(w io.Writer, r *replay.Report) {
	from := "the empty store"
	if r.Snapshot > 0 {
		from = fmt.Sprintf("the snapshot at %d", r.Snapshot)
	}
	if r.Identical {
		fmt.Fprintf(w, "shard %d: identical: %d entries, %d commands (%d compared), from %s to index %d; state hash %s\n",
			r.Shard, r.Entries, r.Commands, r.Compared, from, r.To, r.ReplayedHash)
		return
	}
	d := r.Divergence
	fmt.Fprintf(w, "shard %d: DIVERGED at index %d (%s)", r.Shard, d.Index, d.What)
	if d.CommandID != "" {
		fmt.Fprintf(w, ", command %s on %s", d.CommandID, d.Address)
	}
	fmt.Fprintf(w, "\n  recorded: %s\n  replayed: %s\n  state hash at %d: recorded %s, replayed %s\n",
		indent(d.Recorded), indent(d.Replayed), r.To, r.RecordedHash, r.ReplayedHash)
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n            ") }
