package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/spf13/cobra"

	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

func replicaCmd() *cobra.Command {
	c := &cobra.Command{Use: "replica", Short: "Operate on a stopped node's replica of a shard"}
	var dataDir string
	var id int64
	reset := &cobra.Command{
		Use:   "reset",
		Short: "Delete a stopped node's replica of a shard so that it rebuilds from the healthy replicas",
		Long: "Reset deletes this node's state, Raft log and snapshots of one shard, keeping Raft's term and vote.\n" +
			"Started again, the node gets the log or a snapshot from the shard's leader and rebuilds the\n" +
			"replica: the way back for a replica that halted after diverging or a store failure.\n\n" +
			"Stop the node first. Reset one replica at a time, and only while the shard's other replicas are\n" +
			"healthy and caught up (`rhizon status`: same commit index), so that every committed entry is\n" +
			"still on two of them.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if id < 0 || id > 1<<32-1 {
				return &exitErr{exitUsage, fmt.Errorf("--shard is required: the shard whose replica to reset")}
			}
			ids, err := replayShards(dataDir, id)
			if err != nil {
				return err
			}
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			state, err := storage.Open(filepath.Join(dataDir, "state"), storage.Options{Logger: quiet})
			if err != nil {
				return &exitErr{exitError, fmt.Errorf("open state (is the node stopped?): %w", err)}
			}
			defer func() { _ = state.Close() }()
			logs, err := storage.OpenRaft(filepath.Join(dataDir, "raft"), storage.Options{Logger: quiet})
			if err != nil {
				return &exitErr{exitError, fmt.Errorf("open raft log: %w", err)}
			}
			defer func() { _ = logs.Close() }()
			dir := filepath.Join(dataDir, "shards", fmt.Sprint(ids[0]))
			voters, err := lastVoters(logs.Shard(ids[0]), dir)
			if err != nil {
				return &exitErr{exitError, err}
			}
			if voters < 2 {
				return &exitErr{exitError, fmt.Errorf("shard %d has %d voter(s) here: no other replica holds its data, so a reset would lose it", ids[0], voters)}
			}
			if err := shard.Reset(state, logs, dir, ids[0]); err != nil {
				return &exitErr{exitError, err}
			}
			fmt.Fprintf(c.OutOrStdout(), "shard %d: replica reset; start the node and it rebuilds from the shard's leader\n", ids[0])
			return nil
		},
	}
	reset.Flags().StringVar(&dataDir, "data-dir", "./data", "the stopped node's data directory")
	reset.Flags().Int64Var(&id, "shard", -1, "the shard whose replica to reset")
	c.AddCommand(reset)
	return c
}

// lastVoters counts the voters of the newest Raft configuration this replica
// knows: the last configuration entry of its log, else its newest snapshot's.
func lastVoters(ls *storage.LogStore, dir string) (int, error) {
	first, err := ls.FirstIndex()
	if err != nil {
		return 0, err
	}
	last, err := ls.LastIndex()
	if err != nil {
		return 0, err
	}
	count := func(cfg raft.Configuration) int {
		n := 0
		for _, s := range cfg.Servers {
			if s.Suffrage == raft.Voter {
				n++
			}
		}
		return n
	}
	for i := last; i >= first && i > 0; i-- {
		var l raft.Log
		if err := ls.GetLog(i, &l); err != nil {
			return 0, err
		}
		if l.Type == raft.LogConfiguration {
			return count(raft.DecodeConfiguration(l.Data)), nil
		}
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dir, "snapshots"), 2, hclog.NewNullLogger())
	if err != nil {
		return 0, err
	}
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return 0, err
	}
	return count(list[0].Configuration), nil
}
