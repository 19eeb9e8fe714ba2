// Package actor is Rhizon's programming model: the types an actor sees
// (Command, Event, Result, Context) and the Decide/Evolve behaviour an actor
// implements.
//
// An actor is a pure function pair:
//
//	Decide(ctx, state, cmd) -> events, or a rejection
//	Evolve(state, event)    -> state
//
// Decide must be deterministic: it may only use its arguments. Time and
// randomness come from the Context (derived from the Raft log entry), never
// from the wall clock or a global generator, so every replica that applies the
// same log reaches byte-identical state. Evolve must not fail on an event that
// Decide produced: events are facts.
//
// This package imports no clock, network, goroutines or global randomness;
// a test in the engine package enforces that.
package actor
