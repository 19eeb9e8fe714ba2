package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/cluster/membership"
	"github.com/rhizon/rhizon/cluster/placement"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/shard"
)

// routeTimeout bounds how long a request chases a shard leader (a failover
// takes a few election timeouts) before the outcome is reported.
const routeTimeout = 15 * time.Second

// leaderGuess returns the node to try for shard id on attempt n: the leader
// this node's replica knows, else the last hint learned from forwarding, else
// the map's leader hint, else the shard's replicas in turn.
func (n *Node) leaderGuess(id uint32, attempt int) string {
	if l := n.local(id); l != nil {
		if _, leader := l.Raft().LeaderWithID(); leader != "" && attempt%3 != 2 {
			return string(leader)
		}
	}
	if h, ok := n.hints.Load(id); ok && attempt%3 != 2 {
		return h.(string)
	}
	st := n.ClusterState()
	if h := st.LeaderHint(id); h != "" && attempt%3 == 0 {
		return h
	}
	reps := st.Replicas(id)
	if len(reps) == 0 {
		return ""
	}
	return reps[attempt%len(reps)]
}

// Submit implements gateway.Backend: it proposes cmd on the shard leader,
// wherever it is, following leader changes. Retrying is safe because the
// command keeps its idempotency key: a retry of a command that was applied
// returns its original result. The outcome is reported unknown only when an
// attempt may have been applied and no later attempt settled it.
func (n *Node) Submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	id := n.ShardOf(cmd.Address)
	ctx, cancel := context.WithTimeout(ctx, routeTimeout)
	defer cancel()
	uncertain := false
	last := shard.ErrNotLeader
	backoff := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if l := n.local(id); l != nil && l.IsLeader() {
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
		} else if to := n.leaderGuess(id, attempt); to != "" && to != n.cfg.NodeID {
			n.countForward(ctx, "submit")
			res, fe := n.forward(ctx, to, &cmd, 1)
			if fe == nil {
				n.hints.Store(id, to)
				return res, nil
			}
			if fe.leader != "" && fe.leader != to {
				n.hints.Store(id, fe.leader)
				backoff = 5 * time.Millisecond
			}
			if errors.Is(fe.err, shard.ErrHalted) {
				return actor.Result{}, fe.err
			}
			uncertain = uncertain || fe.applied
			last = fe.err
		}
		select {
		case <-ctx.Done():
			if uncertain {
				return actor.Result{}, fmt.Errorf("%w: shard %d: %v", shard.ErrUnknownOutcome, id, last)
			}
			return actor.Result{}, fmt.Errorf("%w: shard %d has no reachable leader: %v", shard.ErrNotLeader, id, last)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// LeaderHint implements gateway.RouteHinter: the node that leads shard id
// as far as this node knows (its own replica's view, else what forwarding
// learned, else the map's hint) and that node's gateway address. remote is
// false when this node leads the shard itself or knows of no other leader
// with an address: then there is nothing to tell a client.
func (n *Node) LeaderHint(id uint32) (node, grpcAddr string, remote bool) {
	if l := n.local(id); l != nil {
		if l.IsLeader() {
			return n.cfg.NodeID, n.cfg.GRPCAddr, false
		}
		if _, leader := l.Raft().LeaderWithID(); leader != "" {
			node = string(leader)
		}
	}
	if node == "" {
		if h, ok := n.hints.Load(id); ok {
			node = h.(string)
		} else {
			node = n.ClusterState().LeaderHint(id)
		}
	}
	if node == "" || node == n.cfg.NodeID {
		return "", "", false
	}
	// The map's record first: gossip's member list is a sorted copy of
	// every member, too dear for each forwarded request.
	if rec, ok := n.ClusterState().Node(node); ok && rec.GRPCAddr != "" {
		grpcAddr = rec.GRPCAddr
	} else {
		grpcAddr = n.peerAddr(node)
	}
	return node, grpcAddr, grpcAddr != ""
}

// read runs fn against the replica that may serve it: the leader for
// linearizable reads (locally or through a peer), any replica for stale ones.
func (n *Node) read(ctx context.Context, addr actor.Address, req *pb.ReadRequest) (*pb.ReadResponse, error) {
	id := n.ShardOf(addr)
	ctx, cancel := context.WithTimeout(ctx, routeTimeout)
	defer cancel()
	req.Address = pb.FromAddress(addr)
	last := shard.ErrNotLeader
	backoff := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if l := n.local(id); l != nil && (req.Stale || l.IsLeader()) {
			resp, err := n.readLocal(ctx, l, addr, req)
			if err == nil || !errors.Is(err, shard.ErrNotLeader) {
				return resp, err
			}
			last = err
		} else if to := n.leaderGuess(id, attempt); to != "" && to != n.cfg.NodeID {
			c, err := n.peer(to)
			if err != nil {
				last = err
			} else {
				n.countForward(ctx, "read")
				var tr metadata.MD
				resp, err := c.Read(ctx, req, grpc.Trailer(&tr))
				if err == nil {
					return resp, nil
				}
				fe := classify(err, tr)
				if fe.leader != "" {
					n.hints.Store(id, fe.leader)
				}
				last = fe.err
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: read shard %d: %v", shard.ErrNotLeader, id, last)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

func (n *Node) readLocal(ctx context.Context, l *shard.Shard, addr actor.Address, req *pb.ReadRequest) (*pb.ReadResponse, error) {
	if !req.Stale {
		if err := l.WaitLinearizable(ctx); err != nil {
			return nil, err
		}
	}
	out := &pb.ReadResponse{AppliedIndex: l.Meta().Index}
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
	return out, nil
}

// Get implements gateway.Backend.
func (n *Node) Get(ctx context.Context, addr actor.Address, stale bool) (engine.Entity, uint64, error) {
	resp, err := n.read(ctx, addr, &pb.ReadRequest{Stale: stale})
	if err != nil {
		return engine.Entity{}, 0, err
	}
	return engine.Entity{Version: resp.Version, State: resp.State}, resp.AppliedIndex, nil
}

// History implements gateway.Backend.
func (n *Node) History(ctx context.Context, addr actor.Address, after engine.Position, limit int, includeRejections, stale bool) ([]*pb.HistoryRecord, engine.Position, bool, error) {
	resp, err := n.read(ctx, addr, &pb.ReadRequest{
		Stale: stale, History: true, AfterIndex: after.Index, AfterOrdinal: after.Ordinal,
		Limit: uint32(limit), IncludeRejections: includeRejections,
	})
	if err != nil {
		return nil, after, false, err
	}
	return resp.Records, engine.Position{Index: resp.NextIndex, Ordinal: resp.NextOrdinal}, resp.More, nil
}

// historyRecords is the API's form of a replica's decoded history. Record
// and API messages are wire-compatible (api/rhizonv1/record_compat_test.go),
// so each is re-marshalled rather than copied field by field: history is not
// a hot path, and a field added to both needs no change here.
func historyRecords(l *shard.Shard, addr actor.Address, after engine.Position, limit int, includeRejections bool) ([]*pb.HistoryRecord, engine.Position, bool, error) {
	recs, next, more, err := l.History(addr, after, limit, includeRejections)
	if err != nil {
		return nil, after, false, err
	}
	out := make([]*pb.HistoryRecord, 0, len(recs))
	for _, r := range recs {
		hr, err := apiHistoryRecord(r)
		if err != nil {
			return nil, after, false, fmt.Errorf("cluster: convert record at %v: %w", r.Pos, err)
		}
		out = append(out, hr)
	}
	return out, next, more, nil
}

func apiHistoryRecord(r shard.HistoryRecord) (*pb.HistoryRecord, error) {
	if r.Event != nil {
		var ev pb.Event
		if err := remarshal(r.Event, &ev); err != nil {
			return nil, err
		}
		return &pb.HistoryRecord{Record: &pb.HistoryRecord_Event{Event: &ev}}, nil
	}
	var rj pb.Rejection
	if err := remarshal(r.Rejection, &rj); err != nil {
		return nil, err
	}
	return &pb.HistoryRecord{Record: &pb.HistoryRecord_Rejection{Rejection: &rj}}, nil
}

func remarshal(from, to proto.Message) error {
	b, err := proto.Marshal(from)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, to)
}

// localStatus reports this node's replicas.
func (n *Node) localStatus() *pb.StatusResponse {
	st := n.ClusterState()
	out := &pb.StatusResponse{NodeId: n.cfg.NodeID, Version: n.cfg.Version, ShardCount: st.Shards, ClusterId: st.ClusterID, MapVersion: st.Version}
	for _, s := range n.Shards() {
		ss := shardStatus(s.Status())
		ss.NodeId = n.cfg.NodeID
		if int(ss.Shard) < len(st.Placement) {
			ss.Voters, ss.Learners = st.Placement[ss.Shard].Voters, st.Placement[ss.Shard].Learners
		}
		out.Shards = append(out.Shards, ss)
	}
	return out
}

// shardStatus is the API's form of a replica's status.
func shardStatus(s shard.Status) *pb.ShardStatus {
	return &pb.ShardStatus{
		Shard: s.Shard, Role: s.Role, Leader: s.Leader, Term: s.Term, AppliedIndex: s.AppliedIndex,
		CommitIndex: s.CommitIndex, LastLogIndex: s.LastLogIndex, StateHash: s.StateHash,
	}
}

// Status implements gateway.Backend: every node's replicas (asked in
// parallel, one second each), the members and the rebalancing in flight.
func (n *Node) Status(ctx context.Context) (*pb.StatusResponse, error) {
	st := n.ClusterState()
	out := n.localStatus()
	out.ActorTypes = n.cfg.Registry.Types()
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
			c, err := n.peer(id)
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
		}
		if r := reports[m.Meta.ID]; r != nil {
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
	out.Rebalancing = n.rebalancing(st, members)
	return out, nil
}

// rebalancing describes every shard whose replicas are not yet where the
// placement of the live nodes wants them: the moves in progress or pending.
func (n *Node) rebalancing(st *ClusterState, members []membership.Member) []string {
	live, draining := n.liveNodes(st, members)
	live = slices.DeleteFunc(live, func(p placement.Node) bool { return slices.Contains(draining, p.ID) })
	want := placement.Desired(st.Shards, live, st.RF)
	var out []string
	for id, p := range st.Placement {
		if id >= len(want) {
			break
		}
		for _, l := range p.Learners {
			out = append(out, fmt.Sprintf("shard %d: %s catching up as a learner", id, l))
		}
		if len(p.Learners) == 0 && !slices.Equal(p.Voters, want[id]) {
			out = append(out, fmt.Sprintf("shard %d: voters %v, moving to %v", id, p.Voters, want[id]))
		}
	}
	return out
}
