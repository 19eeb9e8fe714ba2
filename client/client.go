// Package client is the Go client of Rhizon's gateway, used by the rhizon
// CLI and the bench tool. It adds what every caller would otherwise get
// wrong: a bearer token on every call, an idempotency key on every command,
// and retries that reuse that key, so a retried command is never applied
// twice.
//
// Given several gateway addresses (DialCluster), the client routes by
// default: it sends each command, and each linearizable read, straight to
// the gateway of the node that leads the entity's shard, which saves the
// cluster a forward and the caller a network hop (see WithLeaderRouting).
//
// Submit sends its command over a SubmitStream the client keeps open on each
// connection, which costs both sides less per command than a unary call, and
// answers exactly as the unary call would (see WithUnarySubmits); Get reads
// over a GetStream likewise (see WithUnaryGets).
//
// Transport security: Dial uses plaintext gRPC by default, as a node does
// without --tls-cert. WithTLS connects with TLS to nodes that serve it (or to
// a TLS-terminating proxy). The bearer token is sent either way, so do not
// send a production token over plaintext outside a trusted network.
package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	wo "github.com/rhizon/rhizon/api/outcome" // wo: write outcome (batch.go has a type named outcome)
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/callmux"
)

// The gateway's error contract, from api/outcome (a leaf package: the client
// links no server side by using it).
const (
	errorDomain          = wo.Domain
	reasonOutcomeUnknown = wo.ReasonOutcomeUnknown
	outcomeUnknownPrefix = wo.UnknownPrefix
)

// MaxRecvMsgSize is the largest response the client accepts. An entity's
// state may be 4 MiB (actor.MaxStateBytes), above gRPC's 4 MiB default once
// framed, and a history page can hold many events.
const MaxRecvMsgSize = 64 << 20

// Defaults of the options.
const (
	DefaultRetries         = 3
	DefaultRetryBackoff    = 100 * time.Millisecond
	DefaultMaxRetryBackoff = 2 * time.Second
)

// routing modes of options.routing.
const (
	routeAuto   = iota // leader routing with several addresses
	routeLeader        // leader routing
	routeAny           // every call to any address, in turn
)

type options struct {
	token        string
	tenant       string
	workspace    string
	retries      int
	backoff      time.Duration
	maxBackoff   time.Duration
	dialOptions  []grpc.DialOption
	routing      int
	connsPerNode int
	refreshEvery time.Duration
	refreshGap   time.Duration
	batching     bool
	unary        bool // WithUnarySubmits
	unaryGets    bool // WithUnaryGets
}

// Option configures a Client. Options are applied in order after the
// defaults; an invalid one makes Dial fail.
type Option func(*options) error

// WithToken sets the bearer token sent with every call.
func WithToken(token string) Option {
	return func(o *options) error {
		if strings.ContainsAny(token, " \t\r\n") {
			return errors.New("client: token contains whitespace")
		}
		o.token = token
		return nil
	}
}

// WithTenant sets the tenant used when a request's address has none (the
// gateway would otherwise use the token's default tenant).
func WithTenant(tenant string) Option {
	return func(o *options) error { o.tenant = tenant; return nil }
}

// WithWorkspace sets the workspace used when a request's address has none.
func WithWorkspace(workspace string) Option {
	return func(o *options) error { o.workspace = workspace; return nil }
}

// WithRetries sets how many times a failed call is retried (not counting the
// first attempt). 0 disables retries.
func WithRetries(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("client: retries must be >= 0, got %d", n)
		}
		o.retries = n
		return nil
	}
}

// WithRetryBackoff sets the delay before the first retry and the cap it
// doubles up to; each delay is jittered by up to ±25% so that many clients
// failing together do not retry in lockstep.
func WithRetryBackoff(initial, maximum time.Duration) Option {
	return func(o *options) error {
		if initial <= 0 || maximum < initial {
			return fmt.Errorf("client: retry backoff needs 0 < initial <= max, got %v and %v", initial, maximum)
		}
		o.backoff, o.maxBackoff = initial, maximum
		return nil
	}
}

// WithTLS connects with TLS, verifying the gateways' certificates with
// cfg (nil: the system's roots and the address's host name). It applies to
// every node the client connects to, including the leaders it learns.
func WithTLS(cfg *tls.Config) Option {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return WithDialOptions(grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
}

// WithDialOptions adds gRPC dial options; they are applied after the
// client's own, so they can replace the transport credentials.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) error { o.dialOptions = append(o.dialOptions, opts...); return nil }
}

// WithLeaderRouting turns leader routing on or off. By default it is on
// for a client given more than one address (DialCluster) and off for one
// address (Dial). On, Submit and linearizable Get and History go to the
// gateway of the node that leads the address's shard when the client knows
// it and is connected to it, and to any of the given addresses (which
// forwards, as without routing) otherwise. The client learns the leaders
// with the Status call and from the gateways' answers, and connects to the
// gateway address each node advertises, so turn routing off when those
// addresses cannot be reached from the client (behind a load balancer or
// NAT), or routing only adds idle connection attempts. Everything else
// (Status, Drain, SubmitAsync, Watch, stale reads) goes to the given
// addresses in turn either way.
func WithLeaderRouting(on bool) Option {
	return func(o *options) error {
		o.routing = routeAny
		if on {
			o.routing = routeLeader
		}
		return nil
	}
}

// WithConnsPerNode sets how many gRPC connections the client opens to each
// gateway address (default 1). One HTTP/2 connection carries any number of
// calls, but through one socket and one reader goroutine on each side, which
// caps the throughput of a heavily loaded client.
func WithConnsPerNode(n int) Option {
	return func(o *options) error {
		if n < 1 || n > 64 {
			return fmt.Errorf("client: connections per node must be between 1 and 64, got %d", n)
		}
		o.connsPerNode = n
		return nil
	}
}

// WithRouteRefresh sets how often a routing client asks the cluster for its
// shard leaders in the background (every, default DefaultRouteRefresh), and
// the least time between two such Status calls (minGap, default
// DefaultRouteMinGap), which also paces the refreshes a leadership change
// triggers.
func WithRouteRefresh(every, minGap time.Duration) Option {
	return func(o *options) error {
		if minGap <= 0 || every < minGap {
			return fmt.Errorf("client: route refresh needs 0 < min gap <= interval, got %v and %v", every, minGap)
		}
		o.refreshEvery, o.refreshGap = every, minGap
		return nil
	}
}

// WithSubmitBatching turns submit batching on or off (the default). It
// applies to routed submits only (WithLeaderRouting): while four calls to a
// shard's leader are in flight, further submits for that shard wait and then
// go together in one SubmitBatch call, which saves both sides per-call work
// under load; the nodes must serve SubmitBatch (the client stops batching at
// the first that does not). A submit with call options, outgoing metadata
// or a trace span of its own is always sent alone, and so is a command over
// 16 KiB.
//
// It is off by default because it has not been shown to pay: on 3 nodes it
// cuts the client's CPU per command by about a quarter and the leader's
// gRPC overhead from about 17% of its CPU to 5%, but the leader's Raft
// entries get smaller (about 5 commands instead of 6.5 at 128 clients),
// which costs the replicas about as much (bench/MEASUREMENTS.md).
func WithSubmitBatching(on bool) Option {
	return func(o *options) error { o.batching = on; return nil }
}

// WithUnarySubmits makes Submit send each command in a unary Submit call
// instead of on the connection's SubmitStream (the default). A streamed
// submit answers exactly as a unary one (the same results, errors, retries
// and routing); the stream only saves both sides per-call work: about 73-76
// µs of CPU per unary call with a bearer token against 21-23 µs per message
// on a stream (shared/PERF-NOTES.md). A node without SubmitStream is sent
// unary calls anyway, and so is a submit with call options, outgoing
// metadata or a trace span of its own, or a command over 1 MiB + 64 KiB.
func WithUnarySubmits() Option {
	return func(o *options) error { o.unary = true; return nil }
}

// WithUnaryGets makes Get send each read in a unary Get call instead of on
// the connection's GetStream (the default), which answers exactly as the
// unary call and saves both sides the per-call work, as for submits (see
// WithUnarySubmits; the same exceptions apply).
func WithUnaryGets() Option {
	return func(o *options) error { o.unaryGets = true; return nil }
}

// Client is a connection to a gateway, or to the gateways of a cluster. It
// is safe for concurrent use.
type Client struct {
	opts  options
	dopts []grpc.DialOption
	seeds []*endpoint // the given addresses, in order (repeats share one)
	next  atomic.Uint32
	r     *router  // nil unless leader routing is on
	batch *batcher // nil unless routing and batching are on

	mu     sync.Mutex
	eps    map[string]*endpoint // every endpoint, by address
	closed bool
	once   sync.Once
	err    error
}

// bearer attaches the token to every RPC.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false because the default transport is
// plaintext (see the package comment).
func (bearer) RequireTransportSecurity() bool { return false }

// Dial returns a client of the gateway at addr ("host:port"). Like
// grpc.NewClient it does not connect until the first call.
func Dial(addr string, opts ...Option) (*Client, error) {
	return DialCluster([]string{addr}, opts...)
}

// DialCluster returns a client of the gateways at addrs, nodes of one
// cluster. Calls go to them in turn, passing over an address whose
// connection is failing while another's is not; with more than one distinct
// address leader routing is on unless WithLeaderRouting(false) says
// otherwise. Like grpc.NewClient it does not connect until the first call.
func DialCluster(addrs []string, opts ...Option) (*Client, error) {
	o := options{
		retries: DefaultRetries, backoff: DefaultRetryBackoff, maxBackoff: DefaultMaxRetryBackoff,
		connsPerNode: 1, refreshEvery: DefaultRouteRefresh, refreshGap: DefaultRouteMinGap,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("client: no gateway address")
	}
	for _, a := range addrs {
		if a == "" {
			return nil, errors.New("client: empty gateway address")
		}
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxRecvMsgSize)),
	}
	if o.token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer(o.token)))
	}
	dopts = append(dopts, o.dialOptions...)
	c := &Client{opts: o, dopts: dopts, eps: map[string]*endpoint{}}
	for _, a := range addrs {
		ep, err := c.newEndpoint(a)
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		c.seeds = append(c.seeds, ep)
	}
	if o.routing == routeLeader || (o.routing == routeAuto && len(c.eps) > 1) {
		c.r = newRouter(c)
		if o.batching {
			c.batch = newBatcher()
		}
	}
	return c, nil
}

// newEndpoint returns the endpoint of addr, opening its connections (which
// connect on first use) unless it has them already.
func (c *Client) newEndpoint(addr string) (*endpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ep := c.eps[addr]; ep != nil {
		return ep, nil
	}
	if c.closed {
		return nil, errors.New("client: closed")
	}
	ep := &endpoint{addr: addr}
	for range c.opts.connsPerNode {
		conn, err := grpc.NewClient(addr, c.dopts...)
		if err != nil {
			_ = ep.close()
			return nil, fmt.Errorf("client: %w", err)
		}
		gw := pb.NewGatewayClient(conn)
		ep.conns = append(ep.conns, conn)
		ep.gws = append(ep.gws, newGWConn(gw))
	}
	c.eps[addr] = ep
	return ep, nil
}

// endpoint returns the endpoint of a node's advertised address, connecting
// to it at once (a routed call only uses a connection that is up), or nil
// if the address is unusable or the client closed. Connections are kept
// until Close: closing one under a call would turn its outcome unknown.
func (c *Client) endpoint(addr string) *endpoint {
	c.mu.Lock()
	ep := c.eps[addr]
	c.mu.Unlock()
	if ep != nil {
		return ep
	}
	ep, err := c.newEndpoint(addr)
	if err != nil {
		return nil
	}
	ep.connect()
	return ep
}

// Close closes the connections; calls in flight fail.
func (c *Client) Close() error {
	c.once.Do(func() {
		if c.r != nil {
			c.r.stop()
		}
		c.mu.Lock()
		c.closed = true
		eps := c.eps
		c.eps = map[string]*endpoint{}
		c.mu.Unlock()
		var errs []error
		for _, ep := range eps { // order does not matter
			errs = append(errs, ep.close())
		}
		c.err = errors.Join(errs...)
	})
	return c.err
}

// fillAddress sets the client's tenant and workspace where addr has none.
// It returns a copy, so the caller's message is not changed behind its back.
func (c *Client) fillAddress(addr *pb.Address) *pb.Address {
	if c.opts.tenant == "" && c.opts.workspace == "" {
		return addr
	}
	out := &pb.Address{}
	if addr != nil {
		out.Tenant, out.Workspace, out.ActorType, out.EntityId = addr.GetTenant(), addr.GetWorkspace(), addr.GetActorType(), addr.GetEntityId()
	}
	if out.Tenant == "" {
		out.Tenant = c.opts.tenant
	}
	if out.Workspace == "" {
		out.Workspace = c.opts.workspace
	}
	return out
}

// NewID returns 128 random bits as hex, for idempotency keys and command ids.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("client: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// Submit sends a command and retries it when that is safe: on Unavailable
// (no leader, or an unknown outcome) and on an overloaded shard, up to the
// configured number of retries, always with the same idempotency key and
// command id, so the command takes effect at most once and a retry after an
// unknown outcome returns the original Result as a normal answer, with
// Result.Replay set: the answer is a replay of this submission's own earlier
// attempt (or of one the cluster made for it), not someone else's.
// Result.Duplicate means another command id (another submission) used the
// idempotency key first.
//
// When req.IdempotencyKey or req.CommandId is empty, Submit sets a random one
// on req itself: after a final unknown-outcome error, the caller can retry
// later with the same req and still get exactly-once.
func (c *Client) Submit(ctx context.Context, req *pb.SubmitRequest, opts ...grpc.CallOption) (*pb.SubmitResponse, error) {
	send := c.submitRequest(req)
	var resp *pb.SubmitResponse
	err := c.retry(ctx, func() error {
		gw, rc := c.target(send.GetAddress(), true)
		var err error
		switch {
		case c.batch.batchable(ctx, rc, opts):
			resp, rc.tr, err = c.batch.submit(ctx, rc, gw, send)
		case !c.opts.unary && streamable(ctx, opts, send):
			resp, err = gw.(*gwConn).st.Call(ctx, send, rc.trailer())
			if err == callmux.ErrNoStream {
				resp, err = gw.Submit(ctx, send, rc.callOptions(opts)...)
			}
		default:
			resp, err = gw.Submit(ctx, send, rc.callOptions(opts)...)
		}
		rc.finish(err)
		return err
	})
	return resp, err
}

// submitRequest sets a random idempotency key and command id on req where it
// has none (on req itself, so the caller can retry it later) and returns the
// request to send, with the client's tenant and workspace filled in.
func (c *Client) submitRequest(req *pb.SubmitRequest) *pb.SubmitRequest {
	if req.IdempotencyKey == "" {
		req.IdempotencyKey = NewID()
	}
	if req.CommandId == "" {
		req.CommandId = NewID()
	}
	if addr := c.fillAddress(req.GetAddress()); addr != req.GetAddress() {
		// A shallow copy suffices: only the address differs.
		return &pb.SubmitRequest{
			Address: addr, Type: req.Type, Payload: req.Payload, IdempotencyKey: req.IdempotencyKey,
			ExpectedVersion: req.ExpectedVersion, CommandId: req.CommandId, CausationId: req.CausationId,
			CorrelationId: req.CorrelationId, OnBehalfOf: req.OnBehalfOf,
		}
	}
	return req
}

// Get reads an entity's state, retrying while the shard has no leader.
func (c *Client) Get(ctx context.Context, req *pb.GetRequest, opts ...grpc.CallOption) (*pb.GetResponse, error) {
	send := req
	if addr := c.fillAddress(req.GetAddress()); addr != req.GetAddress() {
		send = &pb.GetRequest{Address: addr, Consistency: req.GetConsistency()}
	}
	route := send.GetConsistency() != pb.Consistency_CONSISTENCY_STALE
	var resp *pb.GetResponse
	err := c.retry(ctx, func() error {
		gw, rc := c.target(send.GetAddress(), route)
		var err error
		if !c.opts.unaryGets && streamable(ctx, opts, send) {
			resp, err = gw.(*gwConn).get.Call(ctx, send, rc.trailer())
			if err == callmux.ErrNoStream {
				resp, err = gw.Get(ctx, send, rc.callOptions(opts)...)
			}
		} else {
			resp, err = gw.Get(ctx, send, rc.callOptions(opts)...)
		}
		rc.finish(err)
		return err
	})
	return resp, err
}

// History reads one page of an entity's history, retrying while the shard
// has no leader.
func (c *Client) History(ctx context.Context, req *pb.HistoryRequest, opts ...grpc.CallOption) (*pb.HistoryResponse, error) {
	send := req
	if addr := c.fillAddress(req.GetAddress()); addr != req.GetAddress() {
		send = &pb.HistoryRequest{
			Address: addr, IncludeRejections: req.GetIncludeRejections(), PageSize: req.GetPageSize(),
			PageToken: req.GetPageToken(), Consistency: req.GetConsistency(),
		}
	}
	route := send.GetConsistency() != pb.Consistency_CONSISTENCY_STALE
	var resp *pb.HistoryResponse
	err := c.retry(ctx, func() error {
		gw, rc := c.target(send.GetAddress(), route)
		var err error
		resp, err = gw.History(ctx, send, rc.callOptions(opts)...)
		rc.finish(err)
		return err
	})
	return resp, err
}

// Status reports the node the client is connected to (with several
// addresses, the next one in turn).
func (c *Client) Status(ctx context.Context, opts ...grpc.CallOption) (*pb.StatusResponse, error) {
	var resp *pb.StatusResponse
	err := c.retry(ctx, func() error {
		var err error
		resp, err = c.anyGateway().Status(ctx, &pb.StatusRequest{}, opts...)
		return err
	})
	return resp, err
}

// Drain starts (undo false) or cancels draining node id. It needs a token
// with role admin.
func (c *Client) Drain(ctx context.Context, id string, undo bool, opts ...grpc.CallOption) (*pb.DrainResponse, error) {
	var resp *pb.DrainResponse
	err := c.retry(ctx, func() error {
		var err error
		resp, err = c.anyGateway().Drain(ctx, &pb.DrainRequest{NodeId: id, Undo: undo}, opts...)
		return err
	})
	return resp, err
}

// retry runs call until it succeeds, fails with a non-retryable error, the
// retries are used up or ctx ends; it returns the last error.
func (c *Client) retry(ctx context.Context, call func() error) error {
	delay := c.opts.backoff
	for attempt := 0; ; attempt++ {
		err := call()
		if err == nil || attempt >= c.opts.retries || !retryable(err) || ctx.Err() != nil {
			return err
		}
		// ±25% jitter; math/rand is fine, this is not a secret.
		d := delay - delay/4 + time.Duration(mrand.Int64N(int64(delay/2)+1))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(delay*2, c.opts.maxBackoff)
	}
}

// retryable reports whether a call that failed with err may be sent again.
// Unavailable covers both "not applied" and "outcome unknown" (safe because
// the retry carries the same idempotency key). ResourceExhausted is retried
// only when the gateway says the shard was overloaded: gRPC also uses that
// code for a message over the size limit, which no retry fixes.
func retryable(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		return errorReason(st) == wo.ReasonOverloaded
	}
	return false
}

// errorReason returns the reason of the gateway's ErrorInfo detail, if any.
func errorReason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			return info.GetReason()
		}
	}
	return ""
}

// IsUnknownOutcome reports whether err from Submit leaves it open whether the
// command was applied: the gateway said so (ReasonOutcomeUnknown, message
// starting "outcome unknown:"), the connection failed with the call possibly
// in flight, or the deadline passed or the call was canceled. Resubmit with
// the same idempotency key to learn the outcome. Use IsGatewayUnknownOutcome
// to tell the gateway's explicit verdict from transport failures.
func IsUnknownOutcome(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
	}
	switch st.Code() {
	case codes.Unavailable:
		// Only the gateway's "not applied" is certain; a transport failure
		// may have cut the call after the command was sent.
		return !notApplied(errorReason(st))
	case codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// IsGatewayUnknownOutcome reports whether the gateway itself answered that the
// command's outcome is unknown (it reached the shard, then leadership changed
// or the wait timed out).
func IsGatewayUnknownOutcome(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	r := errorReason(st)
	return r == reasonOutcomeUnknown || (r == "" && strings.HasPrefix(st.Message(), outcomeUnknownPrefix))
}

// IsNotApplied reports whether err says the command was definitely not
// applied (no leader, shard closing or overloaded), so that even a new
// idempotency key could not cause a double effect.
func IsNotApplied(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	return notApplied(errorReason(st))
}

// notApplied reports whether the gateway's reason says "not applied"
// (api/outcome's table); a reason this version does not know is not.
func notApplied(reason string) bool {
	a, known := wo.OfReason(reason)
	return known && a == wo.NotApplied
}
