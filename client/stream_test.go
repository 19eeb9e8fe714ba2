package client

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Streamed submits (the default) on a real cluster: each acknowledged add
// applied once, and streams were in fact used.
func TestRouting_StreamedSubmitsApplyOnce(t *testing.T) {
	tc := startCluster(t)
	c := tc.dial(t)
	ents := entities(96)
	var tl tally
	warmUp(t, tc, c, &tl, ents)
	addAll(t, c, &tl, ents, 96, 4)
	if c.strm == nil || c.strm.opened.Load() == 0 {
		t.Fatal("routed submits and not one SubmitStream")
	}
	checkTally(t, c, &tl)
}

// Streams cut with commands in flight: every command whose stream broke is
// retried with its command id, and each acknowledged add applied exactly
// once.
func TestRouting_StreamCutMidFlightAppliesOnce(t *testing.T) {
	tc := startCluster(t)
	c := tc.dial(t)
	ents := entities(64)
	var tl tally
	warmUp(t, tc, c, &tl, ents)
	stop := make(chan struct{})
	var cuts atomic.Int64
	var wg sync.WaitGroup
	// A bounded number of cuts, far apart: every submit must still succeed
	// within its retries, so that the tally is exact.
	wg.Go(func() {
		for range 10 {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			c.strm.mu.Lock()
			for _, cs := range c.strm.byEP {
				cs.mu.Lock()
				if len(cs.wait) > 0 {
					cuts.Add(1)
				}
				cs.mu.Unlock()
				cs.cancel()
			}
			c.strm.mu.Unlock()
		}
	})
	addAll(t, c, &tl, ents, 64, 8)
	close(stop)
	wg.Wait()
	if cuts.Load() == 0 {
		t.Fatal("no stream was cut with a command in flight")
	}
	t.Logf("%d cuts with commands in flight, %d streams opened", cuts.Load(), c.strm.opened.Load())
	checkTally(t, c, &tl)
}

// A broken stream's command retried with the same command id comes back as
// the original result, marked replay, not as a second effect.
func TestStreamBrokenRetryIsReplay(t *testing.T) {
	var mu sync.Mutex
	applied := map[string]actor.Result{}
	cut := make(chan struct{})
	var c *Client
	bs := &batchServer{}
	bs.be, bs.addr = serveWith(t, func(_ int, cmd actor.Command) (actor.Result, error) {
		mu.Lock()
		if r, ok := applied[cmd.IdempotencyKey]; ok {
			mu.Unlock()
			r.Replay = true
			return r, nil
		}
		r := actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1, Index: 5}
		applied[cmd.IdempotencyKey] = r
		first := len(applied) == 1
		mu.Unlock()
		if first {
			// Applied, but the stream breaks before the answer.
			close(cut)
			time.Sleep(300 * time.Millisecond)
		}
		return r, nil
	})
	bs.be.table.Store(&pb.StatusResponse{
		ShardCount: 1,
		Shards:     []*pb.ShardStatus{{Shard: 0, NodeId: "n1", Role: "Leader", Term: 1}},
		Nodes:      []*pb.NodeStatus{{NodeId: "n1", State: "alive", GrpcAddr: bs.addr}},
	})
	c = routedClient(t, bs, WithSubmitBatching(false), WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
	go func() {
		<-cut
		c.strm.mu.Lock()
		for _, cs := range c.strm.byEP {
			cs.cancel()
		}
		c.strm.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Submit(ctx, &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: "e"}, Type: "cmd.counter.add", Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetResult().GetReplay() {
		t.Fatalf("result %v after a broken stream, want the replay", resp.GetResult())
	}
	if c.strm.opened.Load() < 2 {
		t.Fatalf("%d streams opened; the first should have broken", c.strm.opened.Load())
	}
	if len(applied) != 1 {
		t.Fatalf("%d commands applied", len(applied))
	}
}

// A node without SubmitStream answers Unimplemented: the client sends the
// command as a unary Submit, and every later one too.
func TestStreamUnimplementedFallsBackToUnary(t *testing.T) {
	var streams atomic.Int64
	refuse := func(_ any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod == pb.Gateway_SubmitStream_FullMethodName {
			streams.Add(1)
			return status.Errorf(codes.Unimplemented, "unknown method SubmitStream for service rhizon.v1.Gateway")
		}
		return h(nil, ss)
	}
	bs := &batchServer{gate: make(chan struct{})}
	close(bs.gate)
	var units atomic.Int64
	bs.be, bs.addr = serveWith(t, func(_ int, cmd actor.Command) (actor.Result, error) {
		units.Add(1)
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	}, grpc.ChainStreamInterceptor(refuse))
	bs.be.table.Store(&pb.StatusResponse{
		ShardCount: 1,
		Shards:     []*pb.ShardStatus{{Shard: 0, NodeId: "n1", Role: "Leader", Term: 1}},
		Nodes:      []*pb.NodeStatus{{NodeId: "n1", State: "alive", GrpcAddr: bs.addr}},
	})
	c := routedClient(t, bs, WithSubmitBatching(false))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		resp, err := c.Submit(ctx, &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: "e"}, Type: "cmd.counter.add", Payload: []byte(`{}`)})
		if err != nil || resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
			t.Fatalf("%v %v", resp, err)
		}
	}
	if streams.Load() != 1 || units.Load() != 3 || !c.strm.off.Load() {
		t.Fatalf("%d stream attempts, %d commands applied, off=%v; want 1, 3, true", streams.Load(), units.Load(), c.strm.off.Load())
	}
}

// WithSubmitStream(false) sends unary calls.
func TestStreamOptionOff(t *testing.T) {
	bs := serveBatches(t, false)
	close(bs.gate)
	c := routedClient(t, bs, WithSubmitBatching(false), WithSubmitStream(false))
	if c.strm != nil {
		t.Fatal("streaming is on after WithSubmitStream(false)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Submit(ctx, &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: "e"}, Type: "cmd.counter.add", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := bs.counts(); s != 1 {
		t.Fatalf("%d unary submits, want 1", s)
	}
}
