package gateway

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Routing hints. Any gateway accepts any request and forwards it to the
// shard's leader, which costs both nodes CPU and the caller a network hop;
// a client that computes the shard itself (actor.ShardOf, with the shard
// count and leaders of the Status call) can send it to the leader's gateway
// directly. These gRPC trailers keep such a client's table current without
// polling: they are set on Submit, Get and History answers (errors
// included) and cost nothing when the request came to the right place.
const (
	// LeaderTrailer names the node that leads the request's shard, as far as
	// this node knows, when it is another node (so the request was, or would
	// have been, forwarded); LeaderAddrTrailer is that node's gateway gRPC
	// address. Absent when this node leads the shard or knows no leader.
	LeaderTrailer     = "rhizon-leader"
	LeaderAddrTrailer = "rhizon-leader-addr"
	// ScopeTrailer is "tenant/workspace" of the address the gateway served
	// when the request left the tenant or workspace empty (the token's
	// defaults filled them in), so that the client can compute the shard of
	// its next such request. IDs cannot contain '/'.
	ScopeTrailer = "rhizon-scope"
)

// RouteHinter is implemented by a Backend that forwards requests for shards
// led elsewhere (the cluster node); the gateway then sets LeaderTrailer.
type RouteHinter interface {
	// LeaderHint returns the node leading shard and its gateway gRPC
	// address, with remote false when this node leads it itself or knows no
	// other leader with an address.
	LeaderHint(shard uint32) (node, grpcAddr string, remote bool)
}

// setRouteTrailers sets the routing trailers of a request for addr (as the
// client sent it) served as served on shard; leader is false for a stale
// read, which any replica serves. Outside a gRPC handler (the HTTP gateway)
// there is no trailer to set, and nothing is done.
func (s *Server) setRouteTrailers(ctx context.Context, addr *pb.Address, served actor.Address, shard uint32, leader bool) {
	if grpc.ServerTransportStreamFromContext(ctx) == nil {
		return
	}
	var kv []string
	if addr.GetTenant() == "" || addr.GetWorkspace() == "" {
		kv = append(kv, ScopeTrailer, served.Tenant+"/"+served.Workspace)
	}
	if leader && s.hinter != nil {
		if node, grpcAddr, remote := s.hinter.LeaderHint(shard); remote {
			kv = append(kv, LeaderTrailer, node, LeaderAddrTrailer, grpcAddr)
		}
	}
	if len(kv) > 0 {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(kv...))
	}
}
