package cluster

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/cluster/raftmux"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

// replica is a local shard replica and its Raft transport.
type replica struct {
	s     *shard.Shard
	trans *raftmux.GroupTransport
}

// replicaSet is the shard replicas this node hosts. It opens the ones the
// cluster map places here and removes those moved away; the stores and the
// mux are the node's, shared by every replica.
type replicaSet struct {
	cfg    *Config
	log    *slog.Logger
	state  *storage.DB
	raftDB *storage.RaftDB
	mux    *raftmux.Mux
	// revisions gives the cluster's active actor revisions (ClusterState
	// .Revisions) to the shards' leaders, which record them in each entry.
	revisions func() map[string]string

	mu       sync.RWMutex
	replicas map[uint32]*replica
}

func newReplicaSet(cfg *Config, log *slog.Logger, state *storage.DB, raftDB *storage.RaftDB, mux *raftmux.Mux) *replicaSet {
	return &replicaSet{cfg: cfg, log: log, state: state, raftDB: raftDB, mux: mux, replicas: map[uint32]*replica{}}
}

// get is the local replica of shard id, or nil.
func (rs *replicaSet) get(id uint32) *shard.Shard {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	if r, ok := rs.replicas[id]; ok {
		return r.s
	}
	return nil
}

// all is the local replicas, sorted by shard id.
func (rs *replicaSet) all() []*shard.Shard {
	rs.mu.RLock()
	defer rs.mu.RUnlock()
	out := make([]*shard.Shard, 0, len(rs.replicas))
	for _, r := range rs.replicas { //rhizon:deterministic sorted below
		out = append(out, r.s)
	}
	slices.SortFunc(out, func(a, b *shard.Shard) int { return int(a.ID()) - int(b.ID()) })
	return out
}

// closeAll stops every replica, keeping their data (the node is closing).
func (rs *replicaSet) closeAll() []error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var errs []error
	for id, r := range rs.replicas {
		errs = append(errs, r.s.Close(), r.trans.Close())
		delete(rs.replicas, id)
	}
	return errs
}

// reconcile opens the replicas st places on this node that are missing and
// removes those st moved away.
func (rs *replicaSet) reconcile(st *ClusterState) {
	if !st.Initialized() {
		return
	}
	for id := range st.Groups() {
		hosts, have := st.Hosts(id, rs.cfg.NodeID), rs.get(id) != nil
		switch {
		case hosts && !have:
			if err := rs.open(id, st); err != nil {
				rs.log.Error("open replica", "shard", id, "err", err)
			}
		case !hosts && have:
			if err := rs.remove(id); err != nil {
				rs.log.Error("remove replica", "shard", id, "err", err)
			}
		}
	}
}

func (rs *replicaSet) dir(id uint32) string {
	return filepath.Join(rs.cfg.DataDir, "shards", fmt.Sprint(id))
}

// open opens the replica of shard id, bootstrapping its Raft group when st
// names this node among its initial voters.
func (rs *replicaSet) open(id uint32, st *ClusterState) error {
	trans, err := rs.mux.Transport(id)
	if err != nil {
		return err
	}
	sc := rs.cfg.ShardTemplate
	sc.ID, sc.NodeID, sc.Registry = id, rs.cfg.NodeID, rs.cfg.Registry
	sc.ShardCount = st.Shards
	if g := st.Groups(); g < st.Shards {
		sc.Members = shard.Members(id, st.Shards, g)
	}
	sc.StateDB, sc.RaftDB, sc.Transport = rs.state, rs.raftDB, trans
	sc.Dir = rs.dir(id)
	sc.Logger = rs.log
	sc.Revisions = rs.revisions
	if voters, ok := st.Bootstraps(id, rs.cfg.NodeID); ok {
		sc.Bootstrap = true
		for _, v := range voters {
			rec, ok := st.Node(v)
			if !ok {
				_ = trans.Close()
				return fmt.Errorf("shard %d: initial voter %s has no node record", id, v)
			}
			sc.Peers = append(sc.Peers, raft.Server{ID: raft.ServerID(v), Address: raft.ServerAddress(rec.RaftAddr)})
		}
	}
	s, err := shard.Open(sc)
	if err != nil {
		_ = trans.Close()
		return err
	}
	rs.mu.Lock()
	rs.replicas[id] = &replica{s: s, trans: trans}
	rs.mu.Unlock()
	rs.log.Info("opened replica", "shard", id, "bootstrap", sc.Bootstrap)
	return nil
}

// remove stops a replica the map moved away and deletes its data, so
// a later placement here starts clean (from a snapshot of the leader).
func (rs *replicaSet) remove(id uint32) error {
	rs.mu.Lock()
	r := rs.replicas[id]
	delete(rs.replicas, id)
	rs.mu.Unlock()
	if r == nil {
		return nil
	}
	err := r.s.Close()
	_ = r.trans.Close()
	if err != nil {
		return err
	}
	if err := r.s.Store().Clear(); err != nil {
		return err
	}
	ls := rs.raftDB.Shard(id)
	first, err1 := ls.FirstIndex()
	last, err2 := ls.LastIndex()
	if err1 == nil && err2 == nil && last > 0 {
		if err := ls.DeleteRange(first, last); err != nil {
			return err
		}
	}
	rs.log.Info("removed replica", "shard", id)
	return os.RemoveAll(rs.dir(id))
}

// reopenWaiting closes the replicas halted for an actor revision the
// registry has now (deployed at run time and loaded since), keeping their
// data; reconcile then reopens them, and they apply from the entry they
// stopped at, as after a restart.
func (rs *replicaSet) reopenWaiting() {
	rs.mu.Lock()
	var closing []*replica
	for id, r := range rs.replicas { //rhizon:deterministic order does not matter: each is closed
		mr := r.s.MissingRevision()
		if mr == nil {
			continue
		}
		if _, ok := rs.cfg.Registry.LookupRevision(mr.ActorType, mr.Revision); ok {
			closing = append(closing, r)
			delete(rs.replicas, id)
			rs.log.Info("reopening a replica that waited for an actor revision now loaded", "shard", id, "actor_type", mr.ActorType, "revision", mr.Revision)
		}
	}
	rs.mu.Unlock()
	for _, r := range closing {
		if err := r.s.Close(); err != nil {
			rs.log.Error("close waiting replica", "shard", r.s.ID(), "err", err)
		}
		_ = r.trans.Close()
	}
}
