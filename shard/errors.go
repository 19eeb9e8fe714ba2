package shard

import "errors"

// Every write returns one of three outcomes: a committed Result, an error that
// says the command was definitely not applied, or ErrUnknownOutcome. Callers
// retry an unknown outcome with the same idempotency key.
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
	ErrHalted = errors.New("shard: halted after a store failure")
)
