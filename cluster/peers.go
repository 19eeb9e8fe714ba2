package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/api/outcome"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/callmux"
	"github.com/rhizon/rhizon/shard"
)

// peerPool holds one gRPC connection per peer node.
type peerPool struct {
	key   []byte // internalKey of the cluster secret
	creds credentials.TransportCredentials
	mu    sync.Mutex
	conns map[string]*peerConn // by address
	// unary sends every forward by the unary Forward (benchmarks compare).
	unary *atomic.Bool
}

// peerConn is the connection to one peer: its Internal client, and the
// ForwardStream that Forward calls go over.
type peerConn struct {
	pb.InternalClient
	conn  *grpc.ClientConn
	fwd   *forwardMux
	unary *atomic.Bool // the pool's
}

type forwardMux = callmux.Mux[pb.ForwardRequest, pb.ForwardResponse, pb.ForwardStreamRequest, pb.ForwardStreamResponse]

func newPeerPool(secret string, tlsConf *tls.Config) *peerPool {
	creds := insecure.NewCredentials()
	if tlsConf != nil {
		creds = credentials.NewTLS(tlsConf)
	}
	return &peerPool{key: internalKey(secret), creds: creds, conns: map[string]*peerConn{}, unary: new(atomic.Bool)}
}

func (p *peerPool) client(addr string) (*peerConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(p.creds),
		grpc.WithPerRPCCredentials(peerCreds{key: p.key}),
		// A forwarded call continues the caller's trace on the leader (its
		// server span, shard.submit); W3C whatever the global propagator.
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	ic := pb.NewInternalClient(c)
	pc := &peerConn{InternalClient: ic, conn: c, unary: p.unary, fwd: callmux.New(callmux.Codec[pb.ForwardRequest, pb.ForwardResponse, pb.ForwardStreamRequest, pb.ForwardStreamResponse]{
		Open: func(ctx context.Context) (grpc.BidiStreamingClient[pb.ForwardStreamRequest, pb.ForwardStreamResponse], error) {
			return ic.ForwardStream(ctx)
		},
		Wrap: func(id uint64, req *pb.ForwardRequest) *pb.ForwardStreamRequest {
			return &pb.ForwardStreamRequest{Id: id, Request: req}
		},
		Unwrap: func(m *pb.ForwardStreamResponse) (uint64, *pb.ForwardResponse, *spb.Status, map[string]string) {
			return m.GetId(), m.GetResponse(), m.GetError(), m.GetTrailers()
		},
		Name: "forward stream", What: "forwarded command",
		Lost:    callmux.LostCommand,
		NotSent: map[string]string{outcome.Trailer: outcome.NotApplied.String()},
	})}
	p.conns[addr] = pc
	return pc, nil
}

// maxStreamedForward: a larger forward goes by the unary call, so that a
// command near the message limit fails alone instead of ending the stream
// for every forward on it (as the client's SubmitStream does).
const maxStreamedForward = 1<<20 + 64<<10

// Forward sends req over the peer's ForwardStream (one message on a call
// that is already open, instead of a call of its own per command), or by
// the unary Forward where the stream cannot carry it: a caller's sampled
// trace to continue (a stream message carries no headers), a large command,
// or a peer of a version without ForwardStream.
func (pc *peerConn) Forward(ctx context.Context, req *pb.ForwardRequest, opts ...grpc.CallOption) (*pb.ForwardResponse, error) {
	if pc.unary.Load() || trace.SpanContextFromContext(ctx).IsSampled() || proto.Size(req) > maxStreamedForward {
		return pc.InternalClient.Forward(ctx, req, opts...)
	}
	var tr *metadata.MD
	for _, o := range opts {
		if t, ok := o.(grpc.TrailerCallOption); ok {
			tr = t.TrailerAddr
		}
	}
	resp, err := pc.fwd.Call(ctx, req, tr)
	if errors.Is(err, callmux.ErrNoStream) {
		return pc.InternalClient.Forward(ctx, req, opts...)
	}
	return resp, err
}

func (p *peerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns { //rhizon:deterministic closing all
		c.fwd.Close()
		_ = c.conn.Close()
		delete(p.conns, a)
	}
}

// peerAddr is the gRPC address of node id: from gossip (freshest), else the
// cluster map.
func (rt *router) peerAddr(id string) string {
	for _, m := range rt.members() {
		if m.Meta.ID == id && m.Meta.GRPCAddr != "" {
			return m.Meta.GRPCAddr
		}
	}
	if rec, ok := rt.state().Node(id); ok {
		return rec.GRPCAddr
	}
	return ""
}

func (rt *router) peer(id string) (*peerConn, error) {
	addr := rt.peerAddr(id)
	if addr == "" {
		return nil, fmt.Errorf("cluster: no gRPC address for node %s", id)
	}
	return rt.peers.client(addr)
}

// forwardErr classifies an error from a peer.
type forwardErr struct {
	leader  string // hint, when the peer named one
	applied bool   // the command may have been applied
	err     error  // in the shard's terms (shard.ErrNotLeader, ...)
	raw     error  // the peer's status, as it answered
}

func (e *forwardErr) Error() string { return e.err.Error() }
func (e *forwardErr) Unwrap() error { return e.err }

// classify reads a peer's answer in the dialect of api/outcome. The trailer
// says whether the command may have been applied; a failure without it is a
// transport failure, and the request may have been delivered. Peers of
// earlier versions answered an unknown outcome with Aborted and no trailer,
// which reads the same way.
func classify(err error, tr metadata.MD) *forwardErr {
	st := status.Convert(err)
	fe := &forwardErr{err: err, raw: err, applied: true}
	if v := tr.Get(leaderTrailer); len(v) > 0 {
		fe.leader = v[0]
	}
	if v := tr.Get(outcome.Trailer); len(v) > 0 {
		fe.applied = v[0] != outcome.NotApplied.String()
	}
	var sentinel error
	switch st.Code() {
	case codes.FailedPrecondition:
		sentinel, fe.applied = shard.ErrNotLeader, false
	case codes.ResourceExhausted:
		sentinel, fe.applied = shard.ErrOverloaded, false
	case codes.Internal:
		sentinel, fe.applied = shard.ErrHalted, false
	}
	if code := infoCode(st); code != "" {
		if s := outcome.Lookup(code).Sentinel(); s != nil && s != context.Canceled {
			sentinel = s
		}
	}
	if sentinel != nil {
		fe.err = fmt.Errorf("%w: %s", sentinel, st.Message())
	}
	return fe
}

// infoCode is the outcome code a peer put in its ErrorInfo, if any.
func infoCode(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == outcome.Domain {
			return info.GetMetadata()["code"]
		}
	}
	return ""
}

// callPeer makes one internal call about shard id to node to: it counts the
// forward as what and keeps the leader hint a refusal names, so that the
// next attempt asks the leader. A failure comes back classified; its raw
// field holds the peer's own status, or Unavailable when no connection to
// the peer could be made (nothing was sent then).
func callPeer[Q, R any](ctx context.Context, rt *router, id uint32, to, what string,
	call func(pb.InternalClient, context.Context, Q, ...grpc.CallOption) (R, error), req Q) (R, *forwardErr) {
	var zero R
	c, err := rt.peer(to)
	if err != nil {
		return zero, &forwardErr{err: fmt.Errorf("%w: %v", shard.ErrNotLeader, err), raw: status.Error(codes.Unavailable, err.Error())}
	}
	rt.forwards.count(ctx, what)
	var tr metadata.MD
	resp, err := call(c, ctx, req, grpc.Trailer(&tr))
	if err != nil {
		fe := classify(err, tr)
		if fe.leader != "" {
			rt.hints.Store(id, fe.leader)
		}
		return zero, fe
	}
	return resp, nil
}

// backoff paces the attempts to reach a shard's leader: 5 ms after the
// first, doubling up to 200 ms.
type backoff time.Duration

// wait sleeps for the next pause; false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := max(time.Duration(*b), 5*time.Millisecond)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
	}
	*b = backoff(min(2*d, 200*time.Millisecond))
	return true
}

// reset starts the pauses over: a new leader was named.
func (b *backoff) reset() { *b = 0 }
