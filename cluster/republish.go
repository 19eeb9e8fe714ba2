package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/shard"
)

// EventsRepublisher republishes a shard's events to the events stream from
// this node's replica, which must lead the shard (*ingress.Manager's
// RepublishRange, adapted by the caller: the cluster does not link the
// ingress). A zero to means no upper bound. It is safe for concurrent use.
type EventsRepublisher interface {
	RepublishRange(ctx context.Context, shard uint32, from, to engine.Position, limit int) (count int, last, next engine.Position, done bool, err error)
}

// ErrNotLeading is what an EventsRepublisher wraps when this node does not
// lead the shard (any more): the router then asks the leader.
var ErrNotLeading = errors.New("cluster: this node does not lead the shard")

// republisherBox holds the node's EventsRepublisher: it starts after the
// node (it needs the node's shards), so it is set later, once.
type republisherBox struct {
	v atomic.Pointer[EventsRepublisher]
}

// SetRepublisher makes r serve the RepublishEvents calls that reach this
// node as the shard's leader. Without one (a node without NATS), they
// answer FailedPrecondition.
func (n *Node) SetRepublisher(r EventsRepublisher) { n.republisher.v.Store(&r) }

// RepublishEvents runs req on the shard's leader, wherever it is, following
// leader changes as Submit does. Republishing twice is harmless (the same
// message ids), so a retry after a lost answer is safe.
func (n *Node) RepublishEvents(ctx context.Context, req *pb.RepublishEventsRequest) (*pb.RepublishEventsResponse, error) {
	count := n.ClusterState().Shards
	if count == 0 {
		count = n.router.shards
	}
	if id := req.GetShard(); id >= count {
		return nil, status.Errorf(codes.InvalidArgument, "shard %d does not exist: this cluster has %d shards, 0 to %d", id, count, count-1)
	}
	// The events are in the history of the Raft group carrying the shard:
	// its leader republishes the group's range (message ids dedupe).
	id := n.ClusterState().GroupOf(req.GetShard())
	if to := req.GetTo(); to != nil && posOf(req.GetFrom()).After(posOf(to)) {
		return nil, status.Errorf(codes.InvalidArgument, "to (%d/%d) is before from (%d/%d): give to at or after from, or leave it out",
			to.GetIndex(), to.GetOrdinal(), req.GetFrom().GetIndex(), req.GetFrom().GetOrdinal())
	}
	rt := n.router
	// routeTimeout bounds the search for the leader, not the republish
	// itself (a scan of the shard's history): the caller's deadline does.
	deadline := time.Now().Add(routeTimeout)
	last := shard.ErrNotLeader
	var leaderErr error // the leader's last Unavailable answer, if any
	var pause backoff
	for attempt := 0; ; attempt++ {
		if l := rt.replicas.get(id); l != nil && l.IsLeader() {
			resp, err := n.republishLocal(ctx, req)
			if err == nil || !errors.Is(err, ErrNotLeading) {
				return resp, err
			}
			last = err
		} else if to := rt.leaderGuess(id, attempt); to != "" && to != rt.nodeID {
			resp, fe := callPeer(ctx, rt, id, to, "republish", pb.InternalClient.RepublishEvents, req)
			if fe == nil {
				return resp, nil
			}
			// A routing miss or the transport (retried, like a leader's
			// transient JetStream failure: republishing is idempotent),
			// else the leader's own answer (bad input, no NATS).
			st := status.Convert(fe.raw)
			if !isNotLeading(st) && st.Code() != codes.Unavailable {
				return nil, fe.raw
			}
			if st.Code() == codes.Unavailable && strings.HasPrefix(st.Message(), republishFailedMsg) {
				leaderErr = fe.raw
			}
			last = fe.err
		}
		if time.Now().After(deadline) && leaderErr != nil {
			return nil, leaderErr
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("republish shard %d: %w (last: %v)", id, err, last)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: republish shard %d: %v", shard.ErrNotLeader, id, last)
		}
		pause.wait(ctx) // an ended ctx is reported above, at the next turn
	}
}

// notLeadingMsg marks the FailedPrecondition a node answers when it does not
// lead the shard, as against one for a node without NATS.
const notLeadingMsg = "does not lead shard"

// republishFailedMsg starts the Unavailable a leader answers when the
// republish itself failed (JetStream unreachable, say).
const republishFailedMsg = "republishing events of shard"

func isNotLeading(st *status.Status) bool {
	return st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), notLeadingMsg)
}

// republishLocal runs req against this node's republisher.
func (n *Node) republishLocal(ctx context.Context, req *pb.RepublishEventsRequest) (*pb.RepublishEventsResponse, error) {
	p := n.republisher.v.Load()
	if p == nil {
		return nil, status.Errorf(codes.FailedPrecondition,
			"node %s leads shard %d but runs without NATS JetStream, so it has no events stream to republish to: start it with an embedded or external NATS", n.cfg.NodeID, req.GetShard())
	}
	var to engine.Position
	if req.GetTo() != nil {
		to = posOf(req.GetTo())
	}
	k, last, next, done, err := (*p).RepublishRange(ctx, n.ClusterState().GroupOf(req.GetShard()), posOf(req.GetFrom()), to, int(req.GetLimit()))
	if err != nil {
		if errors.Is(err, ErrNotLeading) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, status.Errorf(codes.Unavailable, "%s %d on node %s: %v", republishFailedMsg, req.GetShard(), n.cfg.NodeID, err)
	}
	out := &pb.RepublishEventsResponse{
		Shard: req.GetShard(), Republished: uint64(k), Done: done, NodeId: n.cfg.NodeID,
		Next: &pb.Position{Index: next.Index, Ordinal: next.Ordinal},
	}
	if k > 0 {
		out.Last = &pb.Position{Index: last.Index, Ordinal: last.Ordinal}
	}
	return out, nil
}

func posOf(p *pb.Position) engine.Position {
	return engine.Position{Index: p.GetIndex(), Ordinal: p.GetOrdinal()}
}

// RepublishEvents serves a peer's RepublishEvents on this node, which must
// lead the shard.
func (s *internalServer) RepublishEvents(ctx context.Context, req *pb.RepublishEventsRequest) (*pb.RepublishEventsResponse, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	id := s.n.ClusterState().GroupOf(req.GetShard())
	if l := s.n.local(id); l == nil || !l.IsLeader() {
		return nil, s.notLeader(ctx, id)
	}
	resp, err := s.n.republishLocal(ctx, req)
	switch {
	case err == nil:
		return resp, nil
	case errors.Is(err, ErrNotLeading):
		return nil, s.notLeader(ctx, id)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return nil, err
}
