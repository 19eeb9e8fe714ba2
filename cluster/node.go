// Package cluster runs a Rhizon node: its stores, the shard replicas it hosts,
// and routing from an entity address to the shard that owns it. This version
// hosts every shard locally with one replica each; membership, placement and
// forwarding between nodes build on it.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

// DefaultShards is the shard count of a new cluster.
const DefaultShards = 64

// MaxShards bounds the shard count.
const MaxShards = 4096

// Config configures a node.
type Config struct {
	NodeID  string
	DataDir string
	// Shards is the fixed shard count, chosen when the data directory is
	// created; a restart with a different count is refused.
	Shards   uint32
	Registry *actor.Registry
	Logger   *slog.Logger
	// ShardTemplate holds the Raft and group-commit tuning applied to every
	// shard (ID, NodeID, stores, Dir and Transport are filled in).
	ShardTemplate shard.Config
	Version       string
}

// Validate reports the first bad setting.
func (c *Config) Validate() error {
	if err := actor.ValidateID("node id", c.NodeID); err != nil {
		return err
	}
	if c.DataDir == "" {
		return errors.New("cluster: DataDir is required")
	}
	if c.Shards == 0 || c.Shards > MaxShards {
		return fmt.Errorf("cluster: shard count %d must be between 1 and %d", c.Shards, MaxShards)
	}
	if c.Registry == nil {
		return errors.New("cluster: Registry is required")
	}
	return nil
}

// identity is persisted in the data directory so a restart serves the same
// shards under the same node id.
type identity struct {
	NodeID string `json:"node_id"`
	Shards uint32 `json:"shards"`
}

// Node hosts shard replicas and routes requests to them.
type Node struct {
	cfg    Config
	log    *slog.Logger
	state  *storage.DB
	raftDB *storage.RaftDB
	shards []*shard.Shard
	trans  []raft.Transport

	closeOnce sync.Once
}

// Open opens (or creates) the node's data directory and starts every shard.
func Open(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: data dir: %w", err)
	}
	if err := checkIdentity(cfg); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID)}
	var err error
	if n.state, err = storage.Open(filepath.Join(cfg.DataDir, "state"), storage.Options{Logger: n.log}); err != nil {
		return nil, err
	}
	if n.raftDB, err = storage.OpenRaft(filepath.Join(cfg.DataDir, "raft"), storage.Options{Logger: n.log}); err != nil {
		_ = n.state.Close()
		return nil, err
	}
	for id := range cfg.Shards {
		_, tr := raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("%s/shard-%d", cfg.NodeID, id)))
		sc := cfg.ShardTemplate
		sc.ID, sc.NodeID, sc.Registry = id, cfg.NodeID, cfg.Registry
		sc.StateDB, sc.RaftDB, sc.Transport = n.state, n.raftDB, tr
		sc.Dir = filepath.Join(cfg.DataDir, "shards", fmt.Sprint(id))
		sc.Bootstrap = true
		sc.Logger = n.log
		s, err := shard.Open(sc)
		if err != nil {
			_ = n.Close()
			return nil, err
		}
		n.shards = append(n.shards, s)
		n.trans = append(n.trans, tr)
	}
	return n, nil
}

func checkIdentity(cfg Config) error {
	p := filepath.Join(cfg.DataDir, "node.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		b, _ = json.MarshalIndent(identity{NodeID: cfg.NodeID, Shards: cfg.Shards}, "", "  ")
		tmp := p + ".tmp"
		if err := writeFileSync(tmp, b); err != nil {
			return err
		}
		return os.Rename(tmp, p)
	}
	if err != nil {
		return fmt.Errorf("cluster: read %s: %w", p, err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return fmt.Errorf("cluster: %s is corrupt: %w", p, err)
	}
	if id.NodeID != cfg.NodeID || id.Shards != cfg.Shards {
		return fmt.Errorf("cluster: data dir %s belongs to node %q with %d shards; started as node %q with %d shards",
			cfg.DataDir, id.NodeID, id.Shards, cfg.NodeID, cfg.Shards)
	}
	return nil
}

func writeFileSync(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Close stops every shard and closes the stores.
func (n *Node) Close() error {
	var errs []error
	n.closeOnce.Do(func() {
		for _, s := range n.shards {
			errs = append(errs, s.Close())
		}
		for _, t := range n.trans {
			if c, ok := t.(raft.WithClose); ok {
				errs = append(errs, c.Close())
			}
		}
		if n.raftDB != nil {
			errs = append(errs, n.raftDB.Close())
		}
		if n.state != nil {
			errs = append(errs, n.state.Close())
		}
	})
	return errors.Join(errs...)
}

// Shards returns the local replicas, indexed by shard id.
func (n *Node) Shards() []*shard.Shard { return n.shards }

// WaitReady waits until every shard has a leader.
func (n *Node) WaitReady(ctx context.Context) error {
	for _, s := range n.shards {
		for {
			if addr, _ := s.Raft().LeaderWithID(); addr != "" {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("cluster: shard %d has no leader: %w", s.ID(), ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

// Registry implements gateway.Backend.
func (n *Node) Registry() *actor.Registry { return n.cfg.Registry }

// ShardOf implements gateway.Backend.
func (n *Node) ShardOf(addr actor.Address) uint32 { return shard.Of(addr, n.cfg.Shards) }

func (n *Node) shardFor(addr actor.Address) *shard.Shard { return n.shards[n.ShardOf(addr)] }

// Submit implements gateway.Backend.
func (n *Node) Submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	return n.shardFor(cmd.Address).Submit(ctx, cmd)
}

// Get implements gateway.Backend.
func (n *Node) Get(ctx context.Context, addr actor.Address, stale bool) (engine.Entity, uint64, error) {
	s := n.shardFor(addr)
	if !stale {
		if err := s.WaitLinearizable(ctx); err != nil {
			return engine.Entity{}, 0, err
		}
	}
	applied := s.Meta().Index
	ent, err := s.Store().Entity(addr)
	return ent, applied, err
}

// History implements gateway.Backend.
func (n *Node) History(ctx context.Context, addr actor.Address, after engine.Position, limit int, includeRejections, stale bool) ([]*pb.HistoryRecord, engine.Position, bool, error) {
	s := n.shardFor(addr)
	if !stale {
		if err := s.WaitLinearizable(ctx); err != nil {
			return nil, after, false, err
		}
	}
	recs, next, more, err := s.Store().History(addr, after, limit, includeRejections)
	if err != nil {
		return nil, after, false, err
	}
	out := make([]*pb.HistoryRecord, 0, len(recs))
	for _, r := range recs {
		switch r.Kind {
		case engine.HistoryEvent:
			var ev pb.Event
			if err := proto.Unmarshal(r.Data, &ev); err != nil {
				return nil, after, false, fmt.Errorf("cluster: decode event at %v: %w", r.Pos, err)
			}
			out = append(out, &pb.HistoryRecord{Record: &pb.HistoryRecord_Event{Event: &ev}})
		case engine.HistoryRejection:
			var rj pb.Rejection
			if err := proto.Unmarshal(r.Data, &rj); err != nil {
				return nil, after, false, fmt.Errorf("cluster: decode rejection at %v: %w", r.Pos, err)
			}
			out = append(out, &pb.HistoryRecord{Record: &pb.HistoryRecord_Rejection{Rejection: &rj}})
		}
	}
	return out, next, more, nil
}

// Status implements gateway.Backend.
func (n *Node) Status(context.Context) (*pb.StatusResponse, error) {
	st := &pb.StatusResponse{
		NodeId: n.cfg.NodeID, Version: n.cfg.Version, ShardCount: n.cfg.Shards,
		ActorTypes: n.cfg.Registry.Types(),
	}
	for _, s := range n.shards {
		st.Shards = append(st.Shards, s.Status())
	}
	return st, nil
}
