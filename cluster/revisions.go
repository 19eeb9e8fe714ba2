package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/cluster/membership"
)

// Actor code revisions. The revision each actor type runs is cluster state
// (ClusterState.Revisions), changed only by a control log entry (Activate):
// shard leaders record it in every entry they propose, so every replica,
// and every later replay, decides an entry with the revision it was
// proposed under. A switch-over is refused while a node holding replicas
// does not have the revision (its gossiped metadata lists what it has), and
// leaderships stay off such nodes (spreadLeaders).

// activeRevisions is ClusterState.Revisions (nil before the control group
// opens). The map is never modified once published.
func (n *Node) activeRevisions() map[string]string {
	if n.controlFSM == nil {
		return nil
	}
	return n.ClusterState().Revisions
}

// ActiveRevisions implements gateway.RevisionSource: actor type -> the
// revision the cluster switched it to. Callers must not modify the map.
func (n *Node) ActiveRevisions() map[string]string { return n.activeRevisions() }

// hasRevision reports whether a node's gossiped metadata lists rev of
// actorType.
func hasRevision(meta membership.NodeMeta, actorType, rev string) bool {
	v, ok := meta.Actors[actorType]
	return ok && slices.Contains(strings.Split(v, ","), rev)
}

// lacksActive reports whether a node misses one of the active revisions.
func lacksActive(st *ClusterState, meta membership.NodeMeta) bool {
	for t, rev := range st.Revisions {
		if !hasRevision(meta, t, rev) {
			return true
		}
	}
	return false
}

// nodesLacking lists the nodes holding a replica of some shard that do not
// have rev of actorType, each with why, sorted; a node gossip does not see
// alive counts as lacking it (what it runs is unknown).
func nodesLacking(st *ClusterState, members []membership.Member, actorType, rev string) []string {
	hosting := map[string]bool{}
	for s := range st.Placement {
		for _, id := range st.Replicas(uint32(s)) {
			hosting[id] = true
		}
	}
	metas := map[string]membership.Member{}
	for _, m := range members {
		metas[m.Meta.ID] = m
	}
	var out []string
	for id := range hosting {
		m, ok := metas[id]
		switch {
		case !ok || m.State != membership.MemberAlive:
			out = append(out, id+" (not alive: its revisions are unknown)")
		case !hasRevision(m.Meta, actorType, rev):
			have := m.Meta.Actors[actorType]
			if have == "" {
				have = "none"
			}
			out = append(out, fmt.Sprintf("%s (has %s)", id, have))
		}
	}
	slices.Sort(out)
	return out
}

// ActivateRevision switches actorType to revision rev (Admin.ActivateRevision),
// on the control leader wherever it is.
func (n *Node) ActivateRevision(ctx context.Context, req *pb.ActivateRevisionRequest) (*pb.ActivateRevisionResponse, error) {
	t, rev := req.GetActorType(), req.GetRevision()
	if t == "" || rev == "" {
		return nil, status.Error(codes.InvalidArgument, "activate: --type and --revision are both required")
	}
	if !n.cfg.Registry.Known(t) {
		return nil, status.Errorf(codes.NotFound, "unknown actor type %q; registered: %s", t, strings.Join(n.cfg.Registry.Types(), ", "))
	}
	return onControlLeader(ctx, n, "activate", func() (*pb.ActivateRevisionResponse, error) { return n.activateLocal(req) },
		func(c pb.InternalClient) (*pb.ActivateRevisionResponse, error) { return c.ActivateRevision(ctx, req) })
}

// activateLocal proposes the switch-over on the control leader, once every
// node holding replicas has the revision.
func (n *Node) activateLocal(req *pb.ActivateRevisionRequest) (*pb.ActivateRevisionResponse, error) {
	t, rev := req.GetActorType(), req.GetRevision()
	st := n.ClusterState()
	if lacking := nodesLacking(st, n.members(), t, rev); len(lacking) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition,
			"revision %s of actor %s is missing on node(s) %s: restart them with a binary that has it, then activate again",
			rev, t, strings.Join(lacking, ", "))
	}
	prev := st.Revisions[t]
	if err := n.propose(controlOp{Activate: &Activation{ActorType: t, Revision: rev}}); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, status.Errorf(codes.Unavailable, "activate: %v", err)
		}
		return nil, status.Errorf(codes.Internal, "activate: %v", err)
	}
	v := n.ClusterState().Version
	// Each shard leader stamps what its own node's control state says: wait
	// (briefly) until every live node applied the switch, so commands sent
	// after activate returns are decided by the new revision.
	lagging := n.awaitMapVersion(v, 5*time.Second)
	n.log.Info("actor revision activated", "actor_type", t, "revision", rev, "previous", prev, "not_yet_applied_on", lagging)
	return &pb.ActivateRevisionResponse{ActorType: t, Revision: rev, Previous: prev, MapVersion: v}, nil
}

// awaitMapVersion polls the live members until each reports control state
// version v or later, for at most d; it returns those that had not.
func (n *Node) awaitMapVersion(v uint64, d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		var lagging []string
		for _, m := range n.members() {
			if m.State != membership.MemberAlive || m.Meta.ID == n.cfg.NodeID {
				continue
			}
			c, err := n.router.peer(m.Meta.ID)
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				var r *pb.StatusResponse
				r, err = c.LocalStatus(ctx, &pb.StatusRequest{})
				cancel()
				if err == nil && r.GetMapVersion() >= v {
					continue
				}
			}
			lagging = append(lagging, m.Meta.ID)
		}
		if len(lagging) == 0 || time.Now().After(deadline) {
			return lagging
		}
		time.Sleep(20 * time.Millisecond) // between polls of the peers' status, not a wait for a fixed time
	}
}

// ActivateRevision serves a peer's forwarded Admin.ActivateRevision.
func (s *internalServer) ActivateRevision(ctx context.Context, req *pb.ActivateRevisionRequest) (*pb.ActivateRevisionResponse, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	if s.n.control.State() != raft.Leader {
		return nil, status.Errorf(codes.Unavailable, "node %s does not lead the control group", s.n.cfg.NodeID)
	}
	return s.n.activateLocal(req)
}

// onControlLeader runs local when this node leads the control group, else
// remote against the leader's internal service, retrying while there is no
// leader or it answers Unavailable, until ctx ends.
func onControlLeader[T any](ctx context.Context, n *Node, what string, local func() (T, error), remote func(pb.InternalClient) (T, error)) (T, error) {
	backoff := 20 * time.Millisecond
	for {
		if n.control.State() == raft.Leader {
			return local()
		}
		if _, leader := n.control.LeaderWithID(); leader != "" && string(leader) != n.cfg.NodeID {
			if c, err := n.router.peer(string(leader)); err == nil {
				resp, err := remote(c)
				if st := status.Convert(err); err == nil || st.Code() != codes.Unavailable {
					return resp, err
				}
			}
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, status.Errorf(codes.Unavailable, "%s: no control leader reachable: %v", what, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}
