// The wasm-counter workload on Rhizon. (Not rhizon_wasm.go: Go builds a
// file named *_wasm.go for GOARCH=wasm only.)

package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// DefaultWasmType is the actor type the wasm-counter workload deploys the
// example counter as (RhizonConfig.WasmType).
const DefaultWasmType = "wcounter"

// wasmReadyTimeout bounds each step of the wasm-counter setup that waits
// for the cluster: activation (refused until every node holding replicas
// has loaded the module) and the first command (its shard's leader must
// have applied the activation).
const wasmReadyTimeout = time.Minute

var _ WasmTarget = (*Rhizon)(nil)

// WasmRevision is the revision the wasm-counter setup deploys module as:
// named by its content, so that setting up again with the same module
// deploys nothing new, and another build of it is another revision
// instead of an ALREADY_EXISTS under a fixed one.
func WasmRevision(module []byte) string {
	sum := sha256.Sum256(module)
	return "sha-" + hex.EncodeToString(sum[:6])
}

// setupWasm deploys cfg.WasmModule as revision WasmRevision of
// cfg.WasmType unless the cluster has it (a deploy of the same module as
// the same revision changes nothing), activates that revision unless it is
// active, and sends one command end to end. The token must be allowed to
// deploy: an admin token, or a tenant's, whose type it then is.
func (t *Rhizon) setupWasm(ctx context.Context, w Workload) error {
	if len(t.cfg.WasmModule) == 0 {
		return errors.New("bench: wasm-counter needs the example counter module: build it with `make wasm-examples` " +
			"(bin/counter.wasm) and pass --wasm-module bin/counter.wasm")
	}
	typ, rev := t.cfg.WasmType, WasmRevision(t.cfg.WasmModule)
	c := t.client()
	_, err := c.DeployActor(ctx, &pb.DeployActorRequest{ActorType: typ, Revision: rev, Module: t.cfg.WasmModule})
	if err != nil {
		return fmt.Errorf("bench: deploy the wasm counter as %s revision %s: %w", typ, rev, err)
	}
	actx, cancel := context.WithTimeout(ctx, wasmReadyTimeout)
	defer cancel()
	// Activation is refused (FAILED_PRECONDITION) while a node holding
	// replicas has not loaded the revision yet; deploy waits for them only
	// so long.
	for {
		_, err = c.ActivateRevision(actx, &pb.ActivateRevisionRequest{ActorType: typ, Revision: rev})
		if err == nil || status.Code(err) != codes.FailedPrecondition || !sleepCtx(actx, 200*time.Millisecond) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("bench: activate %s revision %s: %w", typ, rev, err)
	}
	// The gateway answers NOT_FOUND ("deployed but not active") until the
	// node that decides the command has applied the activation.
	probe := w.EntityPrefix + "wasm-probe"
	for {
		var out Outcome
		out, err = t.WasmCommand(actx, probe)
		switch {
		case err == nil && out == OK:
			return nil
		case err == nil:
			return fmt.Errorf("bench: the wasm counter %s/%s rejected an increment: %v", typ, probe, out)
		}
		var oe *OpError
		if !errors.As(err, &oe) || status.Code(oe.Err) != codes.NotFound || !sleepCtx(actx, 200*time.Millisecond) {
			return fmt.Errorf("bench: first increment of the wasm counter %s/%s: %w", typ, probe, err)
		}
	}
}

// WasmCommand sends cmd.<type>.add {"amount":1} to the deployed WASM
// counter <type>/<entity>: w1-command's counter command, decided by the
// module.
func (t *Rhizon) WasmCommand(ctx context.Context, entity string) (Outcome, error) {
	return t.submit(ctx, t.cfg.WasmType, t.wasmCmd, entity, []byte(`{"amount":1}`), nil)
}

// sleepCtx waits d, or less if ctx ends first; it tells whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}
