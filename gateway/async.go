package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
)

// AsyncBackend is what SubmitAsync and Watch need from a node: its JetStream
// ingress. *ingress.Manager implements it. Methods are safe for concurrent
// use. A node without NATS leaves Config.Async nil (a nil interface, not a
// nil *ingress.Manager in one), and the calls answer Unimplemented.
type AsyncBackend interface {
	// Enqueue publishes an authorized command (security context set) to its
	// shard's ingress subject and returns once JetStream stored it.
	Enqueue(ctx context.Context, cmd actor.Command) (stream.Enqueued, error)
	// Watch calls fn for every committed event of the filter, in per-entity
	// order, until ctx ends or fn returns an error (which it returns).
	// With f.Rejections it also passes the recorded rejections.
	Watch(ctx context.Context, f stream.WatchFilter, fn func(*pb.WatchEvent) error) error
}

// asyncReadier is the optional capability of an AsyncBackend that can tell
// whether its streams exist yet (*ingress.Manager.Ready). Without it,
// SubmitAsync relies on Enqueue and the caller's deadline.
type asyncReadier interface {
	Ready() <-chan struct{}
}

// asyncReadyWait bounds how long SubmitAsync waits for the streams of a node
// that has just started, so a caller without a deadline is not held while
// NATS elects its stream leaders. A variable so tests can shorten it.
var asyncReadyWait = 5 * time.Second

// errNoAsync is the answer of SubmitAsync and Watch on a node without NATS.
func errNoAsync(call string) error {
	return status.Errorf(codes.Unimplemented,
		"%s needs NATS JetStream, and this node runs without it (--nats-addr off and no --nats-url); use Submit, or start the node with an embedded or external NATS", call)
}

// SubmitAsync authenticates, validates and authorizes the command exactly as
// Submit does, then enqueues it on its shard's JetStream ingress subject and
// answers once JetStream has stored it, before it is applied. The shard
// leader applies it later; the engine's idempotency makes a retry with the
// same key apply once, whenever it arrives.
//
// An out-of-scope command is refused here, before anything is enqueued, and
// recorded the way Submit records it (proposed synchronously, so the engine
// writes evt.security.violation into the target's history). Enqueueing it
// instead would answer the caller with a stream sequence, which reads as
// "accepted", and would leave the audit record to whenever the consumer
// reached it.
func (s *Server) SubmitAsync(ctx context.Context, req *pb.SubmitRequest) (*pb.SubmitAsyncResponse, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if s.async == nil {
		return nil, errNoAsync("SubmitAsync")
	}
	cmd, err := s.buildCommand(ctx, id, req)
	if err != nil {
		return nil, err
	}
	shardID := s.backend.ShardOf(cmd.Address)
	if !cmd.Security.Allows(cmd.Address.Tenant, cmd.Address.Workspace) {
		recorded := s.recordViolation(ctx, cmd, shardID)
		return nil, scopeDenied(id, cmd.Address, recorded)
	}
	if err := s.admitWrite(ctx, id, cmd.Address.Tenant); err != nil {
		return nil, err
	}
	meta := map[string]string{"shard": fmt.Sprint(shardID), "idempotency_key": cmd.IdempotencyKey, "command_id": cmd.ID}
	if !s.asyncReady(ctx) {
		return nil, statusWithInfo(codes.Unavailable, ReasonNotApplied, meta,
			"this node's JetStream streams are not ready yet (NATS is starting or electing stream leaders); nothing was enqueued; retry")
	}
	enq, err := s.async.Enqueue(ctx, cmd)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "enqueue failed",
			slog.Uint64("shard", uint64(shardID)), slog.String("command_id", cmd.ID),
			slog.String("idempotency_key", cmd.IdempotencyKey), slog.Any("err", err))
		return nil, enqueueError(ctx, err, shardID, meta)
	}
	// CommandId is this request's; on a duplicate the stored command keeps
	// the id it was first sent with (the same one when the retry reused it,
	// as the Go client's retries do).
	return &pb.SubmitAsyncResponse{
		Stream: enq.Stream, Sequence: enq.Sequence, Duplicate: enq.Duplicate, Shard: enq.Shard, CommandId: cmd.ID,
	}, nil
}

// asyncReady reports whether the async backend's streams exist, waiting at
// most asyncReadyWait (or until ctx ends) for them.
func (s *Server) asyncReady(ctx context.Context) bool {
	r, ok := s.async.(asyncReadier)
	if !ok {
		return true
	}
	select {
	case <-r.Ready():
		return true
	default:
	}
	t := time.NewTimer(asyncReadyWait)
	defer t.Stop()
	select {
	case <-r.Ready():
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// enqueueError maps an Enqueue error. Only answers that prove JetStream did
// not store the message are "not applied"; a timeout or a lost connection
// may come after the stream stored it, so those are unknown outcomes, to be
// retried with the same idempotency key (JetStream's duplicate window and
// the engine's idempotency make a second copy harmless).
func enqueueError(ctx context.Context, err error, shardID uint32, meta map[string]string) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return status.Errorf(codes.InvalidArgument,
			"the command is too large for the NATS server's max_payload; nothing was enqueued: use Submit for it, or make the payload smaller")
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return statusWithInfo(codes.Unavailable, ReasonNotApplied, meta, fmt.Sprintf(
			"no JetStream stream answered for shard %d's ingress subject (its stream leader is being elected, or NATS lost JetStream); nothing was enqueued; retry", shardID))
	case errors.As(err, &apiErr):
		return statusWithInfo(codes.Unavailable, ReasonNotApplied, meta, fmt.Sprintf(
			"JetStream refused the command for shard %d: %s (JetStream error %d); nothing was enqueued; retry, and check the NATS server if this persists",
			shardID, apiErr.Description, apiErr.ErrorCode))
	}
	return unknownOutcome(ctx, meta, fmt.Sprintf(
		"%s enqueueing on shard %d did not complete (%v); retry with the same idempotency_key %q: a command stored twice is applied once",
		OutcomeUnknownPrefix, shardID, err, meta["idempotency_key"]))
}

// Watch streams the committed events of a tenant/workspace (the token's own
// when empty), optionally of one actor type, entity and event type, until
// the client cancels. Headers are sent as soon as the request is accepted,
// so a client can tell a refused watch from a quiet one.
func (s *Server) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchEvent]) error {
	ctx := stream.Context()
	f, id, err := s.watchFilter(ctx, req)
	if err != nil {
		return err
	}
	release, err := s.watches.acquire(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	return s.runWatch(ctx, f, stream.Send)
}

// watchFilter authenticates a Watch and turns it into a filter, with the
// status error of the first check that fails.
func (s *Server) watchFilter(ctx context.Context, req *pb.WatchRequest) (stream.WatchFilter, Identity, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return stream.WatchFilter{}, id, err
	}
	f, err := s.watchFilterOf(ctx, id, req)
	return f, id, err
}

func (s *Server) watchFilterOf(ctx context.Context, id Identity, req *pb.WatchRequest) (stream.WatchFilter, error) {
	if s.async == nil {
		return stream.WatchFilter{}, errNoAsync("Watch")
	}
	a := fillScope(&pb.Address{Tenant: req.GetTenant(), Workspace: req.GetWorkspace(), ActorType: req.GetActorType(), EntityId: req.GetEntityId()}, id)
	for _, c := range [...]struct{ field, v string }{{"tenant", a.Tenant}, {"workspace", a.Workspace}} {
		if err := actor.ValidateID(c.field, c.v); err != nil {
			return stream.WatchFilter{}, invalid(err)
		}
	}
	if a.EntityID != "" && a.ActorType == "" {
		return stream.WatchFilter{}, status.Errorf(codes.InvalidArgument,
			"entity_id %q needs actor_type: an entity id is only unique within its actor type", a.EntityID)
	}
	if a.ActorType != "" {
		if err := actor.ValidateID("actor_type", a.ActorType); err != nil {
			return stream.WatchFilter{}, invalid(err)
		}
	}
	if a.EntityID != "" {
		if err := actor.ValidateID("entity_id", a.EntityID); err != nil {
			return stream.WatchFilter{}, invalid(err)
		}
	}
	if req.GetAfterSequence() > 0 && req.GetFromBeginning() {
		return stream.WatchFilter{}, status.Errorf(codes.InvalidArgument,
			"after_sequence %d and from_beginning contradict each other: resume after a sequence, or start with the oldest event kept, not both", req.GetAfterSequence())
	}
	if sec := id.Security(); !sec.Allows(a.Tenant, a.Workspace) {
		return stream.WatchFilter{}, s.watchDenied(ctx, id, a)
	}
	// The offenders' audit streams have no actor behind them (engine
	// AuditAddress); their violations are published like rejections.
	if a.ActorType != "" && !isAuditStream(a) {
		if _, err := s.lookup(a.ActorType, a.Tenant); err != nil {
			return stream.WatchFilter{}, err
		}
	}
	if et := req.GetEventType(); et != "" && !isAuditStream(a) {
		if err := checkEventType(et, a.ActorType); err != nil {
			return stream.WatchFilter{}, err
		}
	}
	return stream.WatchFilter{
		Tenant: a.Tenant, Workspace: a.Workspace, ActorType: a.ActorType, EntityID: a.EntityID,
		EventType: req.GetEventType(), After: req.GetAfterSequence(), FromBeginning: req.GetFromBeginning(),
		Rejections: req.GetIncludeRejections(),
	}, nil
}

// checkEventType refuses an event type that could never match, rather than
// letting the watch stay silent forever.
func checkEventType(et, actorType string) error {
	rest, ok := strings.CutPrefix(et, "evt.")
	at, name, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || at == "" || name == "" {
		return status.Errorf(codes.InvalidArgument,
			"event_type %q is not an event type; event types are evt.<actor_type>.<name>, e.g. evt.counter.added", et)
	}
	if actorType != "" && at != actorType {
		return status.Errorf(codes.InvalidArgument,
			"event_type %q is not an event of actor type %q, whose events are %s", et, actorType, actor.EventType(actorType, "<name>"))
	}
	return nil
}

// watchDenied refuses a watch outside the token's scopes. A watch of one
// entity is recorded in that entity's history like a refused Get; a watch of
// a whole tenant/workspace has no entity to record it on, so it is logged.
func (s *Server) watchDenied(ctx context.Context, id Identity, a actor.Address) error {
	if a.ActorType != "" && a.EntityID != "" {
		if _, err := s.lookup(a.ActorType, a.Tenant); err == nil {
			tp, ts := s.traceContext(ctx)
			cmdID := randomID()
			recorded := s.recordViolation(ctx, actor.Command{
				ID:             cmdID,
				Type:           actor.CommandType(a.ActorType, actor.ReadVerb),
				Address:        a,
				IdempotencyKey: "read-violation/" + cmdID,
				Security:       id.Security(),
				TraceParent:    tp,
				TraceState:     ts,
			}, s.backend.ShardOf(a))
			return scopeDenied(id, a, recorded)
		}
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "scope violation",
		slog.String("principal", id.Principal.ID), slog.String("principal_type", string(id.Principal.Type)),
		slog.String("call", "Watch"), slog.String("tenant", a.Tenant), slog.String("workspace", a.Workspace))
	return status.Errorf(codes.PermissionDenied,
		"principal %s (%s) may not watch tenant %q workspace %q; this token may use: %s (the attempt was logged)",
		id.Principal.ID, id.Principal.Type, a.Tenant, a.Workspace, allowedScopes(id))
}

// DefaultWatchRecheck is how often an open watch checks that its token still
// authenticates (Config.WatchRecheck overrides it).
const DefaultWatchRecheck = 5 * time.Second

// sendError marks an error of the transport's send, so that runWatch passes
// it on unchanged instead of reporting it as the events stream failing.
type sendError struct{ err error }

func (e sendError) Error() string { return e.err.Error() }
func (e sendError) Unwrap() error { return e.err }

// runWatch feeds the events of f to send until the caller goes, send fails,
// the node shuts down or the events stream fails. Every error but a send
// error is a status that tells the client how to resume.
func (s *Server) runWatch(ctx context.Context, f stream.WatchFilter, send func(*pb.WatchEvent) error) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// authErr is set, before cancel, when the token stops authenticating
	// (removed by a reload, or past its not_after): a stream that lasts
	// must not outlive its credential.
	var authErr atomic.Pointer[error]
	tok, _ := bearerToken(ctx)
	go func() {
		t := time.NewTicker(s.watchRecheck)
		defer t.Stop()
		for {
			select {
			case <-s.closing:
				cancel()
				return
			case <-wctx.Done():
				return
			case <-t.C:
				if _, err := s.auth.Authenticate(tok); err != nil {
					authErr.Store(&err)
					cancel()
					return
				}
			}
		}
	}()
	err := s.async.Watch(wctx, f, func(ev *pb.WatchEvent) error {
		if err := s.upcast(ev.GetEvent()); err != nil {
			return sendError{err}
		}
		if err := send(ev); err != nil {
			return sendError{err}
		}
		return nil
	})
	var se sendError
	switch {
	case errors.As(err, &se):
		return se.err
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case authErr.Load() != nil:
		return *authErr.Load()
	case wctx.Err() != nil:
		return status.Error(codes.Unavailable,
			"this node is shutting down; resume the watch on another node with after_sequence = the last sequence received")
	}
	if err == nil {
		err = errors.New("it ended")
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "watch ended", slog.String("tenant", f.Tenant),
		slog.String("workspace", f.Workspace), slog.Any("err", err))
	return status.Errorf(codes.Unavailable,
		"the events stream failed (%v); resume the watch with after_sequence = the last sequence received", err)
}
