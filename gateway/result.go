package gateway

import (
	"context"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// ResultBackend is the optional capability of a Backend that reads the
// stored result of a command (cluster.Node has it). A separate interface
// so that backends which never answer it (test doubles) need not change;
// without it GetResult answers Unimplemented.
type ResultBackend interface {
	// Result reads the result stored for idempotency key at addr, through
	// the shard leader unless stale; found is false when there is none.
	Result(ctx context.Context, addr actor.Address, key string, stale bool) (res *pb.Result, found bool, appliedIndex uint64, err error)
}

// GetResult returns the stored result of the command submitted to an
// address under an idempotency key: what Submit answered (or would have
// answered) for it. It is a read of that entity, scoped by the token as Get
// is (another tenant's address is PermissionDenied, and audited). Results
// are kept per entity, so the address is part of the request.
func (s *Server) GetResult(ctx context.Context, req *pb.GetResultRequest) (*pb.GetResultResponse, error) {
	key := req.GetIdempotencyKey()
	if _, err := s.authenticate(ctx); err != nil {
		return nil, err
	}
	switch {
	case key == "":
		return nil, status.Error(codes.InvalidArgument, "idempotency_key is required: the key the command was submitted with")
	case len(key) > actor.MaxIdempotencyKeyLen:
		return nil, status.Errorf(codes.InvalidArgument, "idempotency_key is %d bytes; the limit is %d", len(key), actor.MaxIdempotencyKeyLen)
	}
	addr, shardID, err := s.readTarget(ctx, req.GetAddress())
	if err != nil {
		return nil, err
	}
	rb, ok := s.backend.(ResultBackend)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "GetResult is not available on this node")
	}
	stale := req.GetConsistency() == pb.Consistency_CONSISTENCY_STALE
	res, found, applied, err := rb.Result(ctx, addr, key, stale)
	s.setRouteTrailers(ctx, req.GetAddress(), addr, shardID, !stale)
	if err != nil {
		return nil, readError(err, fmt.Sprintf("shard %d", shardID), "result")
	}
	if !found {
		return nil, status.Errorf(codes.NotFound,
			"no result for idempotency key %q at %s (shard %d, applied index %d): no command with that key has been applied to that entity yet "+
				"(an asynchronous one may still be queued: ask again) or it never will be (never submitted there, refused as invalid, or a violation, which stores no result)",
			key, addr, shardID, applied)
	}
	return &pb.GetResultResponse{Result: res, Shard: shardID, AppliedIndex: applied}, nil
}

// JSONGetResultRequest mirrors pb.GetResultRequest.
type JSONGetResultRequest struct {
	Address        *JSONAddress `json:"address"`
	IdempotencyKey string       `json:"idempotency_key"`
	Consistency    string       `json:"consistency,omitempty"`
}

// JSONGetResultResponse mirrors pb.GetResultResponse.
type JSONGetResultResponse struct {
	Result       *JSONResult `json:"result"`
	Shard        uint32      `json:"shard"`
	AppliedIndex uint64      `json:"applied_index"`
}

// httpGetResult serves POST /v1/result.
func (s *Server) httpGetResult(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error) {
	var in JSONGetResultRequest
	if err := decodeBody(w, r, &in); err != nil {
		return nil, err
	}
	c, err := parseConsistency(in.Consistency)
	if err != nil {
		return nil, err
	}
	resp, err := s.GetResult(ctx, &pb.GetResultRequest{Address: in.Address.proto(), IdempotencyKey: in.IdempotencyKey, Consistency: c})
	if err != nil {
		return nil, err
	}
	return &JSONGetResultResponse{Result: resultJSON(resp.GetResult()), Shard: resp.GetShard(), AppliedIndex: resp.GetAppliedIndex()}, nil
}
