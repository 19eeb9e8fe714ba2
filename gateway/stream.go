package gateway

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	spb "google.golang.org/genproto/googleapis/rpc/status"
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
	return serveStream(s, stream, pb.Gateway_SubmitStream_FullMethodName, (*pb.SubmitStreamRequest).GetId,
		func(ctx context.Context, id Identity, req *pb.SubmitStreamRequest) (*pb.SubmitResponse, error) {
			cmd := req.GetCommand()
			if cmd == nil {
				cmd = &pb.SubmitRequest{}
			}
			resp, served, shardID, err := s.submit(ctx, id, cmd)
			if shardID != noShard {
				s.setRouteTrailers(ctx, cmd.GetAddress(), served, shardID, true)
			}
			return resp, err
		},
		func(id uint64, resp *pb.SubmitResponse, st *spb.Status, tr map[string]string) *pb.SubmitStreamResponse {
			return &pb.SubmitStreamResponse{Id: id, Response: resp, Error: st, Trailers: tr}
		},
		"the node is shutting down; resubmit the commands not answered on this stream", "commands")
}

// GetStream serves many Gets over one call, as SubmitStream serves Submits:
// each message is re-authorized and then runs the unary Get itself.
func (s *Server) GetStream(stream pb.Gateway_GetStreamServer) error {
	return serveStream(s, stream, pb.Gateway_GetStream_FullMethodName, (*pb.GetStreamRequest).GetId,
		func(ctx context.Context, id Identity, req *pb.GetStreamRequest) (*pb.GetResponse, error) {
			get := req.GetGet()
			if get == nil {
				get = &pb.GetRequest{}
			}
			return s.Get(context.WithValue(ctx, identityKey{}, id), get)
		},
		func(id uint64, resp *pb.GetResponse, st *spb.Status, tr map[string]string) *pb.GetStreamResponse {
			return &pb.GetStreamResponse{Id: id, Response: resp, Error: st, Trailers: tr}
		},
		"the node is shutting down; send the reads not answered on this stream again", "reads")
}

// serveStream serves the calls of one stream of method, each as its unary
// call would be: with its own span, a trailer recorder in place of the
// call's (whose trailers are the stream's), and the token re-checked before
// serve runs it. answer builds a message's answer from what the unary call
// would have returned: exactly one of resp and st is set.
func serveStream[QM, AM any, R proto.Message](s *Server, st grpc.BidiStreamingServer[QM, AM], method string,
	msgID func(*QM) uint64,
	serve func(ctx context.Context, id Identity, m *QM) (R, error),
	answer func(id uint64, resp R, st *spb.Status, trailers map[string]string) *AM,
	closingMsg, what string,
) error {
	ident, err := s.authenticate(st.Context())
	if err != nil {
		return err
	}
	sv := &callmux.Server[QM, AM]{
		InFlight: StreamInFlight, MaxBytes: StreamMaxBytes,
		ID:   msgID,
		Size: func(m *QM) int { return proto.Size(any(m).(proto.Message)) },
		Handle: func(ctx context.Context, m *QM) *AM {
			ctx, span := tracer.Start(ctx, method[1:], trace.WithSpanKind(trace.SpanKindServer))
			defer span.End()
			rec := callmux.NewTrailerRecorder(method)
			ctx = grpc.NewContextWithServerTransportStream(ctx, rec)
			var resp R
			id, err := s.auth.recheck(ident)
			if err == nil {
				resp, err = serve(ctx, id, m)
			}
			if err != nil {
				var none R
				return answer(msgID(m), none, status.Convert(err).Proto(), rec.Trailers())
			}
			return answer(msgID(m), resp, nil, rec.Trailers())
		},
		Closing:    s.closing,
		ClosingMsg: closingMsg,
		What:       what,
	}
	return sv.Serve(st)
}
