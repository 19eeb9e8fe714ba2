package cluster

// Forming the cluster: which node bootstraps the control group, and when.

import (
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/cluster/membership"
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
