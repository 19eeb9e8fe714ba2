// Package builtin holds Rhizon's built-in actor types, usable with no Go code
// from users:
//
//   - counter: an int64 counter (verb add).
//   - account: a single-currency balance in minor units (open, deposit, withdraw).
//   - kv: a JSON document (create, update, patch with RFC 7396, delete, get).
//   - lock: a lease lock with fencing tokens (acquire, release, refresh, and the
//     engine's timer verb).
//   - order, inventory, payment: an example saga whose actors drive each other
//     with ctx.Send, compensating a declined payment (see saga.go).
//
// Every type is built with actor.Define, so its state is a JSON-encoded struct.
// Decide uses only its arguments (the state, the command and the Context), never
// the clock, global randomness, goroutines or map iteration, so replicas that
// apply the same log reach byte-identical state.
//
// Command payloads are JSON objects. Unknown fields are refused, and every
// Invalid rejection says which field is wrong and what it must be.
package builtin

import "github.com/rhizon/rhizon/actor"

// Revision is the code version of every built-in type (actor.Versioned).
// Revision 2: a delete of a missing kv document and a release of a free lock
// are accepted with no event (1 rejected them), and a lock's ttl_ms defaults
// to DefaultLockTTL. Replicas running different revisions decide such
// commands differently, so a cluster must not mix them.
const Revision = "2"

// All returns the built-in behaviours, sorted by type name.
func All() []actor.Behavior {
	return []actor.Behavior{Account(), Counter(), Inventory(), KV(), Lock(), Order(), Payment()}
}

// Registry returns a registry holding All. It panics if registration fails,
// which can only happen if the static definitions above are broken.
func Registry() *actor.Registry {
	r, err := actor.NewRegistry(All()...)
	if err != nil {
		panic("builtin: " + err.Error())
	}
	return r
}

// unknownVerb is the rejection for a verb the type does not have. verbs must
// be sorted (it matches Behavior.Verbs).
func unknownVerb(actorType string, cmd *actor.Command, verbs []string) error {
	return actor.Invalid("actor type %q has no verb %q; verbs: %v", actorType, cmd.Verb(), verbs)
}
