// Package gateway is Rhizon's client-facing API: the rhizon.v1.Gateway gRPC
// service and the same calls over HTTP/JSON. It authenticates callers with
// bearer tokens, turns requests into actor.Commands and rejects bad input
// with a precise status before anything reaches the Raft log, then hands the
// command to a Backend (the node) and maps the outcome back.
//
// The gateway is not deterministic code: it may read the clock and draw
// random command ids. Everything it decides is re-checked by the engine on
// every replica, so the gateway is a first line of defence and a source of
// good error messages, not the authority.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/outcome"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// History page sizes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// violationRecordTimeout bounds how long recording an out-of-scope attempt
// may take once the caller has gone: the audit record should not depend on
// the offender keeping its connection open, but must not linger forever.
const violationRecordTimeout = 5 * time.Second

// Config configures a Server.
type Config struct {
	// Backend is the node the gateway serves. Required.
	Backend Backend
	// Auth verifies bearer tokens. Required: Rhizon has no anonymous access.
	Auth *Auth
	// Logger receives denials and backend failures; slog.Default() if nil.
	Logger *slog.Logger
	// NodeID and Version fill StatusResponse fields the backend leaves empty.
	NodeID  string
	Version string
	// Async serves SubmitAsync and Watch (the node's JetStream ingress).
	// Nil when the node runs without NATS: both calls are then Unimplemented.
	Async AsyncBackend
	// MaxWatchesPerToken and MaxWatchesPerConn bound the Watch streams one
	// token, and one client connection, may hold open on this node at once;
	// 0 means DefaultWatchesPerToken and DefaultWatchesPerConn.
	MaxWatchesPerToken int
	MaxWatchesPerConn  int
	// MaxBatchInFlight bounds the commands of all SubmitBatch calls in
	// flight at once; 0 means DefaultBatchInFlight.
	MaxBatchInFlight int
	// Quotas limits request rates and storage per tenant and principal;
	// nil means no limits. See Quotas for how nodes share them.
	Quotas *Quotas
	// WatchRecheck is how often an open Watch checks that its token still
	// authenticates; 0 means DefaultWatchRecheck.
	WatchRecheck time.Duration
}

// Server implements pb.GatewayServer over a Backend. It is safe for
// concurrent use.
type Server struct {
	pb.UnimplementedGatewayServer

	backend Backend
	auth    *Auth
	// watchRecheck: Config.WatchRecheck.
	watchRecheck time.Duration
	log          *slog.Logger
	nodeID       string
	version      string
	health       *health.Server
	// grpcServer is the server RegisterGRPC registered on, whose services
	// all follow the node's health.
	grpcServer atomic.Pointer[grpc.Server]
	tracing    propagation.TextMapPropagator
	async      AsyncBackend
	// hinter is the backend when it forwards to shard leaders elsewhere.
	hinter RouteHinter
	quotas *Quotas

	// closing is closed by Shutdown; it ends open Watch streams, which
	// would otherwise hold a graceful stop until its deadline.
	closing   chan struct{}
	closeOnce sync.Once

	// batchSlots holds one token per SubmitBatch command in flight, across
	// all calls: each batch command takes one before its goroutine starts.
	batchSlots chan struct{}

	watches watchCounts

	// lastHealth is the last assessment (Health), for the metrics.
	lastHealth    healthCache
	healthMetrics metric.Registration
}

// DefaultBatchInFlight is the default bound on SubmitBatch commands in
// flight at once on a node, over every call: two full batches.
const DefaultBatchInFlight = 2 * MaxSubmitBatch

var _ pb.GatewayServer = (*Server)(nil)

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("gateway: Config.Backend is required")
	}
	if cfg.Auth == nil {
		return nil, errors.New("gateway: Config.Auth is required (load a token file with LoadTokenFile)")
	}
	if cfg.Backend.Registry() == nil {
		return nil, errors.New("gateway: Backend.Registry() returned nil")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	hinter, _ := cfg.Backend.(RouteHinter)
	inflight := cfg.MaxBatchInFlight
	if inflight <= 0 {
		inflight = DefaultBatchInFlight
	}
	recheck := cfg.WatchRecheck
	if recheck <= 0 {
		recheck = DefaultWatchRecheck
	}
	s := &Server{
		watchRecheck: recheck,
		batchSlots:   make(chan struct{}, inflight),
		watches:      newWatchCounts(cfg.MaxWatchesPerToken, cfg.MaxWatchesPerConn),
		backend:      cfg.Backend,
		hinter:       hinter,
		auth:         cfg.Auth,
		log:          log.With("component", "gateway"),
		nodeID:       cfg.NodeID,
		version:      cfg.Version,
		health:       health.NewServer(),
		tracing:      propagation.TraceContext{},
		async:        cfg.Async,
		closing:      make(chan struct{}),
		quotas:       cfg.Quotas,
	}
	if err := s.registerHealthMetrics(); err != nil {
		return nil, fmt.Errorf("gateway: health metrics: %w", err)
	}
	s.startQuotas(cfg.Backend)
	return s, nil
}

// tokenKey carries the bearer token of an HTTP request in its context, so
// the gRPC methods serve both transports unchanged.
type tokenKey struct{}

// bearerToken returns the token of the call, from the HTTP layer's context
// value or the gRPC "authorization" metadata, and whether an authorization
// value was present at all (to tell "no token" from "not a bearer token").
func bearerToken(ctx context.Context) (token string, present bool) {
	if h, ok := ctx.Value(tokenKey{}).(string); ok {
		if h == "" {
			return "", false
		}
		t, _ := parseBearer(h)
		return t, true
	}
	// Only this key: FromIncomingContext would copy every header, on every
	// request.
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	for _, v := range vals {
		if t, ok := parseBearer(v); ok {
			return t, true
		}
	}
	return "", len(vals) > 0
}

// parseBearer extracts the token of an "Authorization: Bearer <token>" value.
// The scheme is case-insensitive (RFC 6750).
func parseBearer(v string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func (s *Server) authenticate(ctx context.Context) (Identity, error) {
	if id, ok := ctx.Value(identityKey{}).(Identity); ok {
		return id, nil // the HTTP layer authenticated the request already
	}
	tok, present := bearerToken(ctx)
	if tok == "" && present {
		return Identity{}, status.Error(codes.Unauthenticated, `authorization must be "Bearer <token>"`)
	}
	return s.auth.Authenticate(tok)
}

// metadataCarrier adapts incoming gRPC metadata to the otel propagator.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(k string) string {
	if v := metadata.MD(c).Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c metadataCarrier) Set(k, v string) { metadata.MD(c).Set(k, v) }
func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// traceContext returns the W3C traceparent/tracestate to record on the
// command: the current span when there is one (the otelgrpc stats handler
// or the HTTP layer put it there), else whatever the caller sent in gRPC
// metadata. A tracestate over the command's limit is dropped rather than
// failing the command for a header the caller probably did not set itself.
func (s *Server) traceContext(ctx context.Context) (traceparent, tracestate string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		// Without a traceparent there is nothing to extract; most calls
		// carry none, and FromIncomingContext copies every header.
		if len(metadata.ValueFromIncomingContext(ctx, "traceparent")) == 0 {
			return "", ""
		}
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			ctx = s.tracing.Extract(ctx, metadataCarrier(md))
		}
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	c := propagation.MapCarrier{}
	s.tracing.Inject(ctx, c)
	traceparent, tracestate = c.Get("traceparent"), c.Get("tracestate")
	if len(tracestate) > actor.MaxTraceLen {
		tracestate = ""
	}
	return traceparent, tracestate
}

// randomID returns 128 random bits as hex. The gateway is outside the
// deterministic core, so crypto/rand is fine here.
func randomID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("gateway: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// fillScope sets an empty tenant and workspace from the identity's defaults.
func fillScope(addr *pb.Address, id Identity) actor.Address {
	a := addr.ToActor()
	if a.Tenant == "" {
		a.Tenant = id.DefaultScope.Tenant
	}
	if a.Workspace == "" {
		a.Workspace = id.defaultWorkspace(a.Tenant)
	}
	return a
}

// invalid returns InvalidArgument with the message of err (an actor
// Rejection's message without its "invalid:" prefix).
func invalid(err error) error {
	return status.Error(codes.InvalidArgument, rejectionText(err))
}

// scopeDenied is the PermissionDenied message for an address outside the
// identity's scopes; it names what the token may use so the fix is obvious.
func scopeDenied(id Identity, addr actor.Address, recorded bool) error {
	note := "the attempt was recorded"
	if !recorded {
		note = "recording the attempt failed; see the node's log"
	}
	return status.Errorf(codes.PermissionDenied,
		"principal %s (%s) may not act in tenant %q workspace %q; this token may use: %s (%s)",
		id.Principal.ID, id.Principal.Type, addr.Tenant, addr.Workspace, allowedScopes(id), note)
}

// allowedScopes lists the tenant/workspace pairs id may use, for messages.
func allowedScopes(id Identity) string {
	allowed := make([]string, len(id.Scopes))
	for i, sc := range id.Scopes {
		allowed[i] = fmt.Sprintf("tenant %q workspace %q", sc.Tenant, sc.Workspace)
	}
	return strings.Join(allowed, ", ")
}

// reservedVerbs are delivered by the engine itself; a client submitting one
// could forge a timer firing or a read-violation record.
var reservedVerbs = []string{actor.TimerVerb, actor.ReadVerb}

func reservedVerb(verb, actorType string, verbs []string) error {
	return status.Errorf(codes.InvalidArgument,
		"verb %q is reserved for the engine and cannot be submitted; verbs of %q: %s",
		verb, actorType, strings.Join(verbs, ", "))
}

// clientVerbs lists the verbs of b a client may submit.
func clientVerbs(b actor.Behavior) []string {
	var out []string
	for _, v := range b.Verbs() {
		if !slices.Contains(reservedVerbs, v) {
			out = append(out, v)
		}
	}
	return out
}

// buildCommand turns a SubmitRequest into a validated command. It performs
// every check that needs no state, in the documented order, and returns the
// status error of the first that fails.
func (s *Server) buildCommand(ctx context.Context, id Identity, req *pb.SubmitRequest) (actor.Command, error) {
	cmd := actor.Command{
		ID:              req.GetCommandId(),
		Type:            req.GetType(),
		Address:         fillScope(req.GetAddress(), id),
		Payload:         req.GetPayload(),
		IdempotencyKey:  req.GetIdempotencyKey(),
		ExpectedVersion: req.ExpectedVersion,
		Security:        id.Security(),
		CausationID:     req.GetCausationId(),
		CorrelationID:   req.GetCorrelationId(),
	}
	if cmd.ID == "" {
		cmd.ID = randomID()
	}
	if cmd.IdempotencyKey == "" {
		return cmd, status.Error(codes.InvalidArgument, "idempotency_key is required: retries must reuse the same key")
	}
	cmd.TraceParent, cmd.TraceState = s.traceContext(ctx)

	if obo := req.GetOnBehalfOf(); obo != nil && (obo.GetId() != "" || obo.GetType() != "") {
		if id.Role != RoleSystem {
			return cmd, status.Errorf(codes.PermissionDenied,
				"on_behalf_of is only for system principals (role system); this token's principal %s is a %s with role %s: drop on_behalf_of or use a system token",
				id.Principal.ID, id.Principal.Type, id.Role)
		}
		p := obo.ToActor()
		if err := p.Validate(); err != nil {
			return cmd, status.Errorf(codes.InvalidArgument, "on_behalf_of: %s", rejectionText(err))
		}
		cmd.Security.Principal = p
	}

	if verb, at := actor.ParseCommandType(cmd.Type); slices.Contains(reservedVerbs, verb) {
		// Before Validate (which refuses the timer verb too), to name the
		// verbs that may be sent instead.
		if beh, ok := s.backend.Registry().Lookup(at); ok {
			return cmd, reservedVerb(verb, at, clientVerbs(beh))
		}
	}
	if err := cmd.Validate(); err != nil {
		return cmd, invalid(err)
	}
	if len(cmd.Payload) > 0 {
		if !utf8.Valid(cmd.Payload) {
			return cmd, status.Errorf(codes.InvalidArgument, "payload %v", checkJSONText(cmd.Payload))
		}
		if !json.Valid(cmd.Payload) {
			return cmd, status.Errorf(codes.InvalidArgument, "payload is not valid JSON: %s", jsonSyntaxError(cmd.Payload))
		}
		if err := checkJSONText(cmd.Payload); err != nil {
			return cmd, status.Errorf(codes.InvalidArgument, "payload %v", err)
		}
	}
	beh, err := s.lookup(cmd.Address.ActorType, cmd.Address.Tenant)
	if err != nil {
		return cmd, err
	}
	verb := cmd.Verb()
	verbs := clientVerbs(beh)
	if slices.Contains(reservedVerbs, verb) {
		return cmd, reservedVerb(verb, cmd.Address.ActorType, verbs)
	}
	if !slices.Contains(verbs, verb) {
		return cmd, status.Errorf(codes.InvalidArgument,
			"actor type %q has no verb %q; verbs: %s (send type cmd.%s.<verb>)",
			cmd.Address.ActorType, verb, strings.Join(verbs, ", "), cmd.Address.ActorType)
	}
	if v, ok := beh.(actor.Validator); ok {
		if err := v.Validate(&cmd); err != nil {
			return cmd, invalid(err)
		}
	}
	return cmd, nil
}

// jsonSyntaxError describes why p is not JSON, with the byte offset.
func jsonSyntaxError(p []byte) string {
	var v any
	err := json.Unmarshal(p, &v)
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	case err != nil:
		return err.Error()
	}
	return "invalid JSON"
}

// Submit authenticates the caller, validates the command and proposes it.
// Conflicts and business rejections are Results with status OK, because the
// command was decided and recorded; violations are PermissionDenied (and
// recorded by the engine); backend failures say whether the command was
// applied, not applied, or has an unknown outcome (see errors.go).
func (s *Server) Submit(ctx context.Context, req *pb.SubmitRequest) (*pb.SubmitResponse, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	resp, served, shardID, err := s.submit(ctx, id, req)
	if shardID != noShard {
		s.setRouteTrailers(ctx, req.GetAddress(), served, shardID, true)
	}
	return resp, err
}

// noShard marks a command refused before its shard was computed: there is no
// routing hint to give.
const noShard = ^uint32(0)

// submit is Submit for an authenticated caller. It returns the address the
// command was served for and its shard (noShard when it was refused before
// routing), for the routing trailers.
func (s *Server) submit(ctx context.Context, id Identity, req *pb.SubmitRequest) (*pb.SubmitResponse, actor.Address, uint32, error) {
	cmd, err := s.buildCommand(ctx, id, req)
	if err != nil {
		return nil, cmd.Address, noShard, err
	}
	shardID := s.backend.ShardOf(cmd.Address)
	if !cmd.Security.Allows(cmd.Address.Tenant, cmd.Address.Workspace) {
		// The engine is the one that records violations (it writes
		// evt.security.violation into the target's history on every
		// replica), so the command goes to the log anyway.
		recorded := s.recordViolation(ctx, cmd, shardID)
		return nil, cmd.Address, noShard, scopeDenied(id, cmd.Address, recorded)
	}
	// Charged only once the scope is known to be the caller's: a request
	// naming another tenant must not spend that tenant's quota.
	if err := s.admitWrite(ctx, id, cmd.Address.Tenant); err != nil {
		return nil, cmd.Address, noShard, err
	}
	res, err := s.backend.Submit(ctx, cmd)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "submit failed",
			slog.Uint64("shard", uint64(shardID)), slog.String("command_id", cmd.ID),
			slog.String("idempotency_key", cmd.IdempotencyKey), slog.Any("err", err))
		return nil, cmd.Address, shardID, submitError(ctx, err, shardID, cmd.IdempotencyKey, cmd.ID)
	}
	switch res.Reason {
	case actor.ReasonViolation:
		return nil, cmd.Address, shardID, status.Errorf(codes.Code(outcome.Lookup(actor.CodeViolation).GRPC), "%s (the attempt was recorded)", res.Message)
	case actor.ReasonInvalid:
		return nil, cmd.Address, shardID, status.Error(codes.Code(outcome.Lookup(actor.CodeInvalid).GRPC), res.Message)
	}
	return &pb.SubmitResponse{Result: pb.FromResult(&res), Shard: shardID}, cmd.Address, shardID, nil
}

// MaxSubmitBatch is the most commands one SubmitBatch may carry. The request
// is also bounded by MaxRecvMsgSize.
const MaxSubmitBatch = 1000

// SubmitBatch runs Submit for each command of the request at once, under one
// authentication, and answers with each one's outcome in the request's
// order. The call itself fails only when the caller is not authenticated or
// the batch is empty or too large: a refused command is an outcome. The
// routing trailers are those of the first command that reached a shard (a
// client batches the commands of one shard).
func (s *Server) SubmitBatch(ctx context.Context, req *pb.SubmitBatchRequest) (*pb.SubmitBatchResponse, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	cmds := req.GetCommands()
	switch {
	case len(cmds) == 0:
		return nil, status.Error(codes.InvalidArgument, "commands is empty: a batch needs at least one command")
	case len(cmds) > MaxSubmitBatch:
		return nil, status.Errorf(codes.InvalidArgument, "%d commands in one batch; the limit is %d: split the batch", len(cmds), MaxSubmitBatch)
	}
	out := make([]*pb.SubmitOutcome, len(cmds))
	served := make([]actor.Address, len(cmds))
	shards := make([]uint32, len(cmds))
	one := func(i int) {
		resp, addr, shardID, err := s.submit(ctx, id, cmds[i])
		served[i], shards[i] = addr, shardID
		if err != nil {
			out[i] = &pb.SubmitOutcome{Error: status.Convert(err).Proto()}
			return
		}
		out[i] = &pb.SubmitOutcome{Response: resp}
	}
	// The commands were concurrent at the client, so they wait for their
	// outcomes concurrently here: they then share the shard's next Raft
	// entries, as separate calls would. Each takes a slot of the node-wide
	// bound first, so that many large batches at once queue here rather
	// than start a goroutine per command each.
	var wg sync.WaitGroup
	for i := range cmds {
		select {
		case s.batchSlots <- struct{}{}:
		case <-ctx.Done():
			out[i] = &pb.SubmitOutcome{Error: status.FromContextError(ctx.Err()).Proto()}
			shards[i] = noShard
			continue
		}
		wg.Go(func() {
			defer func() { <-s.batchSlots }()
			one(i)
		})
	}
	wg.Wait()
	for i, shardID := range shards {
		if shardID != noShard {
			s.setRouteTrailers(ctx, cmds[i].GetAddress(), served[i], shardID, true)
			break
		}
	}
	return &pb.SubmitBatchResponse{Outcomes: out}, nil
}

// recordViolation proposes an out-of-scope command so the engine records
// evt.security.violation. Failure to record is logged, not returned: the
// caller is denied either way. It reports whether the violation was recorded.
func (s *Server) recordViolation(ctx context.Context, cmd actor.Command, shardID uint32) bool {
	s.log.LogAttrs(ctx, slog.LevelWarn, "scope violation",
		slog.String("principal", cmd.Security.Principal.ID), slog.String("principal_type", string(cmd.Security.Principal.Type)),
		slog.String("address", cmd.Address.String()), slog.String("command_type", cmd.Type),
		slog.String("command_id", cmd.ID))
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), violationRecordTimeout)
	defer cancel()
	res, err := s.backend.Submit(rctx, cmd)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelError, "could not record scope violation",
			slog.Uint64("shard", uint64(shardID)), slog.String("command_id", cmd.ID), slog.Any("err", err))
		return false
	}
	if res.Reason != actor.ReasonViolation {
		// The engine disagreed with the gateway's scope check; that is a bug
		// in one of them and worth shouting about.
		s.log.LogAttrs(ctx, slog.LevelError, "engine did not treat out-of-scope command as a violation",
			slog.String("command_id", cmd.ID), slog.Int("status", int(res.Status)), slog.String("reason", res.Reason.String()))
		return false
	}
	return true
}

// readTarget authenticates a read and resolves its address; on a scope
// violation it records the attempt and returns PermissionDenied.
func (s *Server) readTarget(ctx context.Context, addr *pb.Address) (actor.Address, uint32, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return actor.Address{}, 0, err
	}
	a := fillScope(addr, id)
	if err := a.Validate(); err != nil {
		return a, 0, invalid(err)
	}
	shardID := s.backend.ShardOf(a)
	sec := id.Security()
	if !sec.Allows(a.Tenant, a.Workspace) {
		tp, ts := s.traceContext(ctx)
		cmdID := randomID()
		recorded := s.recordViolation(ctx, actor.Command{
			ID:             cmdID,
			Type:           actor.CommandType(a.ActorType, actor.ReadVerb),
			Address:        a,
			IdempotencyKey: "read-violation/" + cmdID,
			Security:       sec,
			TraceParent:    tp,
			TraceState:     ts,
		}, shardID)
		return a, shardID, scopeDenied(id, a, recorded)
	}
	if isAuditStream(a) {
		// No actor behind it: the engine writes the offenders' audit
		// streams of violations (engine.AuditAddress).
		return a, shardID, nil
	}
	if _, err := s.lookup(a.ActorType, a.Tenant); err != nil {
		return a, shardID, err
	}
	if err := s.admitRequest(ctx, id, a.Tenant, 1, "the read"); err != nil {
		return a, shardID, err
	}
	return a, shardID, nil
}

func isAuditStream(a actor.Address) bool {
	return a.Tenant == actor.AuditTenant && a.Workspace == actor.AuditWorkspace && a.ActorType == actor.AuditActorType
}

// Get returns an entity's state and version. Tenant and workspace default to
// the token's, as for Submit.
func (s *Server) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	addr, shardID, err := s.readTarget(ctx, req.GetAddress())
	if err != nil {
		return nil, err
	}
	stale := req.GetConsistency() == pb.Consistency_CONSISTENCY_STALE
	ent, applied, err := s.backend.Get(ctx, addr, stale)
	s.setRouteTrailers(ctx, req.GetAddress(), addr, shardID, !stale)
	if err != nil {
		return nil, readError(err, fmt.Sprintf("shard %d", shardID), "get")
	}
	return &pb.GetResponse{
		Address:      pb.FromAddress(addr),
		Version:      ent.Version,
		State:        ent.State,
		Found:        ent.Version > 0,
		Shard:        shardID,
		AppliedIndex: applied,
	}, nil
}

// History returns one page of an entity's audit records.
func (s *Server) History(ctx context.Context, req *pb.HistoryRequest) (*pb.HistoryResponse, error) {
	addr, shardID, err := s.readTarget(ctx, req.GetAddress())
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		return nil, status.Errorf(codes.InvalidArgument, "page_size is %d; the limit is %d (0 means %d)", size, MaxPageSize, DefaultPageSize)
	}
	after, err := DecodePageToken(req.GetPageToken())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	stale := req.GetConsistency() == pb.Consistency_CONSISTENCY_STALE
	recs, next, more, trimmed, err := historyPage(ctx, s.backend, addr, after, size, req.GetIncludeRejections(), stale)
	s.setRouteTrailers(ctx, req.GetAddress(), addr, shardID, !stale)
	if err != nil {
		return nil, readError(err, fmt.Sprintf("shard %d", shardID), "history")
	}
	for _, r := range recs {
		if err := s.upcast(r.GetEvent()); err != nil {
			return nil, err
		}
	}
	resp := &pb.HistoryResponse{Records: recs}
	if t := trimmed; t != (actor.Position{}) { // the first kept position follows the last deleted one
		resp.TrimmedBefore = &pb.Position{Index: t.Index, Ordinal: t.Ordinal + 1}
	}
	if more {
		resp.NextPageToken = EncodePageToken(next)
	}
	return resp, nil
}

// Status reports the node and its shards. An admin sees everything; any
// other token sees what routing needs (tenantStatus), not the indexes and
// state hashes that move with every tenant's writes.
func (s *Server) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	st, err := s.backend.Status(ctx)
	if err != nil {
		return nil, readError(err, "this node", "status")
	}
	out := s.fillStatus(st)
	h := s.healthOf(out)
	s.lastHealth.Store(&h)
	out.Health, out.HealthReasons, out.ShardHealth = h.State, h.Reasons, h.Shards
	if id.Role != RoleAdmin {
		out = tenantStatus(out)
		s.hideOthersTypes(out, id)
	}
	return out, nil
}

// tenantStatus is the view of Status a non-admin token gets: the shard
// count, each replica's shard, role, leader, term and node, the nodes' ids,
// states, gateway addresses (what the Go client's leader routing reads) and
// actor types with their revisions, the actor types and the health states. Health reasons (which may quote
// lags), applied, commit and last-log indexes, state hashes,
// placement and rebalancing are left out: they move with other tenants'
// writes and say how busy they are.
func tenantStatus(st *pb.StatusResponse) *pb.StatusResponse {
	out := &pb.StatusResponse{
		NodeId: st.GetNodeId(), Version: st.GetVersion(), ShardCount: st.GetShardCount(), RaftGroups: st.GetRaftGroups(),
		ActorTypes: st.GetActorTypes(), Health: st.GetHealth(),
		ActiveRevisions: st.GetActiveRevisions(), DeployedOwners: st.GetDeployedOwners(),
	}
	for _, sh := range st.GetShardHealth() {
		out.ShardHealth = append(out.ShardHealth, &pb.ShardHealth{Shard: sh.GetShard(), State: sh.GetState()})
	}
	for _, sh := range st.GetShards() {
		out.Shards = append(out.Shards, &pb.ShardStatus{
			Shard: sh.GetShard(), Role: sh.GetRole(), Leader: sh.GetLeader(), Term: sh.GetTerm(), NodeId: sh.GetNodeId(),
			RaftGroup: sh.GetRaftGroup(),
		})
	}
	for _, n := range st.GetNodes() {
		out.Nodes = append(out.Nodes, &pb.NodeStatus{
			NodeId: n.GetNodeId(), State: n.GetState(), Draining: n.GetDraining(), GrpcAddr: n.GetGrpcAddr(),
			ActorRevisions: n.GetActorRevisions(),
		})
	}
	return out
}

// roleDenied is the PermissionDenied answer to a call that needs the admin
// role.
func roleDenied(id Identity, what string) error {
	return status.Errorf(codes.PermissionDenied,
		"%s needs a token with role admin; principal %s (%s) has role %s: use an operator token (\"role\": \"admin\" in the token file)",
		what, id.Principal.ID, id.Principal.Type, id.Role)
}

// Drain starts or cancels draining a node. Only an admin may: it changes
// where every tenant's data lives.
func (s *Server) Drain(ctx context.Context, req *pb.DrainRequest) (*pb.DrainResponse, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if id.Role != RoleAdmin {
		return nil, roleDenied(id, "draining a node")
	}
	if err := actor.ValidateID("node_id", req.NodeId); err != nil {
		return nil, invalid(err)
	}
	if err := s.backend.Drain(ctx, req.NodeId, !req.Undo); err != nil {
		return nil, readError(err, "node "+req.NodeId, "drain")
	}
	return &pb.DrainResponse{NodeId: req.NodeId, Draining: !req.Undo}, nil
}

// fillStatus completes what the backend left empty from the config and the
// registry, without mutating the backend's message.
func (s *Server) fillStatus(st *pb.StatusResponse) *pb.StatusResponse {
	if st == nil {
		st = &pb.StatusResponse{}
	}
	out := proto.Clone(st).(*pb.StatusResponse)
	if out.NodeId == "" {
		out.NodeId = s.nodeID
	}
	if out.Version == "" {
		out.Version = s.version
	}
	if len(out.ActorTypes) == 0 {
		out.ActorTypes = slices.Clone(s.backend.Registry().Types())
	}
	return out
}
