package bench

import (
	"context"
	"fmt"
	"time"
)

// IngressTarget is a Target that takes commands through a queue it
// consumes itself (Rhizon: a JetStream subject per shard). Ingress
// publishes one command to entity and returns once the target applied it,
// so its latency runs from the publish to the command's effect.
type IngressTarget interface {
	Target
	Ingress(ctx context.Context, entity string) (Outcome, error)
}

// SagaTarget is a Target that runs a flow across entities on its own
// (Rhizon: order -> inventory -> payment -> order, each hop a Send through
// the outbox relay and JetStream). Saga starts one flow through the given
// inventory and payment account, set up by Setup, and returns once it has
// finished: OK when it completed, Rejected when it failed or was
// compensated.
type SagaTarget interface {
	Target
	Saga(ctx context.Context, inventory, payment string) (Outcome, error)
}

// WasmTarget is a Target that runs user code deployed at run time as
// WebAssembly (Rhizon: an actor type deployed through the control log).
// Its Setup deploys and activates the module when the target does not
// run it yet; WasmCommand then sends one command to entity's actor.
type WasmTarget interface {
	Target
	WasmCommand(ctx context.Context, entity string) (Outcome, error)
}

// Unsupported returns why t cannot run w, or "" when it can: ingress needs
// an IngressTarget, saga a SagaTarget and wasm-counter a WasmTarget. The
// peers have none (no server-side commands to queue, no actors to chain,
// no user code).
func Unsupported(t Target, w Workload) string {
	_, queue := t.(IngressTarget)
	_, actors := t.(SagaTarget)
	_, wasm := t.(WasmTarget)
	return notApplicable(t.Name(), w, queue, actors, wasm)
}

// PeerUnsupported is Unsupported for the peer target named kind, without
// starting its servers: no peer runs ingress, saga or wasm-counter, and
// the no-direct variant runs only w1-occ, the one workload that reads.
func PeerUnsupported(kind string, w Workload) string {
	return notApplicable(kind, w, false, false, false)
}

func notApplicable(name string, w Workload, queue, actors, wasm bool) string {
	switch {
	case name == JetStreamKVSyncNoDirect && w.Op != OpOCC:
		return "not run: the same as jetstream-kv-sync (only w1-occ reads, and reads are all that differ)"
	case w.Op == OpIngress && !queue:
		return fmt.Sprintf("not applicable: %s has no command queue of its own to consume (ingress runs on rhizon only)", name)
	case w.Op == OpSaga && !actors:
		return fmt.Sprintf("not applicable: %s has no actors to chain (saga runs on rhizon only)", name)
	case w.Op == OpWasm && !wasm:
		return fmt.Sprintf("not applicable: %s has no user code to run (wasm-counter runs on rhizon only)", name)
	}
	return ""
}

// SkippedResult is the result of a run that did not happen because the
// target cannot run the workload: it keeps the row in the tables and the
// JSON, saying why, so that a comparison shows the gap instead of hiding it.
func SkippedResult(target string, cfg Config, why string) *Result {
	r := notRunResult(target, cfg)
	r.Skipped = why
	return r
}

// SetupFailedResult is the result of a run that did not happen because the
// workload's setup failed on the target.
func SetupFailedResult(target string, cfg Config, err error) *Result {
	r := notRunResult(target, cfg)
	r.SetupError = err.Error()
	return r
}

func notRunResult(target string, cfg Config) *Result {
	w := cfg.Workload
	return &Result{
		Workload: w.Name, Target: target, Mode: cfg.Mode(), Concurrency: cfg.Concurrency, Rate: cfg.Rate,
		Entities: w.Entities, ZipfS: w.ZipfS, PayloadBytes: w.PayloadBytes, Start: time.Now().UTC(),
		Errors: map[string]uint64{}, Machine: ThisMachine(),
	}
}
