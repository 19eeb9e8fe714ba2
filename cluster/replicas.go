package cluster

import (
	"fmt"
	"github.com/rhizon/rhizon/cluster/membership"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/shard"
)

// bootstrapLoop creates the cluster when this node is the one to: once
// BootstrapExpect members are alive, the one with the lowest id bootstraps the
// control group with the first (up to three) of them as voters. The others
// wait to be added. A node whose control group has any state never
// bootstraps, so restarts and late joiners cannot create a second cluster.
func (n *Node) bootstrapLoop() {
	defer n.wg.Done()
	if n.cfg.BootstrapExpect == 0 {
		return
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.ClusterState().Initialized() || n.controlHasState() {
			return
		}
		chosen := n.bootstrapSet()
		if chosen == nil || chosen[0].Meta.ID != n.cfg.NodeID {
			continue
		}
		var servers []raft.Server
		for _, m := range chosen[:min(n.cfg.ControlVoters, len(chosen))] {
			servers = append(servers, raft.Server{ID: raft.ServerID(m.Meta.ID), Address: raft.ServerAddress(m.Meta.RaftAddr)})
		}
		if err := n.control.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			n.log.Error("bootstrap control group", "err", err)
			continue
		}
		n.log.Info("bootstrapped the control group", "voters", len(servers), "expect", n.cfg.BootstrapExpect)
		return
	}
}

// bootstrapSet is the BootstrapExpect alive members with the lowest ids, or
// nil while fewer are alive.
func (n *Node) bootstrapSet() []membership.Member {
	var alive []membership.Member
	for _, m := range n.ml.Members() {
		if m.State == membership.MemberAlive {
			alive = append(alive, m)
		}
	}
	if len(alive) < n.cfg.BootstrapExpect {
		return nil
	}
	slices.SortFunc(alive, func(a, b membership.Member) int { return cmpString(a.Meta.ID, b.Meta.ID) })
	return alive[:n.cfg.BootstrapExpect]
}

func (n *Node) controlHasState() bool {
	f := n.control.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// replicaLoop keeps the local replicas equal to what the cluster map places
// on this node: it opens the missing ones and removes those moved away.
func (n *Node) replicaLoop() {
	defer n.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-n.controlFSM.changed:
		case <-t.C:
		}
		n.reconcileReplicas()
	}
}

func (n *Node) reconcileReplicas() {
	st := n.ClusterState()
	if !st.Initialized() {
		return
	}
	for id := range st.Shards {
		hosts, have := st.Hosts(id, n.cfg.NodeID), n.local(id) != nil
		switch {
		case hosts && !have:
			if err := n.openReplica(id, st); err != nil {
				n.log.Error("open replica", "shard", id, "err", err)
			}
		case !hosts && have:
			if err := n.removeReplica(id); err != nil {
				n.log.Error("remove replica", "shard", id, "err", err)
			}
		}
	}
}

func (n *Node) shardDir(id uint32) string {
	return filepath.Join(n.cfg.DataDir, "shards", fmt.Sprint(id))
}

func (n *Node) openReplica(id uint32, st *ClusterState) error {
	trans, err := n.mux.Transport(id)
	if err != nil {
		return err
	}
	sc := n.cfg.ShardTemplate
	sc.ID, sc.NodeID, sc.Registry = id, n.cfg.NodeID, n.cfg.Registry
	sc.ShardCount = st.Shards
	sc.StateDB, sc.RaftDB, sc.Transport = n.state, n.raftDB, trans
	sc.Dir = n.shardDir(id)
	sc.Logger = n.log
	if voters, ok := st.Bootstraps(id, n.cfg.NodeID); ok {
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
	n.mu.Lock()
	n.replicas[id] = &replica{s: s, trans: trans}
	n.mu.Unlock()
	n.log.Info("opened replica", "shard", id, "bootstrap", sc.Bootstrap)
	return nil
}

// removeReplica stops a replica the map moved away and deletes its data, so
// a later placement here starts clean (from a snapshot of the leader).
func (n *Node) removeReplica(id uint32) error {
	n.mu.Lock()
	r := n.replicas[id]
	delete(n.replicas, id)
	n.mu.Unlock()
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
	ls := n.raftDB.Shard(id)
	first, err1 := ls.FirstIndex()
	last, err2 := ls.LastIndex()
	if err1 == nil && err2 == nil && last > 0 {
		if err := ls.DeleteRange(first, last); err != nil {
			return err
		}
	}
	n.log.Info("removed replica", "shard", id)
	return os.RemoveAll(n.shardDir(id))
}
