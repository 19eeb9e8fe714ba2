package cluster

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/callmux"
)

// olderPeer is a node of a version without ForwardStream: the generated
// server answers that method Unimplemented.
type olderPeer struct {
	pb.UnimplementedInternalServer
	calls atomic.Int64
}

func (p *olderPeer) Forward(ctx context.Context, req *pb.ForwardRequest) (*pb.ForwardResponse, error) {
	p.calls.Add(1)
	_ = grpc.SetTrailer(ctx, metadata.Pairs(leaderTrailer, "old"))
	return &pb.ForwardResponse{Result: &pb.Result{CommandId: req.GetCommand().GetId(), Status: pb.Status_STATUS_ACCEPTED}}, nil
}

// connectPeer serves srv as a peer's Internal service on a free port and
// returns a peerPool's connection to it.
func connectPeer(t *testing.T, srv pb.InternalServer) *peerConn {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
	pb.RegisterInternalServer(gs, srv)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	pool := newPeerPool("secret", nil)
	t.Cleanup(pool.close)
	pc, err := pool.client(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// TestForward_FallsBackToUnaryOnAnOlderPeer: during a rolling upgrade a
// peer may not serve ForwardStream; every forward then goes by the unary
// Forward, answered in full (trailers too), and the stream is not tried
// again.
func TestForward_FallsBackToUnaryOnAnOlderPeer(t *testing.T) {
	old := &olderPeer{}
	pc := connectPeer(t, old)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 5 {
		var tr metadata.MD
		resp, err := pc.Forward(ctx, &pb.ForwardRequest{Command: &pb.Command{Id: "c"}}, grpc.Trailer(&tr))
		if err != nil || resp.GetResult().GetCommandId() != "c" {
			t.Fatalf("forward %d: %v, %v", i, resp, err)
		}
		if got := tr.Get(leaderTrailer); len(got) != 1 || got[0] != "old" {
			t.Errorf("forward %d: trailers %v, want the peer's", i, tr)
		}
	}
	if n := old.calls.Load(); n != 5 {
		t.Errorf("the older peer got %d unary Forwards, want 5", n)
	}
	if !pc.fwd.Off() || pc.fwd.Opened() > 1 {
		t.Errorf("stream off %v after Unimplemented, %d opened; want off, at most the first", pc.fwd.Off(), pc.fwd.Opened())
	}
}

// bothPeer serves Forward and ForwardStream, counting each.
type bothPeer struct {
	pb.UnimplementedInternalServer
	unary, streamed atomic.Int64
}

func (p *bothPeer) Forward(_ context.Context, req *pb.ForwardRequest) (*pb.ForwardResponse, error) {
	p.unary.Add(1)
	return &pb.ForwardResponse{Result: &pb.Result{CommandId: req.GetCommand().GetId()}}, nil
}

func (p *bothPeer) ForwardStream(st pb.Internal_ForwardStreamServer) error {
	sv := &callmux.Server[pb.ForwardStreamRequest, pb.ForwardStreamResponse]{
		InFlight: 8, MaxBytes: 8 << 20,
		ID:   (*pb.ForwardStreamRequest).GetId,
		Size: func(m *pb.ForwardStreamRequest) int { return proto.Size(m) },
		Handle: func(_ context.Context, m *pb.ForwardStreamRequest) *pb.ForwardStreamResponse {
			p.streamed.Add(1)
			return &pb.ForwardStreamResponse{Id: m.GetId(), Response: &pb.ForwardResponse{Result: &pb.Result{CommandId: m.GetRequest().GetCommand().GetId()}}}
		},
		Closing: make(chan struct{}), What: "forwarded commands",
	}
	return sv.Serve(st)
}

// TestForward_ALargeCommandGoesByUnary: a command near the message limit is
// forwarded by the unary call, so that it cannot end the stream every other
// forward shares; small ones take the stream.
func TestForward_ALargeCommandGoesByUnary(t *testing.T) {
	peer := &bothPeer{}
	pc := connectPeer(t, peer)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		id   string
		size int
	}{{"small", 100}, {"large", 2 << 20}, {"small2", 100}} {
		resp, err := pc.Forward(ctx, &pb.ForwardRequest{Command: &pb.Command{Id: c.id, Payload: make([]byte, c.size)}})
		if err != nil || resp.GetResult().GetCommandId() != c.id {
			t.Fatalf("forward %s: %v, %v", c.id, resp, err)
		}
	}
	if u, s := peer.unary.Load(), peer.streamed.Load(); u != 1 || s != 2 {
		t.Errorf("%d unary and %d streamed forwards, want the large one unary and the two small ones streamed", u, s)
	}
}
