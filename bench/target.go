// Package bench is Rhizon's load generator: the same workloads, run against
// Rhizon and against the systems users would pick instead (etcd, JetStream
// KV), measured the same way in one run on one machine.
//
// A Target adapts one system to the few operations the workloads need; the
// runner drives a Target in a closed loop (C workers, each sending its next
// operation when the previous one returns) or an open loop (a fixed rate,
// latency measured from each operation's intended send time so that a
// stalled server shows up as queueing delay instead of as fewer samples:
// the "coordinated omission" a closed loop suffers from). Latencies go into
// a log-linear Histogram; a Result carries percentiles, throughput, outcomes
// and errors by kind, and renders as a table, JSON and SVG plots.
package bench

import (
	"context"
	"errors"
	"fmt"
)

// Target is one system under test. The runner calls the operation methods
// from many goroutines at once; Setup and Close are called alone.
//
// The operations are the smallest set the workloads need, so that a peer
// driver (etcd: Get + Txn on ModRevision; JetStream KV: Get + Update on the
// revision) is a few lines and every system does the same work.
type Target interface {
	// Name labels the target in reports ("rhizon", "etcd", ...).
	Name() string
	// Setup prepares the target for w, e.g. creates w's entities when a
	// conditional update needs them to exist. It may be called once for
	// several runs of the same workload and must be safe to repeat against
	// the same server.
	Setup(ctx context.Context, w Workload) error
	// ReadVersion returns the entity's current version (revision), as the
	// expected value of a following ConditionalUpdate.
	ReadVersion(ctx context.Context, entity string) (uint64, error)
	// ConditionalUpdate replaces the entity's document with payload (a JSON
	// object) if the entity is still at version expected; otherwise the
	// outcome is Conflict. The payload must not be retained after return.
	ConditionalUpdate(ctx context.Context, entity string, expected uint64, payload []byte) (Outcome, error)
	// Command sends one command that the target decides on its own state
	// (Rhizon's actor-native form); a target without commands stores
	// payload unconditionally. The payload must not be retained.
	Command(ctx context.Context, entity string, payload []byte) (Outcome, error)
	// Close releases the target's connections.
	Close() error
}

// Outcome is the answer to an operation that reached a decision. Conflicts
// and rejections are answers, not errors: under contention a conflict is
// the correct result of an optimistic update, and is counted apart.
type Outcome uint8

// Outcomes.
const (
	// OK: the operation took effect.
	OK Outcome = iota
	// Conflict: the expected version did not match.
	Conflict
	// Rejected: refused for any other reason (business rule, invalid, ...).
	Rejected
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Conflict:
		return "conflict"
	case Rejected:
		return "rejected"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// ErrorKind classifies a failed operation. The kinds separate what an
// operator acts on differently: an overloaded or leaderless cluster
// (Unavailable), a slow one (Timeout), a write that may or may not have
// been applied (UnknownOutcome: a correctness-relevant event for a
// benchmark of a system that claims exactly-once), and bugs (Other).
type ErrorKind uint8

// Error kinds.
const (
	KindOther ErrorKind = iota
	KindTimeout
	KindUnavailable
	KindUnknownOutcome
	numKinds
)

// ErrorKinds lists every kind, in report order.
var ErrorKinds = []ErrorKind{KindTimeout, KindUnavailable, KindUnknownOutcome, KindOther}

func (k ErrorKind) String() string {
	switch k {
	case KindTimeout:
		return "timeout"
	case KindUnavailable:
		return "unavailable"
	case KindUnknownOutcome:
		return "unknown-outcome"
	case KindOther:
		return "other"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// OpError is an operation's error with its kind, as a Target classifies it:
// only the target knows what its client library's errors mean.
type OpError struct {
	Kind ErrorKind
	Err  error
}

func (e *OpError) Error() string { return e.Kind.String() + ": " + e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// KindOf returns the kind of an operation's error: the Kind of an OpError
// in its chain, Timeout for an expired deadline, Other for anything else.
func KindOf(err error) ErrorKind {
	var oe *OpError
	switch {
	case errors.As(err, &oe):
		return oe.Kind
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	}
	return KindOther
}
