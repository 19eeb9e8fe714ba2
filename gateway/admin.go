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
