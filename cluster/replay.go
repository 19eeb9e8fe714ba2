package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/replay"
	"github.com/rhizon/rhizon/shard"
)

// ReplayTimeout bounds one replay on the node that runs it, whatever the
// caller's deadline: a replay re-executes the shard's whole log (from the
// newest snapshot at best), which for a big log takes minutes of one core.
const ReplayTimeout = 10 * time.Minute

// maxReplays is how many replays (of different shards) one node runs at
// once: each takes a core and, from an empty store, the shard's state in
// memory.
const maxReplays = 2

// noReplicaMsg marks the FailedPrecondition of a node that cannot run a
// replay of the shard (no replica, or a halted one): the router then tries
// another replica.
const noReplicaMsg = "has no serving replica of shard"

// replayGate admits one replay per shard and maxReplays in all on a node.
type replayGate struct {
	mu      sync.Mutex
	running map[uint32]bool
}

func (g *replayGate) enter(node string, id uint32) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.running[id]:
		return status.Errorf(codes.ResourceExhausted, "a replay of shard %d is already running on node %s: wait for it to finish (one at a time per shard)", id, node)
	case len(g.running) >= maxReplays:
		return status.Errorf(codes.ResourceExhausted, "node %s is already running %d replays (its limit): retry when one has finished", node, maxReplays)
	}
	if g.running == nil {
		g.running = map[uint32]bool{}
	}
	g.running[id] = true
	return nil
}

func (g *replayGate) leave(id uint32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.running, id)
}

// replayShardOf is the Raft group whose log holds the shard req names (its
// address's, or its shard),
// InvalidArgument for a shard the cluster does not have.
func (n *Node) replayShardOf(req *pb.ReplayRequest) (uint32, error) {
	if a := req.GetAddress(); a != nil {
		return n.groupOf(a.ToActor()), nil
	}
	count := n.ClusterState().Shards
	if count == 0 {
		count = n.router.shards
	}
	if _, ok := req.GetScope().(*pb.ReplayRequest_Shard); !ok {
		return 0, status.Error(codes.InvalidArgument, "give the scope of the replay: an entity's address or a shard")
	}
	if id := req.GetShard(); id >= count {
		return 0, status.Errorf(codes.InvalidArgument, "shard %d does not exist: this cluster has %d shards, 0 to %d", id, count, count-1)
	}
	// A replay is of a log: the Raft group's that carries the shard.
	return n.ClusterState().GroupOf(req.GetShard()), nil
}

// Replay runs req (already authorized by the gateway) on a replica of its
// shard: this node's when it leads the shard, else the leader's (through
// the internal API), else, the leader unknown or unreachable, another
// replica's, this node's last. The leader is preferred because its store
// is never replaced by a snapshot under the replay (a lagging follower's
// can be, by InstallSnapshot). It is read-only, so asking again is safe.
func (n *Node) Replay(ctx context.Context, req *pb.ReplayRequest) (*pb.ReplayReport, error) {
	id, err := n.replayShardOf(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, ReplayTimeout)
	defer cancel()
	rt := n.router
	deadline := time.Now().Add(routeTimeout) // for finding a replica, not for the replay
	last := fmt.Errorf("no replica of shard %d found", id)
	var pause backoff
	for attempt := 0; ; attempt++ {
		l := rt.replicas.get(id)
		usable := l != nil && l.Halted() == nil
		to := ""
		if !usable || !l.IsLeader() {
			to = rt.leaderGuess(id, attempt)
		}
		if usable && (l.IsLeader() || to == "" || to == rt.nodeID || time.Now().After(deadline)) {
			return n.replayLocal(ctx, l, req)
		}
		if to != "" && to != rt.nodeID {
			resp, fe := callPeer(ctx, rt, id, to, "replay", pb.InternalClient.Replay, req)
			if fe == nil {
				return resp, nil
			}
			// That node has no replica to run it on, or the transport
			// failed: try the next guess. Anything else (the replay's
			// verdict on bad input, a limit, a deadline) is the answer.
			st := status.Convert(fe.raw)
			noReplica := st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), noReplicaMsg)
			if !noReplica && st.Code() != codes.Unavailable {
				return nil, fe.raw
			}
			last = fe.raw
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("replay shard %d: %w (last: %v)", id, err, last)
		}
		if time.Now().After(deadline) && !usable {
			return nil, status.Errorf(codes.Unavailable, "no node holding a serving replica of shard %d answered: %v", id, last)
		}
		pause.wait(ctx) // an ended ctx is reported above, at the next turn
	}
}

// replayLocal replays this node's replica l up to its applied index now.
func (n *Node) replayLocal(ctx context.Context, l *shard.Shard, req *pb.ReplayRequest) (*pb.ReplayReport, error) {
	id := l.ID()
	if err := n.replays.enter(n.cfg.NodeID, id); err != nil {
		return nil, err
	}
	defer n.replays.leave(id)
	ctx, cancel := context.WithTimeout(ctx, ReplayTimeout)
	defer cancel()
	// One atomic load: the applied index and the state hash there agree.
	at := l.Meta()
	count := n.ClusterState().Shards
	if count == 0 {
		count = n.router.shards
	}
	opts := replay.Options{Shard: id, Registry: n.cfg.Registry, At: &at, ShardCount: count,
		Tenant: req.GetTenant(), Workspace: req.GetWorkspace()}
	if a := req.GetAddress(); a != nil {
		e := a.ToActor()
		opts.Entity = &e
	}
	start := time.Now()
	rep, err := replay.ShardContext(ctx, l.Store(), n.raftDB.Shard(id), n.replicas.dir(id), opts)
	switch {
	case err == nil:
	case errors.Is(err, replay.ErrNoData):
		return nil, status.Errorf(codes.NotFound, "shard %d has applied no commands on node %s: nothing to replay", id, n.cfg.NodeID)
	case errors.Is(err, replay.ErrLogCompacted):
		return nil, status.Errorf(codes.Aborted, "shard %d on node %s: %v", id, n.cfg.NodeID, err)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, status.Errorf(codes.DeadlineExceeded, "replay of shard %d on node %s stopped after %s (the caller's deadline, or the node's limit of %s): %v",
			id, n.cfg.NodeID, time.Since(start).Round(time.Millisecond), ReplayTimeout, err)
	case errors.Is(err, context.Canceled):
		return nil, status.Errorf(codes.Canceled, "replay of shard %d on node %s canceled", id, n.cfg.NodeID)
	default:
		return nil, status.Errorf(codes.Internal, "replay of shard %d on node %s: %v", id, n.cfg.NodeID, err)
	}
	n.log.Info("replayed shard", "shard", id, "to", rep.To, "entries", rep.Entries, "identical", rep.Identical,
		"took", time.Since(start).Round(time.Millisecond))
	return reportProto(rep, n.cfg.NodeID), nil
}

func reportProto(r *replay.Report, node string) *pb.ReplayReport {
	out := &pb.ReplayReport{
		Shard: r.Shard, From: r.From, To: r.To, Snapshot: r.Snapshot,
		Entries: uint64(r.Entries), Commands: uint64(r.Commands), Compared: uint64(r.Compared),
		Identical: r.Identical, RecordedHash: r.RecordedHash, ReplayedHash: r.ReplayedHash, NodeId: node,
	}
	if d := r.Divergence; d != nil {
		out.Divergence = &pb.ReplayDivergence{Index: d.Index, CommandId: d.CommandID, Address: d.Address,
			What: d.What, Recorded: d.Recorded, Replayed: d.Replayed}
	}
	return out
}

// Replay serves a peer's Replay on this node's replica, leader or not.
func (s *internalServer) Replay(ctx context.Context, req *pb.ReplayRequest) (*pb.ReplayReport, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	id, err := s.n.replayShardOf(req)
	if err != nil {
		return nil, err
	}
	l := s.n.local(id)
	if l == nil || l.Halted() != nil {
		if l != nil {
			if _, leader := l.Raft().LeaderWithID(); leader != "" {
				_ = grpc.SetTrailer(ctx, metadata.Pairs(leaderTrailer, string(leader)))
			}
		}
		return nil, status.Errorf(codes.FailedPrecondition, "node %s %s %d", s.n.cfg.NodeID, noReplicaMsg, id)
	}
	return s.n.replayLocal(ctx, l, req)
}
