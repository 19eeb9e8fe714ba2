package gateway

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Replayer is the optional capability of a Backend that serves
// Gateway.Replay (cluster.Node): it runs the request, already authorized,
// on a replica of the shard and answers with gRPC statuses. A Backend
// without it answers Unimplemented.
type Replayer interface {
	Replay(ctx context.Context, req *pb.ReplayRequest) (*pb.ReplayReport, error)
}

// Replay re-executes a shard's log and compares it with the record (see
// the proto). It is on the Gateway, not the Admin service, because an
// entity's replay is a read of that entity: any token that may read it may
// replay it, and another tenant's entity is denied and audited as a read
// is. A whole shard holds every tenant's commands: role admin only.
func (s *Server) Replay(ctx context.Context, req *pb.ReplayRequest) (*pb.ReplayReport, error) {
	var send *pb.ReplayRequest
	var where string
	switch sc := req.GetScope().(type) {
	case *pb.ReplayRequest_Address:
		if req.GetTenant() != "" || req.GetWorkspace() != "" {
			return nil, status.Error(codes.InvalidArgument,
				"tenant and workspace narrow a shard's replay; an entity's replay takes them from its address: set address.tenant and address.workspace instead")
		}
		addr, shardID, err := s.readTarget(ctx, sc.Address)
		if err != nil {
			return nil, err
		}
		send = &pb.ReplayRequest{Scope: &pb.ReplayRequest_Address{Address: pb.FromAddress(addr)}}
		where = fmt.Sprintf("shard %d", shardID)
	case *pb.ReplayRequest_Shard:
		id, err := s.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		if id.Role != RoleAdmin {
			return nil, roleDenied(id, "replaying a whole shard (every tenant's commands)")
		}
		send = req
		where = fmt.Sprintf("shard %d", sc.Shard)
	default:
		if _, err := s.authenticate(ctx); err != nil {
			return nil, err
		}
		return nil, status.Error(codes.InvalidArgument,
			"give the scope of the replay: address (one entity, any token that may read it) or shard (a whole shard, role admin)")
	}
	rp, ok := s.backend.(Replayer)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "Replay: this node's backend cannot replay")
	}
	rep, err := rp.Replay(ctx, send)
	if err != nil {
		return nil, readError(err, where, "replay")
	}
	return rep, nil
}
