package actor

// Result codes: the Code of a rejected Result. The values are hashed into
// every replica's state and returned to clients, so they never change; add
// new codes, do not rename. api/outcome maps each to its gRPC code and says
// whether the command was applied; the README's table is checked against it.
const (
	// Rejections decided by the engine for every actor type.
	CodeVersionConflict = "version_conflict"      // expected_version did not match
	CodeViolation       = "violation"             // scope or principal check failed; the attempt is audited
	CodeInvalid         = "invalid"               // malformed for this actor (Invalid)
	CodeError           = "error"                 // Decide returned a plain error, not a *Rejection
	CodeActorPanic      = "actor_panic"           // Decide panicked
	CodeEvolveFailed    = "evolve_failed"         // Evolve refused an event Decide produced
	CodeStateDecode     = "state_decode"          // the stored state does not decode
	CodeTooManyEvents   = "too_many_events"       // over MaxEventsPerCommand
	CodeBadEvent        = "bad_event"             // an event name is not a valid id
	CodeTooManySends    = "too_many_sends"        // over MaxSendsPerCommand
	CodeBadSend         = "bad_send"              // a send's target, type or payload is wrong
	CodeTooManyTimers   = "too_many_timers"       // over MaxTimersPerCommand
	CodeBadTimer        = "bad_timer"             // a timer name is not a valid id
	CodeBudgetExceeded  = "actor_budget_exceeded" // a WebAssembly actor ran out of fuel or memory
	CodeTrap            = "actor_trap"            // a WebAssembly actor trapped (or its module exited)

	// Business rejections of the built-in actors (actor/builtin).
	CodeAlreadyOpen       = "already_open"
	CodeNotOpen           = "not_open"
	CodeInsufficientFunds = "insufficient_funds"
	CodeOverflow          = "overflow"
	CodeHeld              = "held"
	CodeNotHolder         = "not_holder"
	CodeHoldMismatch      = "hold_mismatch"
	CodeNoHold            = "no_hold"
	CodeNotFound          = "not_found"
	CodeExists            = "exists"
	CodeTooLarge          = "too_large"
	CodeAlreadyPlaced     = "already_placed"
	CodeNotPlaced         = "not_placed"
	CodeWrongStatus       = "wrong_status"
	CodeForgedReply       = "forged_reply"
	CodeUnexpectedReply   = "unexpected_reply"
)
