package callmux

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// echoGateway serves SubmitStream with a callmux.Server whose handler
// answers each command with its own id, or an error for type "fail".
type echoGateway struct {
	pb.UnimplementedGatewayServer
	sv *Server[pb.SubmitStreamRequest, pb.SubmitStreamResponse]
}

func (g *echoGateway) SubmitStream(st pb.Gateway_SubmitStreamServer) error { return g.sv.Serve(st) }

func startEcho(t *testing.T) (*echoGateway, *Mux[pb.SubmitRequest, pb.SubmitResponse, pb.SubmitStreamRequest, pb.SubmitStreamResponse]) {
	t.Helper()
	g := &echoGateway{sv: &Server[pb.SubmitStreamRequest, pb.SubmitStreamResponse]{
		InFlight: 64, MaxBytes: 1 << 20,
		ID:   (*pb.SubmitStreamRequest).GetId,
		Size: func(m *pb.SubmitStreamRequest) int { return proto.Size(m) },
		Handle: func(ctx context.Context, m *pb.SubmitStreamRequest) *pb.SubmitStreamResponse {
			out := &pb.SubmitStreamResponse{Id: m.GetId()}
			if m.GetCommand().GetType() == "fail" {
				out.Error = status.New(codes.FailedPrecondition, "refused "+m.GetCommand().GetCommandId()).Proto()
				out.Trailers = map[string]string{"rhizon-leader": "n9"}
				return out
			}
			out.Response = &pb.SubmitResponse{Result: &pb.Result{CommandId: m.GetCommand().GetCommandId()}}
			return out
		},
		Closing: make(chan struct{}), ClosingMsg: "closing", What: "commands",
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterGatewayServer(gs, g)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	gw := pb.NewGatewayClient(conn)
	m := New(Codec[pb.SubmitRequest, pb.SubmitResponse, pb.SubmitStreamRequest, pb.SubmitStreamResponse]{
		Open: func(ctx context.Context) (grpc.BidiStreamingClient[pb.SubmitStreamRequest, pb.SubmitStreamResponse], error) {
			return gw.SubmitStream(ctx)
		},
		Wrap: func(id uint64, req *pb.SubmitRequest) *pb.SubmitStreamRequest {
			return &pb.SubmitStreamRequest{Id: id, Command: req}
		},
		Unwrap: func(m *pb.SubmitStreamResponse) (uint64, *pb.SubmitResponse, *spb.Status, map[string]string) {
			return m.GetId(), m.GetResponse(), m.GetError(), m.GetTrailers()
		},
		Name: "test stream", What: "command",
		Lost: "its outcome is unknown",
	})
	t.Cleanup(m.Close)
	return g, m
}

// TestMux_ConcurrentCallsGetTheirOwnAnswers: many callers on one stream,
// each answered with its own response, or its own error and trailers.
func TestMux_ConcurrentCallsGetTheirOwnAnswers(t *testing.T) {
	_, m := startEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			id, typ := fmt.Sprint("c", i), "ok"
			if i%5 == 0 {
				typ = "fail"
			}
			var tr metadata.MD
			resp, err := m.Call(ctx, &pb.SubmitRequest{Type: typ, CommandId: id}, &tr)
			if typ == "fail" {
				if status.Code(err) != codes.FailedPrecondition || status.Convert(err).Message() != "refused "+id || len(tr.Get("rhizon-leader")) != 1 {
					t.Errorf("call %s: %v, trailers %v; want its own refusal and trailer", id, err, tr)
				}
				return
			}
			if err != nil || resp.GetResult().GetCommandId() != id {
				t.Errorf("call %s: %v, %v; want its own answer", id, resp, err)
			}
		})
	}
	wg.Wait()
	if n := m.Opened(); n != 1 {
		t.Errorf("%d streams opened, want 1", n)
	}
}

// TestServer_CallsInARowReuseAWorker: calls one after another run on a
// worker kept from the call before, not a goroutine each (whose stack
// grows anew through the handler every time).
func TestServer_CallsInARowReuseAWorker(t *testing.T) {
	g, m := startEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 100 {
		if _, err := m.Call(ctx, &pb.SubmitRequest{Type: "ok", CommandId: fmt.Sprint(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := g.sv.workers.Load(); n > 5 {
		t.Errorf("%d workers started for 100 calls in a row, want a few", n)
	}
}
