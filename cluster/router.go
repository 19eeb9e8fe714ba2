package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/cluster/membership"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/shard"
)

// router sends each request to the replica that may serve it: the local one
// when it leads (or, for stale reads, exists), else the shard's leader on
// another node through the peer pool, following leader changes. It learns
// leaders from forwarding (hints) and reads the cluster map and gossip only
// through the functions it is given.
type router struct {
	nodeID   string
	grpcAddr string
	shards   uint32 // the configured count, until the map has one
	replicas *replicaSet
	state    func() *ClusterState
	members  func() []membership.Member
	peers    *peerPool
	forwards *forwardStats
	hints    sync.Map // shard id -> leader node id
}

// shardOf is the shard of addr under the map's shard count.
func (rt *router) shardOf(addr actor.Address) uint32 {
	s := rt.state().Shards
	if s == 0 {
		s = rt.shards
	}
	return shard.Of(addr, s)
}

// groupOf is the Raft group carrying addr's shard: the id every local
// replica, leader hint and forwarded request is known by.
func (rt *router) groupOf(addr actor.Address) uint32 {
	return rt.state().GroupOf(rt.shardOf(addr)) // no map yet: no groups, the shard itself
}

// routeTimeout bounds how long a request chases a shard leader (a failover
// takes a few election timeouts) before the outcome is reported.
const routeTimeout = 15 * time.Second

// leaderGuess returns the node to try for shard id on attempt n: the leader
// this node's replica knows, else the last hint learned from forwarding, else
// the map's leader hint, else the shard's replicas in turn.
func (rt *router) leaderGuess(id uint32, attempt int) string {
	if l := rt.replicas.get(id); l != nil {
		if _, leader := l.Raft().LeaderWithID(); leader != "" && attempt%3 != 2 {
			return string(leader)
		}
	}
	if h, ok := rt.hints.Load(id); ok && attempt%3 != 2 {
		return h.(string)
	}
	st := rt.state()
	if h := st.LeaderHint(id); h != "" && attempt%3 == 0 {
		return h
	}
	reps := st.Replicas(id)
	if len(reps) == 0 {
		return ""
	}
	return reps[attempt%len(reps)]
}

// Submit proposes cmd on the shard leader,
// wherever it is, following leader changes. Retrying is safe because the
// command keeps its idempotency key: a retry of a command that was applied
// returns its original result. The outcome is reported unknown only when an
// attempt may have been applied and no later attempt settled it.
func (rt *router) Submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	id := rt.groupOf(cmd.Address)
	ctx, cancel := context.WithTimeout(ctx, routeTimeout)
	defer cancel()
	uncertain := false
	last := shard.ErrNotLeader
	var pause backoff
	for attempt := 0; ; attempt++ {
		if l := rt.replicas.get(id); l != nil && l.IsLeader() {
			res, err := l.Submit(ctx, cmd)
			switch {
			case err == nil:
				return res, nil
			case errors.Is(err, shard.ErrUnknownOutcome):
				uncertain, last = true, err
			case errors.Is(err, shard.ErrNotLeader), errors.Is(err, shard.ErrClosed), errors.Is(err, shard.ErrOverloaded):
				last = err
			default:
				return res, err
			}
		} else if to := rt.leaderGuess(id, attempt); to != "" && to != rt.nodeID {
			resp, fe := callPeer(ctx, rt, id, to, "submit", pb.InternalClient.Forward,
				&pb.ForwardRequest{Command: pb.FromCommand(&cmd), Hops: 1})
			if fe == nil {
				rt.hints.Store(id, to)
				return resp.GetResult().ToActor(), nil
			}
			if fe.leader != "" && fe.leader != to {
				pause.reset()
			}
			if errors.Is(fe.err, shard.ErrHalted) {
				return actor.Result{}, fe.err
			}
			uncertain = uncertain || fe.applied
			last = fe.err
		}
		if !pause.wait(ctx) {
			if uncertain {
				return actor.Result{}, fmt.Errorf("%w: shard %d: %v", shard.ErrUnknownOutcome, id, last)
			}
			return actor.Result{}, fmt.Errorf("%w: shard %d has no reachable leader: %v", shard.ErrNotLeader, id, last)
		}
	}
}

// LeaderHint is the node that leads shard id
// as far as this node knows (its own replica's view, else what forwarding
// learned, else the map's hint) and that node's gateway address. remote is
// false when this node leads the shard itself or knows of no other leader
// with an address: then there is nothing to tell a client.
func (rt *router) LeaderHint(id uint32) (node, grpcAddr string, remote bool) {
	if l := rt.replicas.get(id); l != nil {
		if l.IsLeader() {
			return rt.nodeID, rt.grpcAddr, false
		}
		if _, leader := l.Raft().LeaderWithID(); leader != "" {
			node = string(leader)
		}
	}
	if node == "" {
		if h, ok := rt.hints.Load(id); ok {
			node = h.(string)
		} else {
			node = rt.state().LeaderHint(id)
		}
	}
	if node == "" || node == rt.nodeID {
		return "", "", false
	}
	// The map's record first: gossip's member list is a sorted copy of
	// every member, too dear for each forwarded request.
	if rec, ok := rt.state().Node(node); ok && rec.GRPCAddr != "" {
		grpcAddr = rec.GRPCAddr
	} else {
		grpcAddr = rt.peerAddr(node)
	}
	return node, grpcAddr, grpcAddr != ""
}

// read runs fn against the replica that may serve it: the leader for
// linearizable reads (locally or through a peer), any replica for stale ones.
func (rt *router) read(ctx context.Context, addr actor.Address, req *pb.ReadRequest) (*pb.ReadResponse, error) {
	return rt.readShard(ctx, rt.groupOf(addr), addr, req)
}

// readShard is read on shard id, which need not be addr's (a List reads
// every shard of one scope).
func (rt *router) readShard(ctx context.Context, id uint32, addr actor.Address, req *pb.ReadRequest) (*pb.ReadResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, routeTimeout)
	defer cancel()
	req.Address = pb.FromAddress(addr)
	last := shard.ErrNotLeader
	var pause backoff
	for attempt := 0; ; attempt++ {
		l := rt.replicas.get(id)
		if l != nil && l.Halted() != nil && l.IsLeader() {
			// No replica serves the shard until another one leads.
			return nil, l.Halted()
		}
		if l != nil && l.Halted() == nil && (req.Stale || l.IsLeader()) {
			resp, err := rt.readLocal(ctx, l, addr, req)
			if err == nil || !errors.Is(err, shard.ErrNotLeader) {
				return resp, err
			}
			last = err
		} else if to := rt.leaderGuess(id, attempt); to != "" && to != rt.nodeID {
			resp, fe := callPeer(ctx, rt, id, to, "read", pb.InternalClient.Read, req)
			if fe == nil {
				return resp, nil
			}
			last = fe.err
		}
		if !pause.wait(ctx) {
			return nil, fmt.Errorf("%w: read shard %d: %v", shard.ErrNotLeader, id, last)
		}
	}
}

func (rt *router) readLocal(ctx context.Context, l *shard.Shard, addr actor.Address, req *pb.ReadRequest) (*pb.ReadResponse, error) {
	// A halted replica's state is unknown: not even a stale read of it.
	if err := l.Halted(); err != nil {
		return nil, err
	}
	if !req.Stale {
		if err := l.WaitLinearizable(ctx); err != nil {
			return nil, err
		}
	}
	out := &pb.ReadResponse{AppliedIndex: l.Meta().Index}
	if req.List != nil {
		return listLocal(l, addr, req.List, out)
	}
	if req.Result {
		res, ok, err := l.Store().Result(addr, req.IdempotencyKey)
		if err != nil {
			return nil, err
		}
		out.Result, out.ResultFound = res, ok
		return out, nil
	}
	if !req.History {
		ent, err := l.Store().Entity(addr)
		if err != nil {
			return nil, err
		}
		out.State, out.Version = ent.State, ent.Version
		return out, nil
	}
	recs, next, more, err := historyRecords(l, addr, engine.Position{Index: req.AfterIndex, Ordinal: req.AfterOrdinal}, int(req.Limit), req.IncludeRejections)
	if err != nil {
		return nil, err
	}
	out.Records, out.NextIndex, out.NextOrdinal, out.More = recs, next.Index, next.Ordinal, more
	trim, err := l.Store().HistoryTrimmed(addr)
	if err != nil {
		return nil, err
	}
	out.TrimmedIndex, out.TrimmedOrdinal = trim.Index, trim.Ordinal
	return out, nil
}

// Get reads addr's entity through read.
func (rt *router) Get(ctx context.Context, addr actor.Address, stale bool) (engine.Entity, uint64, error) {
	resp, err := rt.read(ctx, addr, &pb.ReadRequest{Stale: stale})
	if err != nil {
		return engine.Entity{}, 0, err
	}
	return engine.Entity{Version: resp.Version, State: resp.State}, resp.AppliedIndex, nil
}

// Result reads the result stored for idempotency key at addr through read.
// The stored bytes are a recordv1.Result, which pb.Result reads as it is.
func (rt *router) Result(ctx context.Context, addr actor.Address, key string, stale bool) (*pb.Result, bool, uint64, error) {
	resp, err := rt.read(ctx, addr, &pb.ReadRequest{Stale: stale, Result: true, IdempotencyKey: key})
	if err != nil {
		return nil, false, 0, err
	}
	if !resp.ResultFound {
		return nil, false, resp.AppliedIndex, nil
	}
	var res pb.Result
	if err := proto.Unmarshal(resp.Result, &res); err != nil {
		return nil, false, resp.AppliedIndex, fmt.Errorf("decode stored result of %s %q: %w", addr, key, err)
	}
	return &res, true, resp.AppliedIndex, nil
}

// History reads addr's history through read.
func (rt *router) History(ctx context.Context, addr actor.Address, after engine.Position, limit int, includeRejections, stale bool) ([]*pb.HistoryRecord, engine.Position, bool, error) {
	recs, next, more, _, err := rt.HistoryPage(ctx, addr, after, limit, includeRejections, stale)
	return recs, next, more, err
}

// HistoryPage is History with the entity's trim mark (gateway.HistoryPager),
// read at the same applied index as the page.
func (rt *router) HistoryPage(ctx context.Context, addr actor.Address, after engine.Position, limit int, includeRejections, stale bool) (recs []*pb.HistoryRecord, next engine.Position, more bool, trimmed engine.Position, err error) {
	resp, err := rt.read(ctx, addr, &pb.ReadRequest{
		Stale: stale, History: true, AfterIndex: after.Index, AfterOrdinal: after.Ordinal,
		Limit: uint32(limit), IncludeRejections: includeRejections,
	})
	if err != nil {
		return nil, after, false, engine.Position{}, err
	}
	return resp.Records, engine.Position{Index: resp.NextIndex, Ordinal: resp.NextOrdinal}, resp.More,
		engine.Position{Index: resp.TrimmedIndex, Ordinal: resp.TrimmedOrdinal}, nil
}
