package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
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
	if err := n.ensureLearners(st); err != nil {
		return err
	}
	if err := n.rebalance(st, members); err != nil {
		return err
	}
	if round%4 == 0 {
		return n.spreadLeaders(st)
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
	var nodes []placement.Node
	for _, m := range set {
		init.Nodes = append(init.Nodes, recordOf(m))
		nodes = append(nodes, placement.Node{ID: m.Meta.ID, Zone: m.Meta.Zone})
	}
	init.Placement = placement.InitialPlacement(n.cfg.Shards, nodes, n.cfg.RF)
	init.Initial = cloneReplicas(init.Placement)
	n.log.Info("creating the cluster", "cluster", init.ClusterID, "nodes", len(nodes), "shards", init.Shards, "rf", init.RF)
	return n.propose(controlOp{Init: init})
}

func recordOf(m membership.Member) NodeRecord {
	return NodeRecord{
		ID: m.Meta.ID, RaftAddr: m.Meta.RaftAddr, GRPCAddr: m.Meta.GRPCAddr, HTTPAddr: m.Meta.HTTPAddr,
		GossipAddr: m.Addr, Zone: m.Meta.Zone, Draining: m.Meta.Draining,
	}
}

// gone reports whether a member has left, or been dead longer than DeadAfter.
func (n *Node) gone(m membership.Member) bool {
	return m.State == membership.MemberLeft || (m.State == membership.MemberDead && time.Since(m.Since) > n.cfg.DeadAfter)
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
		if !ok || !n.gone(m) || string(s.ID) == n.cfg.NodeID {
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

// shardAdmin sends a shard administration call to the shard's leader.
func (n *Node) shardAdmin(ctx context.Context, id uint32, op, node, addr string) (*pb.ShardAdminResponse, error) {
	var last error
	for attempt := range 6 {
		to := n.router.leaderGuess(id, attempt)
		if to == "" {
			break
		}
		c, err := n.router.peer(to)
		if err != nil {
			last = err
			continue
		}
		resp, err := c.ShardAdmin(ctx, &pb.ShardAdminRequest{Shard: id, Op: op, NodeId: node, Address: addr})
		if err == nil {
			if resp.Leader != "" {
				n.router.hints.Store(id, resp.Leader)
			}
			return resp, nil
		}
		last = err
	}
	return nil, fmt.Errorf("shard %d %s %s: %w", id, op, node, last)
}

// replicaInfo asks node's own replica of shard for its indexes.
func (n *Node) replicaInfo(ctx context.Context, id uint32, node string) (*pb.ShardAdminResponse, error) {
	c, err := n.router.peer(node)
	if err != nil {
		return nil, err
	}
	return c.ShardAdmin(ctx, &pb.ShardAdminRequest{Shard: id, Op: "info"})
}

// ensureLearners adds every learner of the map to its shard's Raft
// configuration as a non-voter (idempotent: the map changes first, so a
// controller that fails between the two steps repeats this one).
func (n *Node) ensureLearners(st *ClusterState) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for id, p := range st.Placement {
		for _, l := range p.Learners {
			rec, ok := st.Node(l)
			if !ok {
				continue
			}
			leader, err := n.shardAdmin(ctx, uint32(id), "info", "", "")
			if err != nil {
				return err
			}
			if slices.Contains(leader.Nonvoters, l) || slices.Contains(leader.Voters, l) {
				continue
			}
			if _, err := n.shardAdmin(ctx, uint32(id), "add_nonvoter", l, rec.RaftAddr); err != nil {
				return err
			}
		}
	}
	return nil
}

// liveNodes are the nodes of the map that placement may use, and those of
// them that are draining.
func (n *Node) liveNodes(st *ClusterState, members []membership.Member) (live []placement.Node, draining []string) {
	byID := map[string]membership.Member{}
	for _, m := range members {
		byID[m.Meta.ID] = m
	}
	for _, rec := range st.Nodes {
		m, seen := byID[rec.ID]
		// A node gossip has not heard of yet counts as live: moving data
		// because membership has not converged would be worse.
		if seen && n.gone(m) {
			continue
		}
		live = append(live, placement.Node{ID: rec.ID, Zone: rec.Zone})
		if rec.Draining {
			draining = append(draining, rec.ID)
		}
	}
	return live, draining
}

// rebalance takes one placement step toward the rendezvous placement of the
// live nodes.
func (n *Node) rebalance(st *ClusterState, members []membership.Member) error {
	live, draining := n.liveNodes(st, members)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	caughtUp := func(id uint32, node string) bool {
		leader, err := n.shardAdmin(ctx, id, "info", "", "")
		if err != nil {
			return false
		}
		mine, err := n.replicaInfo(ctx, id, node)
		if err != nil {
			return false
		}
		return slices.Contains(leader.Nonvoters, node) && mine.AppliedIndex+64 >= leader.CommitIndex
	}
	moves := placement.NextMoves(st.Placement, live, draining, st.RF, caughtUp, 1)
	if len(moves) == 0 {
		return nil
	}
	m := moves[0]
	rec, _ := st.Node(m.Node)
	n.log.Info("placement step", "shard", m.Shard, "kind", m.Kind, "node", m.Node)
	switch m.Kind {
	case placement.AddLearner:
		return n.propose(controlOp{Move: &m})
	case placement.Promote:
		if _, err := n.shardAdmin(ctx, m.Shard, "add_voter", m.Node, rec.RaftAddr); err != nil {
			return err
		}
		return n.propose(controlOp{Move: &m})
	case placement.RemoveVoter:
		info, err := n.shardAdmin(ctx, m.Shard, "info", "", "")
		if err != nil {
			return err
		}
		if info.Leader == m.Node {
			// A leader cannot remove itself cleanly: hand leadership to
			// another voter first; the next round removes it.
			for _, v := range st.Placement[m.Shard].Voters {
				if v != m.Node {
					to, _ := st.Node(v)
					_, err := n.shardAdmin(ctx, m.Shard, "transfer", v, to.RaftAddr)
					return err
				}
			}
		}
		if slices.Contains(info.Voters, m.Node) || slices.Contains(info.Nonvoters, m.Node) {
			if _, err := n.shardAdmin(ctx, m.Shard, "remove", m.Node, ""); err != nil {
				return err
			}
		}
		return n.propose(controlOp{Move: &m})
	}
	return nil
}

// spreadLeaders moves one shard leadership from the busiest node toward the
// least busy one.
func (n *Node) spreadLeaders(st *ClusterState) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	status, err := n.Status(ctx)
	if err != nil {
		return err
	}
	leaders := make([]string, st.Shards)
	for _, s := range status.Shards {
		if s.Role == "Leader" && int(s.Shard) < len(leaders) {
			leaders[s.Shard] = s.NodeId
		}
	}
	if !slices.Equal(leaders, st.Leaders) {
		if err := n.propose(controlOp{Leaders: leaders}); err != nil {
			return err
		}
	}
	// Nodes not alive take no leadership: LeaderTransfers treats them like
	// draining ones.
	alive := map[string]bool{}
	for _, m := range n.ml.Members() {
		alive[m.Meta.ID] = m.State == membership.MemberAlive
	}
	var avoid []string
	for _, rec := range st.Nodes {
		if rec.Draining || !alive[rec.ID] {
			avoid = append(avoid, rec.ID)
		}
	}
	for _, t := range placement.LeaderTransfers(st.Placement, leaders, avoid, 1) {
		to, ok := st.Node(t.To)
		if !ok {
			continue
		}
		n.log.Info("moving shard leadership", "shard", t.Shard, "from", t.From, "to", t.To)
		if _, err := n.shardAdmin(ctx, t.Shard, "transfer", t.To, to.RaftAddr); err != nil {
			return err
		}
	}
	return nil
}
