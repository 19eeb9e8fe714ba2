package cluster

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/cluster/membership"
	"github.com/rhizon/rhizon/cluster/placement"
)

// controllerLoop runs the control leader's duties every RebalanceInterval
// (and on membership changes): create the cluster, keep the control group's
// membership and node records current, and take at most one placement step
// and one leadership transfer per round, so rebalancing never floods the
// shards it moves.
func (n *Node) controllerLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.RebalanceInterval)
	defer t.Stop()
	round := 0
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.control.State() != raft.Leader {
			continue
		}
		round++
		if err := n.controlRound(round); err != nil && !errors.Is(err, raft.ErrNotLeader) {
			n.log.Warn("control round", "err", err)
		}
	}
}

func (n *Node) propose(op controlOp) error {
	b, err := json.Marshal(op)
	if err != nil {
		return err
	}
	f := n.control.Apply(b, 5*time.Second)
	if err := f.Error(); err != nil {
		return err
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return err
	}
	return nil
}

func (n *Node) controlRound(round int) error {
	st := n.ClusterState()
	members := n.ml.Members()
	if !st.Initialized() {
		return n.initCluster()
	}
	if err := n.reconcileControlMembers(members); err != nil {
		return err
	}
	if err := n.reconcileNodeRecords(st, members); err != nil {
		return err
	}
	st = n.ClusterState()
	if err := n.rebalancer.ensureLearners(st); err != nil {
		return err
	}
	if err := n.rebalancer.rebalance(st, members); err != nil {
		return err
	}
	if round%4 == 0 {
		return n.rebalancer.spreadLeaders(st)
	}
	return nil
}

// initCluster proposes the cluster's creation once BootstrapExpect members
// are alive: the shard count and the initial placement over them.
func (n *Node) initCluster() error {
	if n.cfg.BootstrapExpect == 0 {
		return nil
	}
	set := n.bootstrapSet()
	if set == nil {
		return nil
	}
	init := &ClusterState{ClusterID: newClusterID(), Shards: n.cfg.Shards, RF: n.cfg.RF}
	if g := n.cfg.RaftGroups; g != 0 && g < n.cfg.Shards {
		init.RaftGroups = g
	}
	var nodes []placement.Node
	for _, m := range set {
		init.Nodes = append(init.Nodes, recordOf(m))
		nodes = append(nodes, placement.Node{ID: m.Meta.ID, Zone: m.Meta.Zone})
	}
	init.Placement = placement.InitialPlacement(init.Groups(), nodes, n.cfg.RF)
	init.Initial = cloneReplicas(init.Placement)
	n.log.Info("creating the cluster", "cluster", init.ClusterID, "nodes", len(nodes), "shards", init.Shards, "raft_groups", init.Groups(), "rf", init.RF)
	return n.propose(controlOp{Init: init})
}

func recordOf(m membership.Member) NodeRecord {
	return NodeRecord{
		ID: m.Meta.ID, RaftAddr: m.Meta.RaftAddr, GRPCAddr: m.Meta.GRPCAddr, HTTPAddr: m.Meta.HTTPAddr,
		GossipAddr: m.Addr, Zone: m.Meta.Zone, Draining: m.Meta.Draining,
	}
}

// reconcileControlMembers makes every live node a member of the control group
// (a non-voter, so it has the map locally), keeps up to three voters on live
// nodes, and removes nodes that are gone.
func (n *Node) reconcileControlMembers(members []membership.Member) error {
	f := n.control.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	servers := f.Configuration().Servers
	in := map[string]raft.ServerSuffrage{}
	for _, s := range servers {
		in[string(s.ID)] = s.Suffrage
	}
	byID := map[string]membership.Member{}
	for _, m := range members {
		byID[m.Meta.ID] = m
	}
	const timeout = 5 * time.Second
	aliveVoters := 0
	for _, s := range servers {
		if m, ok := byID[string(s.ID)]; s.Suffrage == raft.Voter && (!ok || m.State == membership.MemberAlive || m.State == membership.MemberSuspect) {
			aliveVoters++
		}
	}
	alive := 0
	for _, m := range members {
		if m.State != membership.MemberAlive {
			continue
		}
		alive++
		if _, ok := in[m.Meta.ID]; !ok {
			n.log.Info("adding node to the control group", "id", m.Meta.ID)
			if err := n.control.AddNonvoter(raft.ServerID(m.Meta.ID), raft.ServerAddress(m.Meta.RaftAddr), 0, timeout).Error(); err != nil {
				return err
			}
			in[m.Meta.ID] = raft.Nonvoter
		}
	}
	if want := min(n.cfg.ControlVoters, alive); aliveVoters < want {
		for _, m := range members {
			if m.State == membership.MemberAlive && in[m.Meta.ID] == raft.Nonvoter {
				n.log.Info("promoting node to control voter", "id", m.Meta.ID)
				return n.control.AddVoter(raft.ServerID(m.Meta.ID), raft.ServerAddress(m.Meta.RaftAddr), 0, timeout).Error()
			}
		}
	}
	for _, s := range servers {
		m, ok := byID[string(s.ID)]
		if !ok || !n.rebalancer.gone(m) || string(s.ID) == n.cfg.NodeID {
			continue
		}
		if s.Suffrage == raft.Voter && aliveVoters < min(n.cfg.ControlVoters, alive) {
			continue // promote a replacement first
		}
		n.log.Info("removing gone node from the control group", "id", s.ID, "state", m.State)
		return n.control.RemoveServer(s.ID, 0, timeout).Error()
	}
	return nil
}

func (n *Node) reconcileNodeRecords(st *ClusterState, members []membership.Member) error {
	for _, m := range members {
		if m.State != membership.MemberAlive {
			continue
		}
		want := recordOf(m)
		if rec, ok := st.Node(m.Meta.ID); ok && rec == want {
			continue
		}
		if err := n.propose(controlOp{Node: &want}); err != nil {
			return err
		}
	}
	return nil
}
