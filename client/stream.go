package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Streamed submits.
//
// A unary call costs both sides per-call work (an HTTP/2 stream, headers,
// a server goroutine, the stats handlers) of the order of what the command
// costs the leader; one SubmitStream per leader carries every routed submit
// instead, each message tagged with an id, answered out of order. Each
// command keeps its own idempotency key, command id, outcome and retries:
// the stream is only a way of carrying them, as a batch is. When the stream
// breaks, the commands in flight on it have an unknown outcome and fail
// with Unavailable, which Submit retries with the same command id (so a
// command the server applied comes back as a replay, never a second effect).

// errNoStream tells a caller to send its command as a unary Submit: the
// server has no SubmitStream (an older node), so nothing was processed.
var errNoStream = status.Error(codes.Unimplemented, "SubmitStream not served")

type streamer struct {
	off    atomic.Bool // a node does not serve SubmitStream
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	byEP   map[*endpoint]*clientStream
	opened atomic.Uint64 // streams opened, for tests
}

func newStreamer() *streamer {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamer{ctx: ctx, cancel: cancel, byEP: map[*endpoint]*clientStream{}}
}

// stop ends every stream; their commands in flight fail as unknown.
func (s *streamer) stop() {
	if s != nil {
		s.cancel()
	}
}

type streamReply struct {
	resp *pb.SubmitResponse
	tr   metadata.MD
	err  error
}

// clientStream is one SubmitStream call to one endpoint.
type clientStream struct {
	st     pb.Gateway_SubmitStreamClient
	cancel context.CancelFunc
	sendMu sync.Mutex
	mu     sync.Mutex
	nextID uint64
	wait   map[uint64]chan streamReply
	broken bool
}

// streamable reports whether a submit may go on a stream: the same rules as
// for a batch (a routed call carrying nothing a stream could not carry).
func (s *streamer) streamable(ctx context.Context, rc *routeCall, opts []grpc.CallOption) bool {
	if s == nil || s.off.Load() {
		return false
	}
	return carriable(ctx, rc, opts)
}

// stream returns the endpoint's open stream, opening one if it has none or
// its last one broke.
func (s *streamer) stream(ep *endpoint, gw pb.GatewayClient) (*clientStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cs := s.byEP[ep]; cs != nil && !cs.isBroken() {
		return cs, nil
	}
	ctx, cancel := context.WithCancel(s.ctx)
	st, err := gw.SubmitStream(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	s.opened.Add(1)
	cs := &clientStream{st: st, cancel: cancel, wait: map[uint64]chan streamReply{}}
	s.byEP[ep] = cs
	go cs.receive(s)
	return cs, nil
}

// submit sends req on the stream to rc's leader and waits for its answer,
// falling back to a unary Submit when the node has no SubmitStream.
func (s *streamer) submit(ctx context.Context, rc *routeCall, gw pb.GatewayClient, req *pb.SubmitRequest) (*pb.SubmitResponse, metadata.MD, error) {
	cs, err := s.stream(rc.routed, gw)
	if err != nil {
		return nil, nil, err
	}
	id, ch, ok := cs.register()
	if !ok {
		return nil, nil, brokenStream(nil)
	}
	cs.sendMu.Lock()
	err = cs.st.Send(&pb.SubmitStreamRequest{Id: id, Command: req})
	cs.sendMu.Unlock()
	if err != nil {
		// The stream broke; receive answers every waiter, this one too.
		cs.cancel()
	}
	select {
	case r := <-ch:
		if errors.Is(r.err, errNoStream) {
			return submitAlone(ctx, gw, req)
		}
		return r.resp, r.tr, r.err
	case <-ctx.Done():
		cs.forget(id)
		return nil, nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (cs *clientStream) isBroken() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.broken
}

// register reserves the next id, unless the stream broke.
func (cs *clientStream) register() (uint64, chan streamReply, bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.broken {
		return 0, nil, false
	}
	cs.nextID++
	ch := make(chan streamReply, 1) // receive never waits for the caller
	cs.wait[cs.nextID] = ch
	return cs.nextID, ch, true
}

func (cs *clientStream) forget(id uint64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.wait, id)
}

// receive hands each answer to its waiter until the stream ends, then fails
// the waiters left.
func (cs *clientStream) receive(s *streamer) {
	for {
		r, err := cs.st.Recv()
		if err != nil {
			cs.fail(s, err)
			return
		}
		cs.mu.Lock()
		ch := cs.wait[r.GetId()]
		delete(cs.wait, r.GetId())
		cs.mu.Unlock()
		if ch != nil {
			ch <- reply(r)
		}
	}
}

func reply(r *pb.SubmitStreamResponse) streamReply {
	var tr metadata.MD
	if len(r.GetTrailers()) > 0 {
		tr = metadata.MD{}
		for k, v := range r.GetTrailers() {
			tr.Set(k, v)
		}
	}
	if e := r.GetError(); e.GetCode() != int32(codes.OK) {
		return streamReply{tr: tr, err: status.ErrorProto(e)}
	}
	if r.GetResponse() == nil {
		return streamReply{tr: tr, err: status.Error(codes.Internal, "rhizon: a stream answer has neither a response nor an error")}
	}
	return streamReply{resp: r.GetResponse(), tr: tr}
}

// fail marks the stream broken and answers every waiter with what the end
// of the stream means for its command.
func (cs *clientStream) fail(s *streamer, err error) {
	cs.cancel()
	if status.Code(err) == codes.Unimplemented {
		s.off.Store(true)
		err = errNoStream
	} else {
		err = brokenStream(err)
	}
	cs.mu.Lock()
	cs.broken = true
	wait := cs.wait
	cs.wait = map[uint64]chan streamReply{}
	cs.mu.Unlock()
	for _, ch := range wait {
		ch <- streamReply{err: err}
	}
}

// brokenStream is the error of a command in flight on a stream that ended.
// The server refusing the caller (no or bad token) is passed on as is: it
// refused every command, as it would each unary call. Any other end leaves
// the command's outcome unknown: Unavailable, which Submit retries with the
// same idempotency key and command id.
func brokenStream(err error) error {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		return err
	}
	msg := "the submit stream broke with the command in flight, its outcome is unknown"
	if err != nil {
		msg += " (" + err.Error() + ")"
	}
	return status.Error(codes.Unavailable, msg+"; retry with the same idempotency key and command id")
}
