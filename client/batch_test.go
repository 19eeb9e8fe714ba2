package client

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/testkit"
)

// batchServer is a gateway whose backend holds every command until the
// test opens the gate, and which counts the calls that reach it.
type batchServer struct {
	be   *scriptedBackend
	addr string
	gate chan struct{}

	mu        sync.Mutex
	submits   int // Submit calls
	batches   int // SubmitBatch calls that reached the handler
	batchCmds int // commands in them
	noBatch   bool
}

func serveBatches(t *testing.T, noBatch bool) *batchServer {
	t.Helper()
	bs := &batchServer{gate: make(chan struct{}), noBatch: noBatch}
	count := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		bs.mu.Lock()
		switch info.FullMethod {
		case pb.Gateway_Submit_FullMethodName:
			bs.submits++
		case pb.Gateway_SubmitBatch_FullMethodName:
			if bs.noBatch {
				bs.mu.Unlock()
				return nil, status.Error(codes.Unimplemented, "unknown method SubmitBatch")
			}
			bs.batches++
			bs.batchCmds += len(req.(*pb.SubmitBatchRequest).GetCommands())
		}
		bs.mu.Unlock()
		return h(ctx, req)
	}
	bs.be, bs.addr = serveWith(t, func(_ int, cmd actor.Command) (actor.Result, error) {
		<-bs.gate
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	}, grpc.ChainUnaryInterceptor(count))
	// One shard, led by the node at addr: the client routes to it.
	bs.be.table.Store(&pb.StatusResponse{
		ShardCount: 1,
		Shards:     []*pb.ShardStatus{{Shard: 0, NodeId: "n1", Role: "Leader", Term: 1}},
		Nodes:      []*pb.NodeStatus{{NodeId: "n1", State: "alive", GrpcAddr: bs.addr}},
	})
	return bs
}

func (bs *batchServer) counts() (submits, batches, batchCmds int) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return bs.submits, bs.batches, bs.batchCmds
}

// routedClient dials bs with routing on and waits until it routes.
func routedClient(t *testing.T, bs *batchServer, opts ...Option) *Client {
	t.Helper()
	c := dial(t, bs.addr, append([]Option{WithTenant("dev"), WithWorkspace("w1"), WithLeaderRouting(true), WithSubmitBatching(true)}, opts...)...)
	c.r.run()
	testkit.Eventually(t, 5*time.Second, "a route table installed", func() (bool, string) {
		return c.r.table.Load() != nil, "no route table"
	})
	return c
}

// queued is how many submits wait in c's lanes.
func queued(c *Client) int {
	c.batch.mu.Lock()
	defer c.batch.mu.Unlock()
	n := 0
	for _, l := range c.batch.lanes {
		n += len(l.queue)
	}
	return n
}

// backendHas is a condition: n commands have reached bs's backend.
func backendHas(bs *batchServer, n int) func() (bool, string) {
	return func() (bool, string) {
		got := len(bs.be.commands())
		return got == n, fmt.Sprintf("%d commands at the backend, want %d", got, n)
	}
}

// queuedIs is a condition: n submits wait in c's lanes.
func queuedIs(c *Client, n int) func() (bool, string) {
	return func() (bool, string) {
		got := queued(c)
		return got == n, fmt.Sprintf("%d submits queued, want %d", got, n)
	}
}

// submitAll submits n commands concurrently, each with its own key, and
// returns their errors by key once all have answered.
func submitAll(c *Client, n int, key func(int) string) chan map[string]error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := map[string]error{}
	for i := range n {
		wg.Go(func() {
			req := addReq()
			req.IdempotencyKey = key(i)
			_, err := c.Submit(context.Background(), req)
			mu.Lock()
			errs[req.IdempotencyKey] = err
			mu.Unlock()
		})
	}
	done := make(chan map[string]error, 1)
	go func() { wg.Wait(); done <- errs }()
	return done
}

// busyThenQueue fills the lane's calls with held commands, queues n more
// behind them, releases the backend and checks that every submit succeeded.
func busyThenQueue(t *testing.T, bs *batchServer, c *Client, n int, key func(int) string) {
	t.Helper()
	first := submitAll(c, batchInflight, key)
	testkit.Eventually(t, 10*time.Second, "the first calls to reach the backend", backendHas(bs, batchInflight))
	rest := submitAll(c, n, func(i int) string { return key(batchInflight + i) })
	testkit.Eventually(t, 10*time.Second, fmt.Sprint(n, " submits to queue"), queuedIs(c, n))
	close(bs.gate)
	for _, errs := range []map[string]error{<-first, <-rest} {
		for k, err := range errs {
			if err != nil {
				t.Errorf("%s: %v", k, err)
			}
		}
	}
}

// Submits that find the leader's calls all busy wait and then go together:
// 4 plain calls, then the 40 that queued meanwhile in far fewer batches,
// each command reaching the backend once with its own answer.
func TestSubmitBatchingCoalescesConcurrentSubmits(t *testing.T) {
	bs := serveBatches(t, false)
	c := routedClient(t, bs)
	key := func(i int) string { return fmt.Sprint("k", i) }
	busyThenQueue(t, bs, c, 40, key)
	seen := map[string]int{}
	for _, cmd := range bs.be.commands() {
		seen[cmd.IdempotencyKey]++
	}
	for i := range batchInflight + 40 {
		if seen[key(i)] != 1 {
			t.Errorf("%s reached the backend %d times", key(i), seen[key(i)])
		}
	}
	submits, batches, batchCmds := bs.counts()
	t.Logf("%d Submit calls, %d SubmitBatch calls carrying %d commands", submits, batches, batchCmds)
	if submits+batchCmds != batchInflight+40 || batches == 0 || batches > 10 {
		t.Fatalf("%d Submit and %d SubmitBatch calls (%d commands) for %d submits", submits, batches, batchCmds, batchInflight+40)
	}
}

// A queued submit whose caller gives up is never sent: its command cannot
// take effect behind the caller's back.
func TestSubmitBatchingDropsAnAbandonedSubmit(t *testing.T) {
	bs := serveBatches(t, false)
	c := routedClient(t, bs)
	first := submitAll(c, batchInflight, func(i int) string { return fmt.Sprint("busy", i) })
	testkit.Eventually(t, 10*time.Second, "the first calls to reach the backend", backendHas(bs, batchInflight))
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		req := addReq()
		req.IdempotencyKey = "abandoned"
		_, err := c.Submit(ctx, req)
		gone <- err
	}()
	testkit.Eventually(t, 10*time.Second, "the submit to queue", queuedIs(c, 1))
	cancel()
	if err := <-gone; status.Code(err) != codes.Canceled {
		t.Fatalf("abandoned submit: %v, want Canceled", err)
	}
	kept := submitAll(c, 2, func(i int) string { return fmt.Sprint("kept", i) })
	close(bs.gate)
	<-first
	for k, err := range <-kept {
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	for _, cmd := range bs.be.commands() {
		if cmd.IdempotencyKey == "abandoned" {
			t.Fatal("the abandoned submit reached the backend")
		}
	}
}

// Against a gateway without SubmitBatch (an older node) the queued submits
// go one by one, and the client stops batching.
func TestSubmitBatchingFallsBackWithoutSubmitBatch(t *testing.T) {
	bs := serveBatches(t, true)
	c := routedClient(t, bs)
	key := func(i int) string { return fmt.Sprint("k", i) }
	busyThenQueue(t, bs, c, 10, key)
	if n := len(bs.be.commands()); n != batchInflight+10 {
		t.Fatalf("%d commands reached the backend, want %d", n, batchInflight+10)
	}
	if !c.batch.off.Load() {
		t.Fatal("the client still batches after Unimplemented")
	}
}

// WithSubmitBatching(false): every submit is its own call (unary here, to
// count them; streamed submits are tested in stream_test.go).
func TestSubmitBatchingOff(t *testing.T) {
	bs := serveBatches(t, false)
	c := routedClient(t, bs, WithSubmitBatching(false), WithUnarySubmits())
	done := submitAll(c, 20, func(i int) string { return fmt.Sprint("k", i) })
	testkit.Eventually(t, 10*time.Second, "20 commands at the backend", backendHas(bs, 20))
	close(bs.gate)
	for k, err := range <-done {
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	if submits, batches, _ := bs.counts(); submits != 20 || batches != 0 {
		t.Fatalf("%d Submit and %d SubmitBatch calls, want 20 and 0", submits, batches)
	}
}
