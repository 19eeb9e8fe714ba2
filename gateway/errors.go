package gateway

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/api/outcome"
)

// The machine-readable side of the gateway's errors. A retrying client must
// tell "the command was not applied" from "it may have been applied", and a
// message is no contract; so every write error that matters for retries
// carries an errdetails.ErrorInfo with ErrorDomain and one of these reasons,
// and an unknown outcome also sets the trailer OutcomeTrailer: OutcomeUnknown.
//
// The values are api/outcome's, whose Table says which gRPC code and reason
// each write error gets; these names keep the gateway's API.
const (
	ErrorDomain = outcome.Domain

	// ReasonOutcomeUnknown: the command was proposed and may or may not have
	// been applied. Retry with the same idempotency key and command id.
	ReasonOutcomeUnknown = outcome.ReasonOutcomeUnknown
	// ReasonNotApplied: the command was definitely not applied (no leader,
	// shard closing). Retrying is safe.
	ReasonNotApplied = outcome.ReasonNotApplied
	// ReasonOverloaded: the shard's proposer queue was full; the command was
	// not applied. Retry after a backoff.
	ReasonOverloaded = outcome.ReasonOverloaded

	// OutcomeTrailer is the gRPC trailer (and HTTP header) that marks an
	// unknown outcome, for clients that read metadata rather than details.
	OutcomeTrailer = outcome.Trailer
	// OutcomeUnknown is the value of OutcomeTrailer.
	OutcomeUnknown = "unknown"
	// OutcomeUnknownPrefix starts the message of every unknown-outcome error.
	OutcomeUnknownPrefix = outcome.UnknownPrefix
)

// statusWithInfo returns a status carrying an ErrorInfo detail.
func statusWithInfo(code codes.Code, reason string, meta map[string]string, msg string) error {
	st := status.New(code, msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: meta}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// submitError maps a Backend.Submit error. Only the shard sentinels that are
// documented as "before proposing" mean not-applied; anything else, including
// the context ending while the backend waited, may have been committed, so it
// is reported as an unknown outcome: claiming "not applied" wrongly would
// invite a retry without the idempotency key.
func submitError(ctx context.Context, err error, shardID uint32, key, cmdID string) error {
	meta := map[string]string{"shard": fmt.Sprint(shardID), "idempotency_key": key, "command_id": cmdID}
	e := outcome.Of(err)
	if msg, ok := notAppliedMessages[e.Code]; ok {
		return statusWithInfo(codes.Code(e.GRPC), e.Reason, meta, fmt.Sprintf(msg, shardID))
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown && !errors.Is(err, outcome.ErrUnknownOutcome) {
		// A status from a forwarding hop already says what happened.
		return st.Err()
	}
	return unknownOutcome(ctx, meta, unknownMessage(err, shardID, key))
}

// notAppliedMessages say, per outcome code, why shard %d did not apply it.
var notAppliedMessages = map[string]string{
	outcome.CodeHalted:     "shard %d has halted (a store failure, or its state diverged from the leader's) and needs an operator; the command was not applied",
	outcome.CodeOverloaded: "shard %d is overloaded (proposer queue full); the command was NOT applied and may be retried after a backoff",
	outcome.CodeNotLeader:  "shard %d has no leader this node can reach right now; the command was NOT applied and may be retried",
	outcome.CodeClosed:     "shard %d is shutting down on this node; the command was NOT applied and may be retried",
}

func unknownMessage(err error, shardID uint32, key string) string {
	if errors.Is(err, outcome.ErrUnknownOutcome) {
		return fmt.Sprintf("%s the command reached shard %d but leadership changed or the wait timed out before its result; retry with the same idempotency_key %q to get the result", OutcomeUnknownPrefix, shardID, key)
	}
	return fmt.Sprintf("%s %v; retry with the same idempotency_key %q to get the result", OutcomeUnknownPrefix, err, key)
}

func unknownOutcome(ctx context.Context, meta map[string]string, msg string) error {
	// SetTrailer fails outside a gRPC handler (the HTTP path); the HTTP
	// handler sets its own header from the ErrorInfo instead.
	_ = grpc.SetTrailer(ctx, metadata.Pairs(OutcomeTrailer, OutcomeUnknown))
	return statusWithInfo(codes.Unavailable, ReasonOutcomeUnknown, meta, msg)
}

// readError maps a Backend error on the read path (Get, History, Status).
// Reads change nothing, so every retryable failure is simply Unavailable.
// where names what was read ("shard 3", "this node") and what the call.
func readError(err error, where, what string) error {
	switch {
	case errors.Is(err, outcome.ErrHalted):
		return status.Errorf(codes.Internal, "%s has halted (a store failure, or its state diverged from the leader's) and needs an operator", where)
	case errors.Is(err, outcome.ErrOverloaded):
		return statusWithInfo(codes.ResourceExhausted, ReasonOverloaded, nil, fmt.Sprintf("%s is overloaded; retry %s after a backoff", where, what))
	case errors.Is(err, outcome.ErrNotLeader), errors.Is(err, outcome.ErrUnknownOutcome):
		return status.Errorf(codes.Unavailable, "%s has no leader this node can reach right now; retry %s, or ask for stale consistency", where, what)
	case errors.Is(err, outcome.ErrClosed):
		return status.Errorf(codes.Unavailable, "%s is shutting down on this node; retry %s", where, what)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s of %s did not finish before the deadline", what, where)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s was canceled", what)
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return st.Err()
	}
	return status.Errorf(codes.Internal, "%s of %s failed: %v", what, where, err)
}
