package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/api/outcome"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/callmux"
	"github.com/rhizon/rhizon/shard"
)

// Trailers of the internal API (the outcome trailer is outcome.Trailer).
const (
	leaderTrailer = "rhizon-leader"
)

// internalServer serves pb.InternalServer for one node.
type internalServer struct {
	pb.UnimplementedInternalServer
	n *Node
}

// RegisterGRPC registers the node-to-node API on gs (the same server as the
// gateway: one port per node for clients and peers).
func (n *Node) RegisterGRPC(gs *grpc.Server) { pb.RegisterInternalServer(gs, &internalServer{n: n}) }

func (s *internalServer) auth(ctx context.Context) error {
	if checkPeerAuth(ctx, s.n.peers.key, time.Now()) != nil {
		return status.Error(codes.Unauthenticated,
			"internal API: missing or wrong peer MAC (a node without this cluster's secret, a clock more than 30s off, or a node of a version that sent the secret itself)")
	}
	return nil
}

// notLeader is the status a replica answers when it does not lead the shard,
// with its best guess of who does.
func (s *internalServer) notLeader(ctx context.Context, id uint32) error {
	if l := s.n.local(id); l != nil {
		if _, leader := l.Raft().LeaderWithID(); leader != "" {
			_ = grpc.SetTrailer(ctx, metadata.Pairs(leaderTrailer, string(leader)))
		}
	}
	return status.Errorf(codes.FailedPrecondition, "node %s does not lead shard %d", s.n.cfg.NodeID, id)
}

func (s *internalServer) Forward(ctx context.Context, req *pb.ForwardRequest) (*pb.ForwardResponse, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	return s.forward(ctx, req)
}

// Forward stream bounds, as the gateway's SubmitStream's: a peer's relay
// sends a page of Sends at once.
const (
	forwardInFlight = 256
	forwardMaxBytes = 8 << 20
)

// ForwardStream serves Forwards over one call: the peer MAC is checked when
// it opens, and each message is served as Forward serves its request, its
// trailers recorded for the answer. The node's shutdown ends it Unavailable
// after answering what it took.
func (s *internalServer) ForwardStream(stream pb.Internal_ForwardStreamServer) error {
	if err := s.auth(stream.Context()); err != nil {
		return err
	}
	sv := &callmux.Server[pb.ForwardStreamRequest, pb.ForwardStreamResponse]{
		InFlight: forwardInFlight, MaxBytes: forwardMaxBytes,
		ID:   (*pb.ForwardStreamRequest).GetId,
		Size: func(m *pb.ForwardStreamRequest) int { return proto.Size(m) },
		Handle: func(ctx context.Context, m *pb.ForwardStreamRequest) *pb.ForwardStreamResponse {
			// A message has no deadline of its own (the unary call brings
			// the caller's): bound it as the router bounds a Submit.
			ctx, cancel := context.WithTimeout(ctx, routeTimeout)
			defer cancel()
			rec := callmux.NewTrailerRecorder(pb.Internal_ForwardStream_FullMethodName)
			resp, err := s.forward(grpc.NewContextWithServerTransportStream(ctx, rec), m.GetRequest())
			out := &pb.ForwardStreamResponse{Id: m.GetId(), Response: resp}
			if err != nil {
				out.Response, out.Error = nil, status.Convert(err).Proto()
			}
			out.Trailers = rec.Trailers()
			return out
		},
		Closing:    s.n.serving,
		ClosingMsg: "node " + s.n.cfg.NodeID + " is shutting down; forward the commands not answered on this stream again",
		What:       "forwarded commands",
	}
	return sv.Serve(stream)
}

// forward submits a forwarded command on this node's replica, which must
// lead its shard.
func (s *internalServer) forward(ctx context.Context, req *pb.ForwardRequest) (*pb.ForwardResponse, error) {
	cmd := req.GetCommand().ToActor()
	id := s.n.groupOf(cmd.Address)
	l := s.n.local(id)
	if l == nil || !l.IsLeader() {
		return nil, s.notLeader(ctx, id)
	}
	res, err := l.Submit(ctx, cmd)
	if err != nil {
		return nil, s.submitStatus(ctx, id, err)
	}
	return &pb.ForwardResponse{Result: pb.FromResult(&res)}, nil
}

// submitStatus encodes a shard error in the dialect of api/outcome, the same
// as the public gateway's: the table's gRPC code, an ErrorInfo whose metadata
// names the code, and the outcome trailer "not_applied" when it was not, so
// the forwarding node can tell "definitely not applied" from "unknown".
func (s *internalServer) submitStatus(ctx context.Context, id uint32, err error) error {
	e := outcome.Of(err)
	switch {
	case errors.Is(err, shard.ErrNotLeader):
		// FailedPrecondition, not the table's Unavailable: a hop answers
		// with its leader hint, and it is what every released node reads.
		return s.notLeader(ctx, id)
	case errors.Is(err, context.Canceled) && ctx.Err() == nil:
		e = outcome.Lookup(outcome.CodeCanceled)
	}
	if e.Applied == outcome.NotApplied {
		// An unknown outcome goes without the trailer, which means the same:
		// nodes before this version read any outcome trailer on Unavailable
		// as "not applied", and must not during a rolling upgrade.
		_ = grpc.SetTrailer(ctx, metadata.Pairs(outcome.Trailer, e.Applied.String()))
	}
	st := status.New(codes.Code(e.GRPC), err.Error())
	if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: e.Reason, Domain: outcome.Domain,
		Metadata: map[string]string{"code": e.Code}}); derr == nil {
		st = withInfo
	}
	return st.Err()
}

func (s *internalServer) Read(ctx context.Context, req *pb.ReadRequest) (*pb.ReadResponse, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	addr := req.GetAddress().ToActor()
	id := s.n.groupOf(addr)
	if req.List != nil {
		id = req.List.Shard
	}
	l := s.n.local(id)
	if l == nil || (!l.IsLeader() && (!req.Stale || l.Halted() != nil)) {
		return nil, s.notLeader(ctx, id)
	}
	out, err := s.n.router.readLocal(ctx, l, addr, req)
	switch {
	case err == nil:
		return out, nil
	case errors.Is(err, shard.ErrNotLeader):
		return nil, s.notLeader(ctx, id)
	case errors.Is(err, shard.ErrClosed), errors.Is(err, shard.ErrUnknownOutcome), errors.Is(err, shard.ErrOverloaded),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return nil, status.Error(codes.Internal, err.Error())
}

func (s *internalServer) ShardAdmin(ctx context.Context, req *pb.ShardAdminRequest) (*pb.ShardAdminResponse, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	l := s.n.local(req.Shard)
	if l == nil {
		return nil, status.Errorf(codes.NotFound, "node %s has no replica of shard %d", s.n.cfg.NodeID, req.Shard)
	}
	r := l.Raft()
	if req.Op != "info" && r.State() != raft.Leader {
		return nil, s.notLeader(ctx, req.Shard)
	}
	const timeout = 10 * time.Second
	var err error
	switch req.Op {
	case "info":
	case "add_nonvoter":
		err = r.AddNonvoter(raft.ServerID(req.NodeId), raft.ServerAddress(req.Address), 0, timeout).Error()
	case "add_voter":
		err = r.AddVoter(raft.ServerID(req.NodeId), raft.ServerAddress(req.Address), 0, timeout).Error()
	case "remove":
		err = r.RemoveServer(raft.ServerID(req.NodeId), 0, timeout).Error()
	case "transfer":
		err = r.LeadershipTransferToServer(raft.ServerID(req.NodeId), raft.ServerAddress(req.Address)).Error()
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown shard admin op %q", req.Op)
	}
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return nil, s.notLeader(ctx, req.Shard)
		}
		return nil, status.Errorf(codes.Unavailable, "shard %d %s %s: %v", req.Shard, req.Op, req.NodeId, err)
	}
	out := &pb.ShardAdminResponse{CommitIndex: r.CommitIndex(), AppliedIndex: l.Meta().Index}
	if _, id := r.LeaderWithID(); id != "" {
		out.Leader = string(id)
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				out.Voters = append(out.Voters, string(srv.ID))
			} else {
				out.Nonvoters = append(out.Nonvoters, string(srv.ID))
			}
		}
	}
	return out, nil
}

func (s *internalServer) Drain(ctx context.Context, req *pb.DrainRequest) (*pb.DrainResponse, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	if req.NodeId != s.n.cfg.NodeID {
		return nil, status.Errorf(codes.InvalidArgument, "node %s asked to drain %s", s.n.cfg.NodeID, req.NodeId)
	}
	if err := s.n.Drain(ctx, req.NodeId, !req.Undo); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &pb.DrainResponse{NodeId: req.NodeId, Draining: !req.Undo}, nil
}

func (s *internalServer) LocalStatus(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	return s.n.localStatus(), nil
}
