package gateway

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/callmux"
)

// SubmitStream bounds. A stream stops reading while either is reached, so a
// fast client is held back by HTTP/2 flow control instead of growing the
// node's memory: StreamInFlight commands, or StreamMaxBytes of requests, in
// flight at once (a single larger request is still taken, alone).
const (
	StreamInFlight = 256
	StreamMaxBytes = 8 << 20
)

// SubmitStream serves many Submits over one call (see the proto). The token
// is authenticated once, when the stream opens; each message then re-checks
// that it is still in the token table and unexpired (a map lookup by its
// digest), so a reload or an expiry takes effect from the next message, as
// for unary calls, without bounding the stream's lifetime. Each message goes
// through submit, exactly as a unary Submit. The node's shutdown ends the
// stream Unavailable after answering the commands it took.
func (s *Server) SubmitStream(stream pb.Gateway_SubmitStreamServer) error {
	id, err := s.authenticate(stream.Context())
	if err != nil {
		return err
	}
	sv := &callmux.Server[pb.SubmitStreamRequest, pb.SubmitStreamResponse]{
		InFlight: StreamInFlight, MaxBytes: StreamMaxBytes,
		ID:   (*pb.SubmitStreamRequest).GetId,
		Size: func(m *pb.SubmitStreamRequest) int { return proto.Size(m) },
		Handle: func(ctx context.Context, m *pb.SubmitStreamRequest) *pb.SubmitStreamResponse {
			return s.streamed(ctx, id, m)
		},
		Closing:    s.closing,
		ClosingMsg: "the node is shutting down; resubmit the commands not answered on this stream",
		What:       "commands",
	}
	return sv.Serve(stream)
}

// streamed runs a message as a unary Submit would, with its own span and a
// trailer recorder in place of the call's (whose trailers are the stream's).
func (s *Server) streamed(ctx context.Context, ident Identity, req *pb.SubmitStreamRequest) *pb.SubmitStreamResponse {
	ctx, span := tracer.Start(ctx, pb.Gateway_SubmitStream_FullMethodName[1:], trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	rec := callmux.NewTrailerRecorder(pb.Gateway_SubmitStream_FullMethodName)
	ctx = grpc.NewContextWithServerTransportStream(ctx, rec)
	out := &pb.SubmitStreamResponse{Id: req.GetId()}
	cmd := req.GetCommand()
	if cmd == nil {
		cmd = &pb.SubmitRequest{}
	}
	id, err := s.auth.recheck(ident)
	var resp *pb.SubmitResponse
	if err == nil {
		r, served, shardID, serr := s.submit(ctx, id, cmd)
		if shardID != noShard {
			s.setRouteTrailers(ctx, cmd.GetAddress(), served, shardID, true)
		}
		resp, err = r, serr
	}
	if err != nil {
		out.Error = status.Convert(err).Proto()
	} else {
		out.Response = resp
	}
	out.Trailers = rec.Trailers()
	return out
}
