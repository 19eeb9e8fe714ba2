package gateway

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// EventsRepublisher is the optional capability of a Backend that serves
// Admin.RepublishEvents (cluster.Node): it runs the request on the shard's
// leader and answers with gRPC statuses for bad input. A Backend without it
// answers Unimplemented.
type EventsRepublisher interface {
	RepublishEvents(ctx context.Context, req *pb.RepublishEventsRequest) (*pb.RepublishEventsResponse, error)
}

// adminServer serves rhizon.v1.Admin: operators' calls, each for role
// admin only.
type adminServer struct {
	pb.UnimplementedAdminServer
	s *Server
}

// RepublishEvents publishes one shard's committed events again to the
// events stream (see the proto). Only an admin may: it reads every tenant's
// events of the shard, and floods the stream's consumers.
func (a adminServer) RepublishEvents(ctx context.Context, req *pb.RepublishEventsRequest) (*pb.RepublishEventsResponse, error) {
	s := a.s
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if id.Role != RoleAdmin {
		return nil, roleDenied(id, "republishing events")
	}
	rp, ok := s.backend.(EventsRepublisher)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "RepublishEvents: this node's backend cannot republish events")
	}
	resp, err := rp.RepublishEvents(ctx, req)
	if err != nil {
		return nil, readError(err, fmt.Sprintf("shard %d", req.GetShard()), "republish")
	}
	return resp, nil
}

// RevisionActivator is the optional capability of a Backend that serves
// Admin.ActivateRevision (cluster.Node): the switch-over of an actor type to
// a code revision, a control log entry, refused with FailedPrecondition
// while a node lacks the revision.
type RevisionActivator interface {
	ActivateRevision(ctx context.Context, req *pb.ActivateRevisionRequest) (*pb.ActivateRevisionResponse, error)
}

// RevisionSource is the optional capability of a Backend that knows the
// revision each actor type runs at (cluster.Node): the gateway checks verbs
// and payloads against that revision instead of the base one.
type RevisionSource interface {
	ActiveRevisions() map[string]string
}

// ActivateRevision switches an actor type to a code revision (see the
// proto). Only an admin may, as it changes how every tenant's commands of
// the type are decided, except for a type deployed by a tenant, which that
// tenant's tokens switch themselves.
func (a adminServer) ActivateRevision(ctx context.Context, req *pb.ActivateRevisionRequest) (*pb.ActivateRevisionResponse, error) {
	s := a.s
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if id.Role != RoleAdmin && !s.ownsType(id, req.GetActorType()) {
		return nil, roleDenied(id, "activating a revision of an actor type not deployed by this token's tenant")
	}
	ra, ok := s.backend.(RevisionActivator)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "ActivateRevision: this node's backend cannot switch actor revisions")
	}
	return ra.ActivateRevision(ctx, req)
}
