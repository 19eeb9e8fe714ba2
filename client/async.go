package client

import (
	"context"
	"errors"
	"io"
	mrand "math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// SubmitAsync enqueues a command on the gateway's JetStream ingress and
// returns once JetStream has stored it, before it is applied; follow its
// effects with Watch or Get. It takes the same request as Submit, sets a
// missing idempotency key and command id on req the same way, and retries
// the same failures with the same key, so a command stored twice is still
// applied once (a retry of a stored command reports Duplicate).
func (c *Client) SubmitAsync(ctx context.Context, req *pb.SubmitRequest, opts ...grpc.CallOption) (*pb.SubmitAsyncResponse, error) {
	send := c.submitRequest(req)
	var resp *pb.SubmitAsyncResponse
	err := c.retry(ctx, func() error {
		var err error
		resp, err = c.anyGateway().SubmitAsync(ctx, send, opts...)
		return err
	})
	return resp, err
}

// Watch calls fn with every event of req's filter, in per-entity order,
// until ctx ends (it returns ctx.Err()), fn returns an error (it returns
// that error, unwrapped, so a sentinel of the caller's tells "enough" from
// a failure), or the gateway refuses the watch (PermissionDenied,
// InvalidArgument, Unimplemented on a node without NATS...). Tenant and
// workspace default to the client's, then to the token's.
//
// A stream that breaks (node restart or shutdown, network) is reopened with
// after_sequence set to the last sequence fn was given, so fn sees each
// event once and in order. Only a stream that had not delivered anything yet
// resumes from its original start: for a watch of "events from now on" that
// is the moment of reconnecting. Reconnects back off like retries; the
// configured retries bound consecutive attempts that never reach the
// gateway, while a watch the gateway accepted keeps reconnecting (backing off
// up to the maximum) for as long as ctx lasts.
func (c *Client) Watch(ctx context.Context, req *pb.WatchRequest, fn func(*pb.WatchEvent) error, opts ...grpc.CallOption) error {
	send := proto.Clone(req).(*pb.WatchRequest)
	if send.Tenant == "" {
		send.Tenant = c.opts.tenant
	}
	if send.Workspace == "" {
		send.Workspace = c.opts.workspace
	}
	delay := c.opts.backoff
	failures := 0
	for {
		accepted, progressed, err := c.watchOnce(ctx, send, fn, opts)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if pastDeadline(ctx, err) {
			return context.DeadlineExceeded
		}
		var fe fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		if !watchRetryable(err) {
			return err
		}
		switch {
		case progressed:
			failures, delay = 0, c.opts.backoff
		case accepted:
			failures = 0
		default:
			failures++
			if failures > c.opts.retries {
				return err
			}
		}
		// ±25% jitter, as for retries.
		d := delay - delay/4 + time.Duration(mrand.Int64N(int64(delay/2)+1))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, c.opts.maxBackoff)
	}
}

// pastDeadline reports whether err is gRPC noticing ctx's deadline a moment
// before ctx itself does (the transport runs its own timer).
func pastDeadline(ctx context.Context, err error) bool {
	dl, ok := ctx.Deadline()
	return ok && status.Code(err) == codes.DeadlineExceeded && !time.Now().Before(dl)
}

// fnError carries the error of the caller's fn out of watchOnce.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// watchOnce runs one Watch stream. accepted reports that the gateway sent
// its headers (it validated the request); progressed that fn got an event.
// It advances send past every event fn accepted.
func (c *Client) watchOnce(ctx context.Context, send *pb.WatchRequest, fn func(*pb.WatchEvent) error, opts []grpc.CallOption) (accepted, progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream when fn fails
	stream, err := c.anyGateway().Watch(ctx, send, opts...)
	if err != nil {
		return false, false, err
	}
	// The gateway sends headers once it accepted the watch; a refusal comes
	// without them, as the status Recv returns.
	md, _ := stream.Header()
	accepted = md != nil
	for {
		m, err := stream.Recv()
		if err != nil {
			return accepted, progressed, err
		}
		if err := fn(m); err != nil {
			return accepted, progressed, fnError{err}
		}
		progressed = true
		send.AfterSequence, send.FromBeginning = m.GetSequence(), false
	}
}

// watchRetryable reports whether a broken watch may be reopened: the gateway
// or the connection is unavailable, or the stream ended without an error,
// which a watch never does on purpose.
func watchRetryable(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable
}
