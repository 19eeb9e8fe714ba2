package cluster

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
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

// TestForward_FallsBackToUnaryOnAnOlderPeer: during a rolling upgrade a
// peer may not serve ForwardStream; every forward then goes by the unary
// Forward, answered in full (trailers too), and the stream is not tried
// again.
func TestForward_FallsBackToUnaryOnAnOlderPeer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	old := &olderPeer{}
	pb.RegisterInternalServer(gs, old)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	pool := newPeerPool("secret", nil)
	t.Cleanup(pool.close)
	pc, err := pool.client(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
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
