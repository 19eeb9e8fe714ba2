package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/replay"
)

// exitDiverged: a replay produced something other than the record.
const exitDiverged = 4

func replayCmd() *cobra.Command {
	var dataDir, tenant, workspace, entity, output string
	var shardFlag int64
	c := &cobra.Command{
		Use:   "replay",
		Short: "Re-execute a stopped node's recorded log with this binary's actors and compare",
		Long: "Replay re-executes each shard's recorded Raft log from a stopped node's data directory with\n" +
			"the actor code of this binary and compares, bit for bit, every command's result, every entry's\n" +
			"events and the state hash at the end with what the node recorded. It starts from an empty\n" +
			"store, or from the shard's newest snapshot where Raft compacted the log.\n\n" +
			"--tenant, --workspace and --entity (<actor_type>/<entity_id>, with --tenant and --workspace)\n" +
			"limit the per-command comparison; the state hash is always the whole shard's.\n\n" +
			"Exit status: 0 identical, 4 diverged (the first divergence is printed), 1 error, 2 usage.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts := replay.Options{Registry: builtin.Registry(), Tenant: tenant, Workspace: workspace}
			if entity != "" {
				at, id, ok := strings.Cut(entity, "/")
				if !ok || at == "" || id == "" || tenant == "" || workspace == "" {
					return &exitErr{exitUsage, fmt.Errorf("--entity is <actor_type>/<entity_id> and needs --tenant and --workspace")}
				}
				opts.Entity = &actor.Address{Tenant: tenant, Workspace: workspace, ActorType: at, EntityID: id}
			}
			if output != "text" && output != "json" {
				return &exitErr{exitUsage, fmt.Errorf("-o %q: text or json", output)}
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
				if output == "text" {
					printReplay(c.OutOrStdout(), rep)
				}
			}
			if output == "json" {
				if err := writeJSON(c.OutOrStdout(), map[string]any{"shards": reps}); err != nil {
					return err
				}
			}
			if diverged {
				return &exitErr{exitDiverged, errors.New("replay diverged from the record")}
			}
			return nil
		},
	}
	fs := c.Flags()
	fs.StringVar(&dataDir, "data-dir", "./data", "the stopped node's data directory")
	fs.Int64Var(&shardFlag, "shard", -1, "the shard to replay (default: every shard in the data directory)")
	fs.StringVar(&tenant, "tenant", "", "compare only commands of this tenant")
	fs.StringVar(&workspace, "workspace", "", "compare only commands of this workspace")
	fs.StringVar(&entity, "entity", "", "compare only commands of this entity: <actor_type>/<entity_id>")
	fs.StringVarP(&output, "output", "o", "text", "text or json")
	return c
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
