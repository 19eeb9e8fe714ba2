package gateway

import (
	"context"
	"errors"
	"io"
	"sync"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
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
// through submit, exactly as a unary Submit.
func (s *Server) SubmitStream(stream pb.Gateway_SubmitStreamServer) error {
	ctx := stream.Context()
	id, err := s.authenticate(ctx)
	if err != nil {
		return err
	}
	ss := &submitStream{
		s: s, stream: stream, id: id,
		slots:    make(chan struct{}, StreamInFlight),
		bytes:    semaphore.NewWeighted(StreamMaxBytes),
		inflight: map[uint64]struct{}{},
	}
	// A client keeps its stream open for as long as it runs (the Go client
	// does), so the node's shutdown ends it: the gateway stops taking the
	// stream's commands, answers those it took, and ends the call
	// Unavailable, which lets a graceful stop finish instead of waiting for
	// clients to hang up. Recv cannot be interrupted; read runs apart and
	// drops what it receives once stopped (never processed: not applied).
	readErr := make(chan error, 1)
	go func() { readErr <- ss.read(ctx) }()
	select {
	case err = <-readErr:
	case <-s.closing:
		err = status.Error(codes.Unavailable, "the node is shutting down; resubmit the commands not answered on this stream")
	}
	ss.stop()
	// The answers of commands in flight are still sent (they were decided,
	// or will be): the handler must not return while they may call Send.
	ss.wg.Wait()
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// submitStream is one SubmitStream call.
type submitStream struct {
	s      *Server
	stream pb.Gateway_SubmitStreamServer
	id     Identity

	slots chan struct{}       // one per command in flight
	bytes *semaphore.Weighted // request bytes in flight
	wg    sync.WaitGroup

	mu       sync.Mutex // guards inflight, stopped, wg.Go and Send
	inflight map[uint64]struct{}
	stopped  bool // the handler is returning: start nothing more
}

// stop makes read start no more commands (wg.Go is then never called
// during or after wg.Wait).
func (ss *submitStream) stop() {
	ss.mu.Lock()
	ss.stopped = true
	ss.mu.Unlock()
}

// read takes messages until the client half-closes (io.EOF), the call ends,
// or the client breaks the protocol.
func (ss *submitStream) read(ctx context.Context) error {
	for {
		select {
		case ss.slots <- struct{}{}:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		req, err := ss.stream.Recv()
		if err != nil {
			<-ss.slots
			return err
		}
		size := int64(min(proto.Size(req), StreamMaxBytes))
		if err := ss.bytes.Acquire(ctx, size); err != nil {
			<-ss.slots
			return status.FromContextError(err).Err()
		}
		ok, stopped := ss.begin(req.GetId(), func() {
			defer func() { ss.bytes.Release(size); <-ss.slots }()
			ss.answer(ss.one(ctx, req))
		})
		if stopped {
			return status.Error(codes.Unavailable, "the stream was ended")
		}
		if !ok {
			ss.bytes.Release(size)
			<-ss.slots
			return status.Errorf(codes.InvalidArgument, "id %d is already in flight on this stream: ids must be unique among the commands awaiting an answer", req.GetId())
		}
	}
}

// begin records id as in flight and runs run for it, unless the id already
// is in flight (ok false) or the handler stopped taking commands.
func (ss *submitStream) begin(id uint64, run func()) (ok, stopped bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.stopped {
		return false, true
	}
	if _, dup := ss.inflight[id]; dup {
		return false, false
	}
	ss.inflight[id] = struct{}{}
	ss.wg.Go(run)
	return true, false
}

// answer sends r and frees its id. A failed Send means the call is over;
// Recv then fails too, which ends read.
func (ss *submitStream) answer(r *pb.SubmitStreamResponse) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.inflight, r.GetId())
	_ = ss.stream.Send(r)
}

// one runs a message as a unary Submit would, with its own span and a
// trailer recorder in place of the call's (whose trailers are the stream's).
func (ss *submitStream) one(ctx context.Context, req *pb.SubmitStreamRequest) *pb.SubmitStreamResponse {
	ctx, span := tracer.Start(ctx, pb.Gateway_SubmitStream_FullMethodName[1:], trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	rec := &trailerRecorder{method: pb.Gateway_SubmitStream_FullMethodName}
	ctx = grpc.NewContextWithServerTransportStream(ctx, rec)
	out := &pb.SubmitStreamResponse{Id: req.GetId()}
	cmd := req.GetCommand()
	if cmd == nil {
		cmd = &pb.SubmitRequest{}
	}
	id, err := ss.s.auth.recheck(ss.id)
	var resp *pb.SubmitResponse
	if err == nil {
		r, served, shardID, serr := ss.s.submit(ctx, id, cmd)
		if shardID != noShard {
			ss.s.setRouteTrailers(ctx, cmd.GetAddress(), served, shardID, true)
		}
		resp, err = r, serr
	}
	if err != nil {
		out.Error = status.Convert(err).Proto()
	} else {
		out.Response = resp
	}
	out.Trailers = rec.trailers()
	return out
}

// trailerRecorder is the grpc.ServerTransportStream of one stream message:
// it keeps the trailers the unary code path sets, for the message's answer.
type trailerRecorder struct {
	method string
	mu     sync.Mutex
	md     metadata.MD
}

func (r *trailerRecorder) Method() string { return r.method }

// Headers belong to the stream, which has sent its own already.
func (r *trailerRecorder) SetHeader(metadata.MD) error  { return nil }
func (r *trailerRecorder) SendHeader(metadata.MD) error { return nil }

func (r *trailerRecorder) SetTrailer(md metadata.MD) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.md = metadata.Join(r.md, md)
	return nil
}

// trailers flattens the recorded trailers (each has one value).
func (r *trailerRecorder) trailers() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.md) == 0 {
		return nil
	}
	out := make(map[string]string, len(r.md))
	for k, v := range r.md {
		if len(v) > 0 {
			out[k] = v[len(v)-1]
		}
	}
	return out
}
