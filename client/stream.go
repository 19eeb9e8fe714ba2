package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Streamed submits.
//
// A unary Submit costs both sides an HTTP/2 stream, headers and the stats
// handlers per call, about 3x the per-call CPU of a message on a stream that
// is already open (shared/PERF-NOTES.md). So by default each connection
// keeps one SubmitStream open and Submit sends its command there, tagged
// with an id; the answer carries exactly what the unary call would have
// answered (status, details, trailers), so the retry loop and the routing
// code of Submit see no difference.
//
// A stream is one HTTP/2 call shared by every caller on the connection, so
// nothing a caller does may hold the others: a caller never blocks on the
// stream itself (a sender goroutine does the Send, which may wait for flow
// control), and gives up on its own context alone. When the stream breaks
// every command on it that the server had not answered gets the error a
// unary call cut in flight gets (Unavailable, outcome unknown), and the next
// Submit opens a new stream.

// maxStreamItemBytes: a larger command goes by unary Submit, so that a
// command over the server's message limit fails alone, with the unary error,
// instead of ending the stream for every command on it.
const maxStreamItemBytes = 1<<20 + 64<<10

// call states: a queued call is either sent or abandoned by its caller,
// never both, so a caller that gives up knows whether it was sent.
const (
	callQueued int32 = iota
	callSent
	callAbandoned
)

// gwConn is a connection's Gateway client and its submit stream.
type gwConn struct {
	pb.GatewayClient
	st streamer
}

// streamer keeps a connection's SubmitStream.
type streamer struct {
	gw  pb.GatewayClient
	off atomic.Bool // the server has no SubmitStream (an older node)

	mu      sync.Mutex
	cur     *subStream
	opening chan struct{} // closed when an open attempt ends
	openErr error
	closed  bool

	opened atomic.Uint64 // streams opened, for tests
}

// subStream is one SubmitStream call.
type subStream struct {
	stream pb.Gateway_SubmitStreamClient
	cancel context.CancelFunc

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]*streamCall // sent or queued, unanswered
	queue   []*streamCall
	err     error         // why the stream broke; nil while it works
	broken  chan struct{} // closed when err is set
	wake    chan struct{}
}

type streamCall struct {
	id    uint64
	req   *pb.SubmitStreamRequest
	state atomic.Int32
	reply chan streamReply // buffered: nobody waits for the caller
}

type streamReply struct {
	resp     *pb.SubmitResponse
	trailers map[string]string
	err      error
	unary    bool // not sent: the server has no SubmitStream
}

// streamable reports whether a submit may go by stream: the caller set
// nothing one message of a shared call could carry for it (call options,
// outgoing metadata, a trace to continue) and the command is not large.
func streamable(ctx context.Context, opts []grpc.CallOption, req *pb.SubmitRequest) bool {
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

// errNoStream tells Submit to send the command by unary Submit: the server
// has no SubmitStream (an older node), and the command was not sent.
var errNoStream = errors.New("rhizon: SubmitStream not served")

// submit sends req on the stream and returns its answer, with the trailers
// the unary call would have returned in tr (when not nil); errNoStream when
// the server has no SubmitStream.
func (s *streamer) submit(ctx context.Context, req *pb.SubmitRequest, tr *metadata.MD) (*pb.SubmitResponse, error) {
	if s.off.Load() {
		return nil, errNoStream
	}
	ss, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	if ss == nil {
		return nil, errNoStream
	}
	c, err := ss.enqueue(req)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-c.reply:
		if r.unary {
			return nil, errNoStream
		}
		if tr != nil && len(r.trailers) > 0 {
			md := make(metadata.MD, len(r.trailers))
			for k, v := range r.trailers {
				md[k] = []string{v}
			}
			*tr = md
		}
		return r.resp, r.err
	case <-ctx.Done():
		// Not sent yet: it never will be, as a unary call cancelled before
		// it went out. Sent: the outcome is unknown, as for a unary call
		// cancelled in flight. Either way the stream and the other calls on
		// it go on; a late answer is dropped.
		c.state.CompareAndSwap(callQueued, callAbandoned)
		ss.forget(c.id)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// get returns the working stream, opening one if there is none. It returns
// nil, nil when the server turned out to have no SubmitStream.
func (s *streamer) get(ctx context.Context) (*subStream, error) {
	s.mu.Lock()
	if ss := s.cur; ss != nil && ss.ok() {
		s.mu.Unlock()
		return ss, nil
	}
	if s.closed {
		s.mu.Unlock()
		return nil, status.Error(codes.Canceled, "grpc: the client connection is closing")
	}
	if s.opening == nil {
		s.opening = make(chan struct{})
		go s.open(s.opening)
	}
	ch := s.opening
	s.mu.Unlock()
	// Opening waits for the connection, as a unary call does: the caller
	// waits as long as its context allows, the open goes on without it.
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if s.off.Load() {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && s.cur.ok() {
		return s.cur, nil
	}
	if s.openErr != nil {
		return nil, s.openErr
	}
	return nil, status.Error(codes.Unavailable, "rhizon: the submit stream broke as it opened; the command was not sent")
}

// open opens a stream and installs it; the call's context is the stream's,
// not any caller's, and ends when the stream breaks.
func (s *streamer) open(done chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := s.gw.SubmitStream(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(done)
	s.opening = nil
	if err != nil {
		cancel()
		s.openErr = err
		if status.Code(err) == codes.Unimplemented {
			s.off.Store(true)
		}
		return
	}
	s.openErr = nil
	ss := &subStream{
		stream: stream, cancel: cancel, pending: map[uint64]*streamCall{},
		broken: make(chan struct{}), wake: make(chan struct{}, 1),
	}
	s.cur = ss
	s.opened.Add(1)
	go ss.send()
	go s.recv(ss)
}

// close ends the current stream, if any (the client is closing).
func (s *streamer) close() {
	s.mu.Lock()
	s.closed = true
	ss := s.cur
	s.mu.Unlock()
	if ss != nil {
		ss.cancel()
	}
}

func (ss *subStream) ok() bool {
	select {
	case <-ss.broken:
		return false
	default:
		return true
	}
}

// enqueue queues req for the sender and returns its call.
func (ss *subStream) enqueue(req *pb.SubmitRequest) (*streamCall, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.err != nil {
		return nil, status.Errorf(codes.Unavailable, "rhizon: the submit stream broke before the command was sent: %v", ss.err)
	}
	ss.nextID++
	c := &streamCall{id: ss.nextID, req: &pb.SubmitStreamRequest{Id: ss.nextID, Command: req}, reply: make(chan streamReply, 1)}
	ss.pending[c.id] = c
	ss.queue = append(ss.queue, c)
	select {
	case ss.wake <- struct{}{}:
	default:
	}
	return c, nil
}

// forget drops an abandoned call; its answer, if it comes, is dropped.
func (ss *subStream) forget(id uint64) {
	ss.mu.Lock()
	delete(ss.pending, id)
	ss.mu.Unlock()
}

// send sends what is queued until the stream breaks. Send may wait for
// HTTP/2 flow control (the server reads no more while 256 commands of the
// stream are in flight); only this goroutine waits then.
func (ss *subStream) send() {
	for {
		select {
		case <-ss.broken:
			return
		case <-ss.wake:
		}
		ss.mu.Lock()
		q := ss.queue
		ss.queue = nil
		ss.mu.Unlock()
		for _, c := range q {
			if !c.state.CompareAndSwap(callQueued, callSent) {
				continue
			}
			if err := ss.stream.Send(c.req); err != nil {
				// The stream is over; Recv reports why, and fails the
				// calls still pending, this one included.
				return
			}
		}
	}
}

// recv hands each answer to its call until the stream breaks, then fails
// the calls still pending.
func (s *streamer) recv(ss *subStream) {
	answered := false
	for {
		m, err := ss.stream.Recv()
		if err != nil {
			unimpl := !answered && status.Code(err) == codes.Unimplemented
			if unimpl {
				s.off.Store(true)
			}
			ss.fail(err, unimpl)
			return
		}
		answered = true
		ss.mu.Lock()
		c := ss.pending[m.GetId()]
		delete(ss.pending, m.GetId())
		ss.mu.Unlock()
		if c != nil {
			c.reply <- answer(m)
		}
	}
}

// answer is what the unary Submit would have returned for m.
func answer(m *pb.SubmitStreamResponse) streamReply {
	r := streamReply{trailers: m.GetTrailers()}
	switch {
	case m.GetError().GetCode() != int32(codes.OK):
		r.err = status.ErrorProto(m.GetError())
	case m.GetResponse() != nil:
		r.resp = m.GetResponse()
	default:
		r.err = status.Error(codes.Internal, "rhizon: a submit stream answer has neither a response nor an error")
	}
	return r
}

// fail marks the stream broken by err and answers every pending call. A
// call the server may have read gets Unavailable with its outcome unknown,
// as a unary call whose connection is cut in flight: Submit retries it with
// the same idempotency key and command id (never a new one), which applies
// it at most once. unimpl: nothing was read (no SubmitStream), every call
// goes by unary instead.
func (ss *subStream) fail(err error, unimpl bool) {
	ss.mu.Lock()
	if ss.err == nil {
		ss.err = err
		close(ss.broken)
	}
	pending := ss.pending
	ss.pending = map[uint64]*streamCall{}
	ss.queue = nil
	ss.mu.Unlock()
	ss.cancel()
	st := status.Convert(err)
	for _, c := range pending {
		var r streamReply
		switch {
		case unimpl:
			r.unary = true
		case st.Code() == codes.Unauthenticated || st.Code() == codes.PermissionDenied:
			// Refused when the stream opened, before any command was read.
			r.err = err
		case c.state.Load() == callQueued:
			r.err = status.Errorf(codes.Unavailable, "rhizon: the submit stream broke before the command was sent: %v", st.Message())
		default:
			r.err = status.Errorf(codes.Unavailable, "rhizon: the submit stream broke with the command in flight, its outcome is unknown (it may have been applied; resubmit with the same idempotency key): %s: %s", st.Code(), st.Message())
		}
		c.reply <- r
	}
}
