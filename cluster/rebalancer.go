package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/cluster/membership"
	"github.com/rhizon/rhizon/cluster/placement"
)

// rebalancer moves shard replicas and leaderships toward the placement of
// the live, non-draining nodes, one step per control round, on the control
// leader. It changes the map only through propose and the shards' Raft
// configurations only through the shard admin calls the router delivers to
// each shard's leader; it learns where leaders are from the cluster status.
type rebalancer struct {
	log       *slog.Logger
	deadAfter time.Duration
	router    *router
	propose   func(controlOp) error
	status    func(context.Context) (*pb.StatusResponse, error)
	members   func() []membership.Member
}

// gone reports whether a member has left, or been dead longer than DeadAfter.
func (rb *rebalancer) gone(m membership.Member) bool {
	return m.State == membership.MemberLeft || (m.State == membership.MemberDead && time.Since(m.Since) > rb.deadAfter)
}

// shardAdmin sends a shard administration call to the shard's leader.
func (rb *rebalancer) shardAdmin(ctx context.Context, id uint32, op, node, addr string) (*pb.ShardAdminResponse, error) {
	var last error
	for attempt := range 6 {
		to := rb.router.leaderGuess(id, attempt)
		if to == "" {
			break
		}
		c, err := rb.router.peer(to)
		if err != nil {
			last = err
			continue
		}
		resp, err := c.ShardAdmin(ctx, &pb.ShardAdminRequest{Shard: id, Op: op, NodeId: node, Address: addr})
		if err == nil {
			if resp.Leader != "" {
				rb.router.hints.Store(id, resp.Leader)
			}
			return resp, nil
		}
		last = err
	}
	return nil, fmt.Errorf("shard %d %s %s: %w", id, op, node, last)
}

// replicaInfo asks node's own replica of shard for its indexes.
func (rb *rebalancer) replicaInfo(ctx context.Context, id uint32, node string) (*pb.ShardAdminResponse, error) {
	c, err := rb.router.peer(node)
	if err != nil {
		return nil, err
	}
	return c.ShardAdmin(ctx, &pb.ShardAdminRequest{Shard: id, Op: "info"})
}

// ensureLearners adds every learner of the map to its shard's Raft
// configuration as a non-voter (idempotent: the map changes first, so a
// controller that fails between the two steps repeats this one).
func (rb *rebalancer) ensureLearners(st *ClusterState) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for id, p := range st.Placement {
		for _, l := range p.Learners {
			rec, ok := st.Node(l)
			if !ok {
				continue
			}
			leader, err := rb.shardAdmin(ctx, uint32(id), "info", "", "")
			if err != nil {
				return err
			}
			if slices.Contains(leader.Nonvoters, l) || slices.Contains(leader.Voters, l) {
				continue
			}
			if _, err := rb.shardAdmin(ctx, uint32(id), "add_nonvoter", l, rec.RaftAddr); err != nil {
				return err
			}
		}
	}
	return nil
}

// liveNodes are the nodes of the map that placement may use, and those of
// them that are draining.
func (rb *rebalancer) liveNodes(st *ClusterState, members []membership.Member) (live []placement.Node, draining []string) {
	byID := map[string]membership.Member{}
	for _, m := range members {
		byID[m.Meta.ID] = m
	}
	for _, rec := range st.Nodes {
		m, seen := byID[rec.ID]
		// A node gossip has not heard of yet counts as live: moving data
		// because membership has not converged would be worse.
		if seen && rb.gone(m) {
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
func (rb *rebalancer) rebalance(st *ClusterState, members []membership.Member) error {
	live, draining := rb.liveNodes(st, members)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	caughtUp := func(id uint32, node string) bool {
		leader, err := rb.shardAdmin(ctx, id, "info", "", "")
		if err != nil {
			return false
		}
		mine, err := rb.replicaInfo(ctx, id, node)
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
	rb.log.Info("placement step", "shard", m.Shard, "kind", m.Kind, "node", m.Node)
	switch m.Kind {
	case placement.AddLearner:
		return rb.propose(controlOp{Move: &m})
	case placement.Promote:
		if _, err := rb.shardAdmin(ctx, m.Shard, "add_voter", m.Node, rec.RaftAddr); err != nil {
			return err
		}
		return rb.propose(controlOp{Move: &m})
	case placement.RemoveVoter:
		info, err := rb.shardAdmin(ctx, m.Shard, "info", "", "")
		if err != nil {
			return err
		}
		if info.Leader == m.Node {
			// A leader cannot remove itself cleanly: hand leadership to
			// another voter first; the next round removes it.
			for _, v := range st.Placement[m.Shard].Voters {
				if v != m.Node {
					to, _ := st.Node(v)
					_, err := rb.shardAdmin(ctx, m.Shard, "transfer", v, to.RaftAddr)
					return err
				}
			}
		}
		if slices.Contains(info.Voters, m.Node) || slices.Contains(info.Nonvoters, m.Node) {
			if _, err := rb.shardAdmin(ctx, m.Shard, "remove", m.Node, ""); err != nil {
				return err
			}
		}
		return rb.propose(controlOp{Move: &m})
	}
	return nil
}

// spreadLeaders moves one shard leadership from the busiest node toward the
// least busy one.
func (rb *rebalancer) spreadLeaders(st *ClusterState) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	status, err := rb.status(ctx)
	if err != nil {
		return err
	}
	leaders := make([]string, st.Groups())
	for _, s := range status.Shards {
		g := s.Shard
		if st.Groups() < st.Shards {
			g = s.RaftGroup // a group's entries repeat for each shard it carries
		}
		if s.Role == "Leader" && int(g) < len(leaders) {
			leaders[g] = s.NodeId
		}
	}
	if !slices.Equal(leaders, st.Leaders) {
		if err := rb.propose(controlOp{Leaders: leaders}); err != nil {
			return err
		}
	}
	// Nodes not alive take no leadership: LeaderTransfers treats them like
	// draining ones.
	// Nodes without an active actor revision take none either: their
	// replicas wait at the first entry that names it.
	alive := map[string]bool{}
	for _, m := range rb.members() {
		alive[m.Meta.ID] = m.State == membership.MemberAlive && !lacksActive(st, m.Meta)
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
		rb.log.Info("moving shard leadership", "shard", t.Shard, "from", t.From, "to", t.To)
		if _, err := rb.shardAdmin(ctx, t.Shard, "transfer", t.To, to.RaftAddr); err != nil {
			return err
		}
	}
	return nil
}

// rebalancing describes every shard whose replicas are not yet where the
// placement of the live nodes wants them: the moves in progress or pending.
func (rb *rebalancer) rebalancing(st *ClusterState, members []membership.Member) []string {
	live, draining := rb.liveNodes(st, members)
	live = slices.DeleteFunc(live, func(p placement.Node) bool { return slices.Contains(draining, p.ID) })
	want := placement.Desired(st.Groups(), live, st.RF)
	var out []string
	for id, p := range st.Placement {
		if id >= len(want) {
			break
		}
		for _, l := range p.Learners {
			out = append(out, fmt.Sprintf("%s %d: %s catching up as a learner", st.unit(), id, l))
		}
		if len(p.Learners) == 0 && !slices.Equal(p.Voters, want[id]) {
			out = append(out, fmt.Sprintf("%s %d: voters %v, moving to %v", st.unit(), id, p.Voters, want[id]))
		}
	}
	return out
}
