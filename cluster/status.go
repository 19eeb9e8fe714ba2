package cluster

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/cluster/membership"
	"github.com/rhizon/rhizon/shard"
)

// localStatus reports this node's replicas.
func (n *Node) localStatus() *pb.StatusResponse {
	st := n.ClusterState()
	out := &pb.StatusResponse{NodeId: n.cfg.NodeID, Version: n.cfg.Version, ShardCount: st.Shards, RaftGroups: st.Groups(),
		ClusterId: st.ClusterID, MapVersion: st.Version,
		ActiveRevisions: maps.Clone(st.Revisions), DeployedOwners: maps.Clone(n.DeployedOwners())}
	for _, s := range n.Shards() {
		group := shardStatus(s.Status())
		group.NodeId, group.RaftGroup = n.cfg.NodeID, group.Shard
		if int(group.Shard) < len(st.Placement) {
			group.Voters, group.Learners = st.Placement[group.Shard].Voters, st.Placement[group.Shard].Learners
		}
		if p := n.probe.Load(); p != nil {
			(*p)(group)
		}
		// One entry per shard the group carries, with the group's Raft
		// facts: clients route, and health reports, by shard.
		if len(s.Members()) == 1 {
			out.Shards = append(out.Shards, group)
			continue
		}
		for _, id := range s.Members() {
			ss := proto.CloneOf(group)
			ss.Shard = id
			out.Shards = append(out.Shards, ss)
		}
	}
	return out
}

// shardStatus is the API's form of a replica's status.
func shardStatus(s shard.Status) *pb.ShardStatus {
	return &pb.ShardStatus{
		Shard: s.Shard, Role: s.Role, Leader: s.Leader, Term: s.Term, AppliedIndex: s.AppliedIndex,
		CommitIndex: s.CommitIndex, LastLogIndex: s.LastLogIndex, StateHash: s.StateHash,
		Halted: s.Halted, HaltError: s.HaltError,
	}
}

// SetReplicaProbe installs f, which completes each local replica's status
// with what the node's other components know of it (the ingress manager:
// its consumer and relay on the shards this node leads). Status and
// LocalStatus call it on every report, so it must be quick.
func (n *Node) SetReplicaProbe(f func(*pb.ShardStatus)) {
	if f == nil {
		n.probe.Store(nil)
		return
	}
	n.probe.Store(&f)
}

// Status implements gateway.Backend: every node's replicas (asked in
// parallel, one second each), the members and the rebalancing in flight.
func (n *Node) Status(ctx context.Context) (*pb.StatusResponse, error) {
	st := n.ClusterState()
	out := n.localStatus()
	out.ActorTypes = n.cfg.Registry.Types()
	if m := n.docMismatch.Load(); m != nil {
		out.DocumentTypeMismatches = *m
	}
	if _, leader := n.control.LeaderWithID(); leader != "" {
		out.ControlLeader = string(leader)
	}
	voters := map[string]bool{}
	if f := n.control.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			voters[string(s.ID)] = s.Suffrage == raft.Voter
		}
	}
	members := n.ml.Members()
	var mu sync.Mutex
	var wg sync.WaitGroup
	reports := map[string]*pb.StatusResponse{n.cfg.NodeID: out}
	for _, m := range members {
		if m.Meta.ID == n.cfg.NodeID || (m.State != membership.MemberAlive && m.State != membership.MemberSuspect) {
			continue
		}
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			c, err := n.router.peer(id)
			if err != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			r, err := c.LocalStatus(cctx, &pb.StatusRequest{})
			if err == nil {
				mu.Lock()
				reports[id] = r
				mu.Unlock()
			}
		}(m.Meta.ID)
	}
	wg.Wait()
	var shards []*pb.ShardStatus
	for _, m := range members {
		ns := &pb.NodeStatus{
			NodeId: m.Meta.ID, State: m.State.String(), Draining: m.Meta.Draining, GrpcAddr: m.Meta.GRPCAddr,
			RaftAddr: m.Meta.RaftAddr, Zone: m.Meta.Zone, ControlVoter: voters[m.Meta.ID],
			ActorRevisions: maps.Clone(m.Meta.Actors),
		}
		if r := reports[m.Meta.ID]; r != nil {
			ns.Version = r.Version
			ns.Replicas = uint32(len(r.Shards))
			for _, s := range r.Shards {
				if s.Role == "Leader" {
					ns.Leading++
				}
			}
			if m.Meta.ID != n.cfg.NodeID {
				shards = append(shards, r.Shards...)
			}
		}
		out.Nodes = append(out.Nodes, ns)
	}
	out.Shards = append(out.Shards, shards...)
	slices.SortStableFunc(out.Shards, func(a, b *pb.ShardStatus) int {
		if a.Shard != b.Shard {
			return int(a.Shard) - int(b.Shard)
		}
		return cmpString(a.NodeId, b.NodeId)
	})
	out.Rebalancing = n.rebalancer.rebalancing(st, members)
	return out, nil
}
