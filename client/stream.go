package client

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/callmux"
)

// Streamed submits.
//
// A unary Submit costs both sides an HTTP/2 stream, headers and the stats
// handlers per call, about 3x the per-call CPU of a message on a stream that
// is already open (shared/PERF-NOTES.md). So by default each connection
// keeps one SubmitStream open and Submit sends its command there, tagged
// with an id; the answer carries exactly what the unary call would have
// answered (status, details, trailers), so the retry loop and the routing
// code of Submit see no difference (internal/callmux says how a stream
// breaks and what its calls then get).

// maxStreamItemBytes: a larger command goes by unary Submit, so that a
// command over the server's message limit fails alone, with the unary error,
// instead of ending the stream for every command on it.
const maxStreamItemBytes = 1<<20 + 64<<10

// submitMux is a connection's SubmitStream, getMux its GetStream.
type (
	submitMux = callmux.Mux[pb.SubmitRequest, pb.SubmitResponse, pb.SubmitStreamRequest, pb.SubmitStreamResponse]
	getMux    = callmux.Mux[pb.GetRequest, pb.GetResponse, pb.GetStreamRequest, pb.GetStreamResponse]
)

// gwConn is a connection's Gateway client and its streams.
type gwConn struct {
	pb.GatewayClient
	st  *submitMux
	get *getMux
}

func newGWConn(gw pb.GatewayClient) *gwConn {
	return &gwConn{
		GatewayClient: gw,
		st: callmux.New(callmux.Codec[pb.SubmitRequest, pb.SubmitResponse, pb.SubmitStreamRequest, pb.SubmitStreamResponse]{
			Open: func(ctx context.Context) (grpc.BidiStreamingClient[pb.SubmitStreamRequest, pb.SubmitStreamResponse], error) {
				return gw.SubmitStream(ctx)
			},
			Wrap: func(id uint64, req *pb.SubmitRequest) *pb.SubmitStreamRequest {
				return &pb.SubmitStreamRequest{Id: id, Command: req}
			},
			Unwrap: func(m *pb.SubmitStreamResponse) (uint64, *pb.SubmitResponse, *spb.Status, map[string]string) {
				return m.GetId(), m.GetResponse(), m.GetError(), m.GetTrailers()
			},
			Name: "submit stream", What: "command",
			Lost: callmux.LostCommand,
		}),
		get: callmux.New(callmux.Codec[pb.GetRequest, pb.GetResponse, pb.GetStreamRequest, pb.GetStreamResponse]{
			Open: func(ctx context.Context) (grpc.BidiStreamingClient[pb.GetStreamRequest, pb.GetStreamResponse], error) {
				return gw.GetStream(ctx)
			},
			Wrap: func(id uint64, req *pb.GetRequest) *pb.GetStreamRequest {
				return &pb.GetStreamRequest{Id: id, Get: req}
			},
			Unwrap: func(m *pb.GetStreamResponse) (uint64, *pb.GetResponse, *spb.Status, map[string]string) {
				return m.GetId(), m.GetResponse(), m.GetError(), m.GetTrailers()
			},
			Name: "get stream", What: "read",
			Lost: "send it again (a read changes nothing)",
		}),
	}
}

// streamable reports whether a call may go by stream: the caller set
// nothing one message of a shared call could carry for it (call options,
// outgoing metadata, a trace to continue) and the request is not large.
func streamable(ctx context.Context, opts []grpc.CallOption, req proto.Message) bool {
	if len(opts) > 0 {
		return false
	}
	if _, ok := metadata.FromOutgoingContext(ctx); ok {
		return false
	}
	if trace.SpanContextFromContext(ctx).IsValid() {
		return false
	}
	return proto.Size(req) <= maxStreamItemBytes
}
