// Package outcome is the vocabulary of write outcomes shared by the shard,
// the public gateway, the node-to-node service and the Go client: the
// sentinel errors a write can end with, and one table that says, for every
// code, which gRPC code carries it, which ErrorInfo reason, and whether the
// command was applied. It imports only the standard library and actor, so anything that speaks to a node can use it without
// linking a store, Raft or NATS.
package outcome

import (
	"context"
	"errors"

	"github.com/rhizon/rhizon/actor"
)

// GRPCCode is a gRPC status code by its number (google.golang.org/grpc/codes;
// convert with codes.Code(c)). It is declared here so that the shard, which
// shares the sentinels, links no gRPC.
type GRPCCode uint32

// The gRPC codes the table uses (outcome_test checks them against grpc's).
const (
	GRPCOK                GRPCCode = 0
	GRPCInvalidArgument   GRPCCode = 3
	GRPCPermissionDenied  GRPCCode = 7
	GRPCResourceExhausted GRPCCode = 8
	GRPCInternal          GRPCCode = 13
	GRPCUnavailable       GRPCCode = 14
)

// Every write returns one of three outcomes: a committed Result, an error that
// says the command was definitely not applied, or ErrUnknownOutcome. Callers
// retry an unknown outcome with the same idempotency key. (The messages keep
// their "shard:" prefix: they were shard's sentinels first.)
var (
	// ErrNotLeader is returned before proposing when this replica is not the
	// shard's leader. The command was not applied.
	ErrNotLeader = errors.New("shard: not the leader")
	// ErrUnknownOutcome is returned when a proposal may or may not have been
	// committed: leadership was lost after proposing, or the wait timed out.
	ErrUnknownOutcome = errors.New("shard: outcome unknown; retry with the same idempotency key")
	// ErrOverloaded is returned before proposing when the proposer queue is
	// full. The command was not applied.
	ErrOverloaded = errors.New("shard: proposer queue full")
	// ErrClosed is returned when the shard is shutting down. A command that
	// was already proposed gets ErrUnknownOutcome instead.
	ErrClosed = errors.New("shard: closed")
	// ErrHalted is returned after the state store failed; the replica stops
	// applying rather than diverge.
	ErrHalted = errors.New("shard: halted (store failure or divergence)")
)

// Applied says what a caller may assume about a command after a code.
type Applied int

// The three answers.
const (
	// Unknown: the command may or may not have been applied; retry with the
	// same idempotency key (and command id) to learn which.
	Unknown Applied = iota
	// NotApplied: the command was definitely not applied; retrying is safe.
	NotApplied
	// AppliedYes: the command was decided and its Result recorded (accepted,
	// or rejected by a rule that every replica applied the same way).
	AppliedYes
)

// String is the value of the Trailer for a. Only Unknown and NotApplied are
// ever sent.
func (a Applied) String() string {
	switch a {
	case NotApplied:
		return "not_applied"
	case AppliedYes:
		return "applied"
	}
	return "unknown"
}

// The error dialect shared by the public and the internal API. A write error
// carries an errdetails.ErrorInfo {Domain, Reason} and the trailer Trailer
// whose value is Applied.String() of its code: "unknown" or "not_applied".
// The trailer has that one meaning everywhere; a failed call without it
// (a transport failure) must be read as Unknown.
const (
	Domain  = "rhizon.v1"
	Trailer = "rhizon-outcome"
	// UnknownPrefix starts the message of every unknown-outcome error, for
	// clients that read neither details nor trailers.
	UnknownPrefix = "outcome unknown:"
)

// ErrorInfo reasons.
const (
	ReasonOutcomeUnknown = "OUTCOME_UNKNOWN"
	ReasonNotApplied     = "NOT_APPLIED"
	ReasonOverloaded     = "OVERLOADED"
	ReasonRateLimited    = "RATE_LIMITED"
	ReasonQuotaExceeded  = "QUOTA_EXCEEDED"
	ReasonHalted         = "HALTED"
)

// Codes of write errors (the sentinels), beside the result codes of actor.
const (
	CodeNotLeader      = "not_leader"
	CodeOutcomeUnknown = "outcome_unknown"
	CodeOverloaded     = "overloaded"
	CodeClosed         = "closed"
	CodeHalted         = "halted"
	CodeCanceled       = "canceled"
	CodeRateLimited    = "rate_limited"
	CodeQuotaExceeded  = "quota_exceeded"
)

// Entry is one row of the table.
type Entry struct {
	Code    string   // a sentinel's code or a Result.code
	GRPC    GRPCCode // how the gateway answers it (OK: in the Result)
	Reason  string   // the ErrorInfo reason; none for a decided command
	Applied Applied
	Doc     string // one line for the README and the proto
}

// Table is every code a write can end with, declared once. The gateway and
// the node-to-node service answer from it; the README's table is checked
// against it by a test.
var Table = []Entry{
	{CodeNotLeader, GRPCUnavailable, ReasonNotApplied, NotApplied, "no reachable leader for the shard"},
	{CodeClosed, GRPCUnavailable, ReasonNotApplied, NotApplied, "the shard is shutting down on this node"},
	{CodeCanceled, GRPCUnavailable, ReasonNotApplied, NotApplied, "the caller gave up before the command was proposed"},
	{CodeOverloaded, GRPCResourceExhausted, ReasonOverloaded, NotApplied, "the proposer queue was full; retry after a backoff"},
	{CodeRateLimited, GRPCResourceExhausted, ReasonRateLimited, NotApplied, "the tenant or principal is over its request rate; retry after rhizon-retry-after"},
	{CodeQuotaExceeded, GRPCResourceExhausted, ReasonQuotaExceeded, NotApplied, "the tenant is over its storage quota"},
	{CodeHalted, GRPCInternal, ReasonHalted, NotApplied, "the shard halted after a store failure or a divergence; an operator must act"},
	{CodeOutcomeUnknown, GRPCUnavailable, ReasonOutcomeUnknown, Unknown, "proposed, then leadership changed or the wait ended; retry with the same idempotency key"},
	{actor.CodeViolation, GRPCPermissionDenied, "", AppliedYes, "scope or principal check failed; the attempt is audited"},
	{actor.CodeInvalid, GRPCInvalidArgument, "", AppliedYes, "malformed for this actor"},
	{actor.CodeVersionConflict, GRPCOK, "", AppliedYes, "expected_version did not match"},
	{actor.CodeError, GRPCOK, "", AppliedYes, "Decide returned a plain error"},
	{actor.CodeActorPanic, GRPCOK, "", AppliedYes, "Decide panicked"},
	{actor.CodeEvolveFailed, GRPCOK, "", AppliedYes, "Evolve refused an event Decide produced"},
	{actor.CodeStateDecode, GRPCOK, "", AppliedYes, "the stored state does not decode"},
	{actor.CodeTooManyEvents, GRPCOK, "", AppliedYes, "Decide emitted more events than allowed"},
	{actor.CodeBadEvent, GRPCOK, "", AppliedYes, "an event name is not a valid id"},
	{actor.CodeTooManySends, GRPCOK, "", AppliedYes, "Decide sent more commands than allowed"},
	{actor.CodeBadSend, GRPCOK, "", AppliedYes, "a send's target, type or payload is wrong"},
	{actor.CodeTooManyTimers, GRPCOK, "", AppliedYes, "Decide set more timers than allowed"},
	{actor.CodeBadTimer, GRPCOK, "", AppliedYes, "a timer name is not a valid id"},
	{actor.CodeBudgetExceeded, GRPCOK, "", AppliedYes, "a WebAssembly actor ran out of fuel or memory"},
	{actor.CodeTrap, GRPCOK, "", AppliedYes, "a WebAssembly actor trapped"},
}

// Lookup returns code's entry. A code not in the table is an actor's own
// business rejection: a Result with gRPC OK, applied.
func Lookup(code string) Entry {
	for _, e := range Table {
		if e.Code == code {
			return e
		}
	}
	return Entry{Code: code, GRPC: GRPCOK, Applied: AppliedYes, Doc: "an actor's business rejection"}
}

// OfReason is what an ErrorInfo reason says about the command: NotApplied
// only when every code with that reason is NotApplied. known is false for a
// reason this version does not declare (callers should then assume Unknown).
func OfReason(reason string) (a Applied, known bool) {
	if reason == "" {
		return Unknown, false
	}
	a = NotApplied
	for _, e := range Table {
		if e.Reason != reason {
			continue
		}
		known = true
		if e.Applied != NotApplied {
			a = e.Applied
		}
	}
	if !known {
		return Unknown, false
	}
	return a, true
}

// Of returns the entry of a write error: a sentinel (possibly wrapped), or
// the caller's context ending. Anything else, including a deadline while
// waiting, may have been committed and is Unknown: claiming "not applied"
// wrongly would invite a retry without the idempotency key.
func Of(err error) Entry {
	switch {
	case errors.Is(err, ErrHalted):
		return Lookup(CodeHalted)
	case errors.Is(err, ErrUnknownOutcome):
		return Lookup(CodeOutcomeUnknown)
	case errors.Is(err, ErrOverloaded):
		return Lookup(CodeOverloaded)
	case errors.Is(err, ErrNotLeader):
		return Lookup(CodeNotLeader)
	case errors.Is(err, ErrClosed):
		return Lookup(CodeClosed)
	}
	return Lookup(CodeOutcomeUnknown)
}

// Sentinel returns the sentinel an entry stands for, for a node that receives
// the entry from a peer; nil for result codes and for canceled (which has no
// sentinel: the caller's own context ended).
func (e Entry) Sentinel() error {
	switch e.Code {
	case CodeNotLeader:
		return ErrNotLeader
	case CodeOutcomeUnknown:
		return ErrUnknownOutcome
	case CodeOverloaded:
		return ErrOverloaded
	case CodeClosed:
		return ErrClosed
	case CodeHalted:
		return ErrHalted
	case CodeCanceled:
		return context.Canceled
	}
	return nil
}
