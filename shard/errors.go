package shard

// The shard has its own type named outcome (a proposal's), hence the name.
import wo "github.com/rhizon/rhizon/api/outcome"

// Every write returns one of three outcomes: a committed Result, an error that
// says the command was definitely not applied, or ErrUnknownOutcome. Callers
// retry an unknown outcome with the same idempotency key. The sentinels are
// declared in api/outcome, so that the gateway and clients can test for them
// without linking the shard; these names keep shard's API.
var (
	// ErrNotLeader is returned before proposing when this replica is not the
	// shard's leader. The command was not applied.
	ErrNotLeader = wo.ErrNotLeader
	// ErrUnknownOutcome is returned when a proposal may or may not have been
	// committed: leadership was lost after proposing, or the wait timed out.
	ErrUnknownOutcome = wo.ErrUnknownOutcome
	// ErrOverloaded is returned before proposing when the proposer queue is
	// full. The command was not applied.
	ErrOverloaded = wo.ErrOverloaded
	// ErrClosed is returned when the shard is shutting down. A command that
	// was already proposed gets ErrUnknownOutcome instead.
	ErrClosed = wo.ErrClosed
	// ErrHalted is returned after the state store failed; the replica stops
	// applying rather than diverge.
	ErrHalted = wo.ErrHalted
)
