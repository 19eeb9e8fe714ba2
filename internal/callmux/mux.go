// Package callmux carries many unary-like calls over one bidirectional gRPC
// stream, each message tagged with an id, and its answer with the same id.
//
// A unary call costs both sides an HTTP/2 stream, headers, credentials and
// the stats handlers per call, about 3x the per-call CPU of a message on a
// stream that is already open (shared/PERF-NOTES.md). The Go client's
// SubmitStream and GetStream and the nodes' internal ForwardStream use it. An answer
// carries exactly what the unary call would have answered (status, details,
// trailers), so retry and routing code sees no difference.
//
// A stream is one HTTP/2 call shared by every caller on the connection, so
// nothing a caller does may hold the others: a caller never blocks on the
// stream itself (a sender goroutine does the Send, which may wait for flow
// control), and gives up on its own context alone. When the stream breaks
// every call on it that the server had not answered gets the error a unary
// call cut in flight gets (Unavailable, outcome unknown), and the next call
// opens a new stream.
package callmux

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ErrNoStream means the server does not serve the stream (an older node):
// the call was not sent, send it by the unary call instead.
var ErrNoStream = errors.New("rhizon: stream not served")

// LostCommand is the Lost of a stream of commands.
const LostCommand = "its outcome is unknown (it may have been applied; resubmit with the same idempotency key)"

// call states: a queued call is either sent or abandoned by its caller,
// never both, so a caller that gives up knows whether it was sent.
const (
	callQueued int32 = iota
	callSent
	callAbandoned
)

// Codec says how a call rides on the stream: Q is the unary request, A its
// response, QM and AM the stream's messages.
type Codec[Q, A, QM, AM any] struct {
	// Open opens the stream; ctx is the stream's own, not a caller's.
	Open func(ctx context.Context) (grpc.BidiStreamingClient[QM, AM], error)
	// Wrap tags req with id.
	Wrap func(id uint64, req *Q) *QM
	// Unwrap reads an answer: its id, and exactly one of resp and st (a
	// status whose code is not OK), with the trailers of the unary call.
	Unwrap func(m *AM) (id uint64, resp *A, st *spb.Status, trailers map[string]string)
	// Name names the stream in errors ("submit stream"), What the call
	// ("command").
	Name, What string
	// Lost says, in the error of a call in flight when its stream broke,
	// what that means and what to do: for a command, that its outcome is
	// unknown and to resubmit it with the same idempotency key.
	Lost string
	// NotSent, if set, are the trailers of a call that failed before it
	// was sent (so a caller that reads outcome trailers knows it was not
	// applied).
	NotSent map[string]string
}

// Mux keeps one stream of a connection open and sends calls on it.
type Mux[Q, A, QM, AM any] struct {
	codec Codec[Q, A, QM, AM]
	off   atomic.Bool // the server has no such stream (an older node)

	mu      sync.Mutex
	cur     *stream[Q, A, QM, AM]
	opening chan struct{} // closed when an open attempt ends
	openErr error
	closed  bool

	opened atomic.Uint64 // streams opened
}

// New returns a Mux; it opens its stream at the first call.
func New[Q, A, QM, AM any](codec Codec[Q, A, QM, AM]) *Mux[Q, A, QM, AM] {
	return &Mux[Q, A, QM, AM]{codec: codec}
}

// Opened is how many streams m has opened (tests and metrics).
func (m *Mux[Q, A, QM, AM]) Opened() uint64 { return m.opened.Load() }

// Off reports whether the server turned out not to serve the stream: every
// call then goes by its unary call.
func (m *Mux[Q, A, QM, AM]) Off() bool { return m.off.Load() }

// stream is one open call.
type stream[Q, A, QM, AM any] struct {
	m      *Mux[Q, A, QM, AM]
	stream grpc.BidiStreamingClient[QM, AM]
	cancel context.CancelFunc

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]*pendingCall[A, QM] // sent or queued, unanswered
	queue   []*pendingCall[A, QM]
	err     error         // why the stream broke; nil while it works
	broken  chan struct{} // closed when err is set
	wake    chan struct{}
}

type pendingCall[A, QM any] struct {
	id    uint64
	msg   *QM
	state atomic.Int32
	reply chan reply[A] // buffered: nobody waits for the caller
}

type reply[A any] struct {
	resp     *A
	trailers map[string]string
	err      error
	unary    bool // not sent: the server has no such stream
}

// Call sends req on the stream and returns its answer, with the trailers
// the unary call would have returned in tr (when not nil); ErrNoStream when
// the server has no such stream.
func (m *Mux[Q, A, QM, AM]) Call(ctx context.Context, req *Q, tr *metadata.MD) (*A, error) {
	if m.off.Load() {
		return nil, ErrNoStream
	}
	s, err := m.get(ctx)
	if err != nil {
		m.notSent(tr)
		return nil, err
	}
	if s == nil {
		return nil, ErrNoStream
	}
	c, err := s.enqueue(req)
	if err != nil {
		m.notSent(tr)
		return nil, err
	}
	select {
	case r := <-c.reply:
		if r.unary {
			return nil, ErrNoStream
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
		if c.state.CompareAndSwap(callQueued, callAbandoned) {
			m.notSent(tr)
		}
		s.forget(c.id)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (m *Mux[Q, A, QM, AM]) notSent(tr *metadata.MD) {
	if tr == nil || len(m.codec.NotSent) == 0 {
		return
	}
	md := make(metadata.MD, len(m.codec.NotSent))
	for k, v := range m.codec.NotSent {
		md[k] = []string{v}
	}
	*tr = md
}

// get returns the working stream, opening one if there is none. It returns
// nil, nil when the server turned out to have no such stream.
func (m *Mux[Q, A, QM, AM]) get(ctx context.Context) (*stream[Q, A, QM, AM], error) {
	m.mu.Lock()
	if s := m.cur; s != nil && s.ok() {
		m.mu.Unlock()
		return s, nil
	}
	if m.closed {
		m.mu.Unlock()
		return nil, status.Error(codes.Canceled, "grpc: the client connection is closing")
	}
	if m.opening == nil {
		m.opening = make(chan struct{})
		go m.open(m.opening)
	}
	ch := m.opening
	m.mu.Unlock()
	// Opening waits for the connection, as a unary call does: the caller
	// waits as long as its context allows, the open goes on without it.
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if m.off.Load() {
		return nil, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil && m.cur.ok() {
		return m.cur, nil
	}
	if m.openErr != nil {
		return nil, m.openErr
	}
	return nil, status.Errorf(codes.Unavailable, "rhizon: the %s broke as it opened; the %s was not sent", m.codec.Name, m.codec.What)
}

// open opens a stream and installs it; the call's context is the stream's,
// not any caller's, and ends when the stream breaks.
func (m *Mux[Q, A, QM, AM]) open(done chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := m.codec.Open(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	defer close(done)
	m.opening = nil
	if err != nil {
		cancel()
		m.openErr = err
		if status.Code(err) == codes.Unimplemented {
			m.off.Store(true)
		}
		return
	}
	m.openErr = nil
	s := &stream[Q, A, QM, AM]{
		m: m, stream: st, cancel: cancel, pending: map[uint64]*pendingCall[A, QM]{},
		broken: make(chan struct{}), wake: make(chan struct{}, 1),
	}
	m.cur = s
	m.opened.Add(1)
	go s.send()
	go s.recv()
}

// Close ends the current stream, if any (the connection is closing).
func (m *Mux[Q, A, QM, AM]) Close() {
	m.mu.Lock()
	m.closed = true
	s := m.cur
	m.mu.Unlock()
	if s != nil {
		s.cancel()
	}
}

func (s *stream[Q, A, QM, AM]) ok() bool {
	select {
	case <-s.broken:
		return false
	default:
		return true
	}
}

// enqueue queues req for the sender and returns its call.
func (s *stream[Q, A, QM, AM]) enqueue(req *Q) (*pendingCall[A, QM], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, status.Errorf(codes.Unavailable, "rhizon: the %s broke before the %s was sent: %v", s.m.codec.Name, s.m.codec.What, s.err)
	}
	s.nextID++
	c := &pendingCall[A, QM]{id: s.nextID, msg: s.m.codec.Wrap(s.nextID, req), reply: make(chan reply[A], 1)}
	s.pending[c.id] = c
	s.queue = append(s.queue, c)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return c, nil
}

// forget drops an abandoned call; its answer, if it comes, is dropped.
func (s *stream[Q, A, QM, AM]) forget(id uint64) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// send sends what is queued until the stream breaks. Send may wait for
// HTTP/2 flow control (the server reads no more while its bound of calls is
// in flight); only this goroutine waits then.
func (s *stream[Q, A, QM, AM]) send() {
	for {
		select {
		case <-s.broken:
			return
		case <-s.wake:
		}
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, c := range q {
			if !c.state.CompareAndSwap(callQueued, callSent) {
				continue
			}
			if err := s.stream.Send(c.msg); err != nil {
				// The stream is over; Recv reports why, and fails the
				// calls still pending, this one included.
				return
			}
		}
	}
}

// recv hands each answer to its call until the stream breaks, then fails
// the calls still pending.
func (s *stream[Q, A, QM, AM]) recv() {
	answered := false
	for {
		msg, err := s.stream.Recv()
		if err != nil {
			unimpl := !answered && status.Code(err) == codes.Unimplemented
			if unimpl {
				s.m.off.Store(true)
			}
			s.fail(err, unimpl)
			return
		}
		answered = true
		id, resp, st, trailers := s.m.codec.Unwrap(msg)
		s.mu.Lock()
		c := s.pending[id]
		delete(s.pending, id)
		s.mu.Unlock()
		if c == nil {
			continue
		}
		r := reply[A]{trailers: trailers}
		switch {
		case st.GetCode() != int32(codes.OK):
			r.err = status.ErrorProto(st)
		case resp != nil:
			r.resp = resp
		default:
			r.err = status.Error(codes.Internal, "rhizon: a stream answer has neither a response nor an error")
		}
		c.reply <- r
	}
}

// fail marks the stream broken by err and answers every pending call. A
// call the server may have read gets Unavailable with its outcome unknown,
// as a unary call whose connection is cut in flight: the caller retries it
// with the same idempotency key and command id (never a new one), which
// applies it at most once. unimpl: nothing was read (no such stream), every
// call goes by unary instead.
func (s *stream[Q, A, QM, AM]) fail(err error, unimpl bool) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
		close(s.broken)
	}
	pending := s.pending
	s.pending = map[uint64]*pendingCall[A, QM]{}
	s.queue = nil
	s.mu.Unlock()
	s.cancel()
	st := status.Convert(err)
	name, what := s.m.codec.Name, s.m.codec.What
	for _, c := range pending {
		var r reply[A]
		switch {
		case unimpl:
			r.unary = true
		case st.Code() == codes.Unauthenticated || st.Code() == codes.PermissionDenied:
			// Refused when the stream opened, before any call was read.
			r.err = err
		case c.state.Load() == callQueued:
			r.err = status.Errorf(codes.Unavailable, "rhizon: the %s broke before the %s was sent: %v", name, what, st.Message())
			r.trailers = s.m.codec.NotSent
		default:
			r.err = status.Errorf(codes.Unavailable, "rhizon: the %s broke with the %s in flight, %s: %s: %s", name, what, s.m.codec.Lost, st.Code(), st.Message())
		}
		c.reply <- r
	}
}
