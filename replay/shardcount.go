package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/cluster/raftmux"
	"github.com/rhizon/rhizon/storage"
)

// recordedShardCount reads the cluster's shard count from a stopped node's
// control group: its newest snapshot (the cluster map as JSON) or, the log
// not compacted yet, the entry that initialized the cluster. The engine
// needs the count (engine.WithShardCount: where violations' audit streams
// go) and the shard's own log does not hold it. The two shapes are those of
// package cluster's controlFSM (ClusterState, controlOp.Init), read here
// without importing cluster, which imports this package. A directory with
// no control group at all (a bare shard's, in tests) gives 0.
func recordedShardCount(dir string, raftDB *storage.RaftDB) (uint32, error) {
	var state struct {
		Shards uint32 `json:"shards"`
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dir, "control"), 2, hclog.NewNullLogger())
	if err == nil {
		if list, err := snaps.List(); err == nil && len(list) > 0 {
			if _, rc, err := snaps.Open(list[0].ID); err == nil {
				err = json.NewDecoder(rc).Decode(&state)
				rc.Close()
				if err == nil && state.Shards > 0 {
					return state.Shards, nil
				}
			}
		}
	}
	log := raftDB.Shard(raftmux.ControlGroup)
	first, err := log.FirstIndex()
	if err != nil {
		return 0, err
	}
	last, err := log.LastIndex()
	if err != nil {
		return 0, err
	}
	for idx := max(first, 1); idx <= last && idx > 0; idx++ {
		var l raft.Log
		if err := log.GetLog(idx, &l); err != nil {
			return 0, err
		}
		var op struct {
			Init *struct {
				Shards uint32 `json:"shards"`
			} `json:"init"`
		}
		if l.Type == raft.LogCommand && json.Unmarshal(l.Data, &op) == nil && op.Init != nil && op.Init.Shards > 0 {
			return op.Init.Shards, nil
		}
	}
	if last == 0 {
		return 0, nil // no control group: a bare shard's directory, placed as one shard
	}
	return 0, errors.New("the control group's log holds no initialization entry and there is no control snapshot")
}

// shardCountFor fills opts.ShardCount from the data directory when unset.
func shardCountFor(dir string, raftDB *storage.RaftDB, opts *Options) error {
	if opts.ShardCount > 0 {
		return nil
	}
	n, err := recordedShardCount(dir, raftDB)
	if err != nil {
		return fmt.Errorf("replay: the cluster's shard count (give it with --shard-count): %w", err)
	}
	opts.ShardCount = n
	return nil
}
