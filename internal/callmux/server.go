package callmux

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Server serves one stream's calls, each as its unary call would be served.
// The stream stops reading while InFlight calls, or MaxBytes of requests,
// are in flight (a single larger request is still taken, alone), so a fast
// client is held back by HTTP/2 flow control instead of growing the node's
// memory.
type Server[QM, AM any] struct {
	InFlight int
	MaxBytes int64
	// ID is a message's id, Size its encoded size.
	ID   func(*QM) uint64
	Size func(*QM) int
	// Handle serves one message and returns its answer, with the same id.
	Handle func(ctx context.Context, m *QM) *AM
	// Closing, when closed, ends the stream Unavailable with ClosingMsg:
	// the node is stopping. Calls taken are still answered.
	Closing    <-chan struct{}
	ClosingMsg string
	// What names the calls in errors ("commands").
	What string

	workers atomic.Int64 // workers started, for tests
}

// Serve serves st until the client half-closes (nil), the call ends, the
// client breaks the protocol, or Closing.
func (sv *Server[QM, AM]) Serve(st grpc.BidiStreamingServer[QM, AM]) error {
	ctx := st.Context()
	ss := &serving[QM, AM]{
		sv: sv, st: st,
		slots:    make(chan struct{}, sv.InFlight),
		bytes:    semaphore.NewWeighted(sv.MaxBytes),
		inflight: map[uint64]struct{}{},
		work:     make(chan func()),
		done:     make(chan struct{}),
	}
	// A client keeps its stream open for as long as it runs, so the node's
	// shutdown ends it: the server stops taking the stream's calls, answers
	// those it took, and ends the call Unavailable, which lets a graceful
	// stop finish instead of waiting for clients to hang up. Recv cannot be
	// interrupted; read runs apart and drops what it receives once stopped
	// (never processed: not applied).
	readErr := make(chan error, 1)
	go func() { readErr <- ss.read(ctx) }()
	var err error
	select {
	case err = <-readErr:
	case <-sv.Closing:
		err = status.Error(codes.Unavailable, sv.ClosingMsg)
	}
	ss.stop()
	// The answers of calls in flight are still sent (they were decided, or
	// will be): the handler must not return while they may call Send.
	ss.wg.Wait()
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// serving is one stream being served.
type serving[QM, AM any] struct {
	sv *Server[QM, AM]
	st grpc.BidiStreamingServer[QM, AM]

	slots chan struct{}       // one per call in flight
	bytes *semaphore.Weighted // request bytes in flight
	wg    sync.WaitGroup

	// work hands a call to an idle worker; done, closed by stop, ends them.
	work chan func()
	done chan struct{}

	mu       sync.Mutex // guards inflight, stopped, wg.Go and Send
	inflight map[uint64]struct{}
	stopped  bool // the handler is returning: start nothing more
}

// workerIdle is how long a worker that finished a call waits for the next
// before it exits. A call runs on a worker kept from earlier calls where
// one is idle: a fresh goroutine per call grew its stack through the
// handler's deep call chain every time (runtime.copystack, about 6% of the
// nodes' CPU under w1-command).
const workerIdle = 500 * time.Millisecond

// stop makes read start no more calls (wg.Go is then never called during
// or after wg.Wait) and idle workers exit.
func (ss *serving[QM, AM]) stop() {
	ss.mu.Lock()
	if !ss.stopped {
		ss.stopped = true
		close(ss.done)
	}
	ss.mu.Unlock()
}

// worker runs call, then the calls handed to it while it waits idle.
func (ss *serving[QM, AM]) worker(call func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		call()
		t.Reset(workerIdle)
		select {
		case call = <-ss.work:
		case <-t.C:
			return
		case <-ss.done:
			return
		}
	}
}

// read takes messages until the client half-closes (io.EOF), the call ends,
// or the client breaks the protocol.
func (ss *serving[QM, AM]) read(ctx context.Context) error {
	for {
		select {
		case ss.slots <- struct{}{}:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		m, err := ss.st.Recv()
		if err != nil {
			<-ss.slots
			return err
		}
		size := min(int64(ss.sv.Size(m)), ss.sv.MaxBytes)
		if err := ss.bytes.Acquire(ctx, size); err != nil {
			<-ss.slots
			return status.FromContextError(err).Err()
		}
		id := ss.sv.ID(m)
		ok, stopped := ss.begin(id, func() {
			defer func() { ss.bytes.Release(size); <-ss.slots }()
			ss.answer(id, ss.sv.Handle(ctx, m))
		})
		if stopped {
			return status.Error(codes.Unavailable, "the stream was ended")
		}
		if !ok {
			ss.bytes.Release(size)
			<-ss.slots
			return status.Errorf(codes.InvalidArgument, "id %d is already in flight on this stream: ids must be unique among the %s awaiting an answer", id, ss.sv.What)
		}
	}
}

// begin records id as in flight and runs run for it, unless the id already
// is in flight (ok false) or the handler stopped taking calls.
func (ss *serving[QM, AM]) begin(id uint64, run func()) (ok, stopped bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.stopped {
		return false, true
	}
	if _, dup := ss.inflight[id]; dup {
		return false, false
	}
	ss.inflight[id] = struct{}{}
	select {
	case ss.work <- run:
	default:
		ss.sv.workers.Add(1)
		ss.wg.Go(func() { ss.worker(run) })
	}
	return true, false
}

// answer sends a and frees id. A failed Send means the call is over; Recv
// then fails too, which ends read.
func (ss *serving[QM, AM]) answer(id uint64, a *AM) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.inflight, id)
	_ = ss.st.Send(a)
}

// TrailerRecorder is the grpc.ServerTransportStream of one stream message:
// it keeps the trailers the unary code path sets (grpc.SetTrailer on a
// context from grpc.NewContextWithServerTransportStream), for the message's
// answer.
type TrailerRecorder struct {
	method string
	mu     sync.Mutex
	md     metadata.MD
}

// NewTrailerRecorder returns a recorder that reports method as its own.
func NewTrailerRecorder(method string) *TrailerRecorder { return &TrailerRecorder{method: method} }

// Method is the stream's method.
func (r *TrailerRecorder) Method() string { return r.method }

// SetHeader does nothing: headers belong to the stream, which has sent its
// own already.
func (r *TrailerRecorder) SetHeader(metadata.MD) error { return nil }

// SendHeader does nothing, as SetHeader.
func (r *TrailerRecorder) SendHeader(metadata.MD) error { return nil }

// SetTrailer records md.
func (r *TrailerRecorder) SetTrailer(md metadata.MD) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.md = metadata.Join(r.md, md)
	return nil
}

// Trailers flattens the recorded trailers (each has one value).
func (r *TrailerRecorder) Trailers() map[string]string {
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
