package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Submit batching.
//
// Under load a routing client has many submits in flight to each shard
// leader, and each gRPC call costs both sides work of its own (an HTTP/2
// stream, headers, a server goroutine, the stats handlers) of the order of
// what the command itself costs the leader. So the client coalesces: to each
// (leader, shard) it keeps at most batchInflight calls in flight. A submit
// that finds them all busy queues, and when one of them returns, everything
// queued meanwhile goes out in one SubmitBatch. Nothing waits for a timer: a
// submit alone goes out at once as a plain Submit, so batching adds no
// latency when there is no load.
//
// Each command keeps its own idempotency key, outcome and retries; the
// batch is only a way of carrying them. The commands of a batch were
// concurrent at the caller, so they have no order among themselves.

// Batching limits. Calls in flight per shard: 4, the best measured
// (bench/MEASUREMENTS.md, "Figures once kept in code").
const (
	batchInflight     = 4
	maxBatchItems     = 256
	maxBatchBytes     = 512 << 10 // well under the gateway's MaxRecvMsgSize
	maxBatchItemBytes = 16 << 10  // a larger command goes alone
)

// item states: a queued item is either sent or abandoned by its caller,
// never both, so a caller that gives up knows its command was not sent.
const (
	itemQueued int32 = iota
	itemSent
	itemAbandoned
)

type batchKey struct {
	ep    *endpoint
	shard uint32
}

// lane is the calls to one shard leader.
type lane struct {
	inflight int
	queue    []*batchItem
}

type batchItem struct {
	ctx   context.Context
	req   *pb.SubmitRequest
	size  int
	state atomic.Int32
	done  chan batchReply // buffered: the sender never waits for the caller
}

type batchReply struct {
	resp *pb.SubmitResponse
	tr   metadata.MD
	err  error
}

// errNoBatch tells a queued item's caller to send its command by itself:
// the server has no SubmitBatch (an older node).
var errNoBatch = status.Error(codes.Unimplemented, "SubmitBatch not served")

type batcher struct {
	off   atomic.Bool // the cluster does not serve SubmitBatch
	mu    sync.Mutex
	lanes map[batchKey]*lane // bounded by nodes × shards
	sent  atomic.Uint64      // SubmitBatch calls made, for tests
}

func newBatcher() *batcher { return &batcher{lanes: map[batchKey]*lane{}} }

// batchable reports whether a submit may join a batch: it was routed to a
// known shard's leader, and the caller set nothing a batch could not carry
// for it (call options, outgoing metadata, a trace to continue).
func (b *batcher) batchable(ctx context.Context, rc *routeCall, opts []grpc.CallOption) bool {
	if b == nil || b.off.Load() || rc == nil || rc.routed == nil || !rc.known || len(opts) > 0 {
		return false
	}
	if _, ok := metadata.FromOutgoingContext(ctx); ok {
		return false
	}
	return !trace.SpanContextFromContext(ctx).IsValid()
}

// submit sends req to the leader of rc's shard, alone or in a batch, and
// returns its answer and the trailers of the call that carried it.
func (b *batcher) submit(ctx context.Context, rc *routeCall, gw pb.GatewayClient, req *pb.SubmitRequest) (*pb.SubmitResponse, metadata.MD, error) {
	size := proto.Size(req)
	if size > maxBatchItemBytes {
		return submitAlone(ctx, gw, req)
	}
	key := batchKey{ep: rc.routed, shard: rc.shard}
	b.mu.Lock()
	l := b.lanes[key]
	if l == nil {
		l = &lane{}
		b.lanes[key] = l
	}
	if l.inflight < batchInflight {
		l.inflight++
		b.mu.Unlock()
		resp, tr, err := submitAlone(ctx, gw, req)
		b.release(key, l)
		return resp, tr, err
	}
	it := &batchItem{ctx: ctx, req: req, size: size, done: make(chan batchReply, 1)}
	l.queue = append(l.queue, it)
	b.mu.Unlock()
	select {
	case r := <-it.done:
		if r.err == errNoBatch {
			return submitAlone(ctx, gw, req)
		}
		return r.resp, r.tr, r.err
	case <-ctx.Done():
		// Not sent yet: it never will be. Sent: the outcome is unknown, as
		// for a plain call cancelled in flight.
		it.state.CompareAndSwap(itemQueued, itemAbandoned)
		return nil, nil, status.FromContextError(ctx.Err()).Err()
	}
}

func submitAlone(ctx context.Context, gw pb.GatewayClient, req *pb.SubmitRequest) (*pb.SubmitResponse, metadata.MD, error) {
	var tr metadata.MD
	resp, err := gw.Submit(ctx, req, grpc.Trailer(&tr))
	return resp, tr, err
}

// release hands a finished call's slot in l to what queued meanwhile, or
// frees it.
func (b *batcher) release(key batchKey, l *lane) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(l.queue) == 0 {
		l.inflight--
		return
	}
	go b.drain(key, l)
}

// drain sends l's queue in batches while it has one, holding one slot.
func (b *batcher) drain(key batchKey, l *lane) {
	for {
		b.mu.Lock()
		items := b.take(l)
		if len(items) == 0 {
			l.inflight--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.send(key.ep, items)
	}
}

// take removes up to a batch's worth of items from l's queue, skipping those
// whose callers gave up, and marks them sent. b.mu is held.
func (b *batcher) take(l *lane) []*batchItem {
	var items []*batchItem
	n, bytes := 0, 0
	for _, it := range l.queue {
		if len(items) == maxBatchItems || (len(items) > 0 && bytes+it.size > maxBatchBytes) {
			break
		}
		n++
		if it.state.CompareAndSwap(itemQueued, itemSent) {
			items = append(items, it)
			bytes += it.size
		}
	}
	rest := copy(l.queue, l.queue[n:])
	clear(l.queue[rest:])
	l.queue = l.queue[:rest]
	return items
}

// send carries items in one call and hands each its outcome.
func (b *batcher) send(ep *endpoint, items []*batchItem) {
	gw := ep.ready()
	if gw == nil {
		gw = ep.any() // it fails fast, and each caller's retry reroutes
	}
	ctx, cancel := batchContext(items)
	defer cancel()
	if len(items) == 1 {
		resp, tr, err := submitAlone(ctx, gw, items[0].req)
		items[0].done <- batchReply{resp: resp, tr: tr, err: err}
		return
	}
	req := &pb.SubmitBatchRequest{Commands: make([]*pb.SubmitRequest, len(items))}
	for i, it := range items {
		req.Commands[i] = it.req
	}
	var tr metadata.MD
	b.sent.Add(1)
	resp, err := gw.SubmitBatch(ctx, req, grpc.Trailer(&tr))
	if status.Code(err) == codes.Unimplemented {
		b.off.Store(true)
		err = errNoBatch
	}
	outs := resp.GetOutcomes()
	for i, it := range items {
		r := batchReply{tr: tr, err: err}
		if err == nil {
			r.resp, r.err = outcome(outs, i)
		}
		it.done <- r
	}
}

// outcome is the i-th command's answer in a SubmitBatch response.
func outcome(outs []*pb.SubmitOutcome, i int) (*pb.SubmitResponse, error) {
	if i >= len(outs) {
		return nil, status.Errorf(codes.Internal, "rhizon: the batch answer has %d outcomes, not one per command", len(outs))
	}
	if e := outs[i].GetError(); e.GetCode() != int32(codes.OK) {
		return nil, status.ErrorProto(e)
	}
	if r := outs[i].GetResponse(); r != nil {
		return r, nil
	}
	return nil, status.Error(codes.Internal, "rhizon: a batch outcome has neither a response nor an error")
}

// batchContext is the context of a call carrying items: it ends at the
// latest of their deadlines (none if one has none) and once every caller
// has given up, as each one's own call would have.
func batchContext(items []*batchItem) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, it := range items {
		d, ok := it.ctx.Deadline()
		if !ok {
			latest = time.Time{}
			break
		}
		if d.After(latest) {
			latest = d
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	if !latest.IsZero() {
		cancel()
		ctx, cancel = context.WithDeadline(context.Background(), latest)
	}
	left := atomic.Int64{}
	left.Store(int64(len(items)))
	stops := make([]func() bool, len(items))
	for i, it := range items {
		stops[i] = context.AfterFunc(it.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}
