package bench

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// OpKind is what one operation of a workload does.
type OpKind uint8

// Operation kinds.
const (
	// OpOCC reads the entity's version, then updates it conditionally on
	// that version: the read-modify-write every key-value store offers,
	// and the work the peer systems are measured on.
	OpOCC OpKind = iota
	// OpCommand sends one command that the target decides on the entity's
	// current state: one round trip, no conflicts.
	OpCommand
	// OpIngress publishes one command to a queue the target consumes
	// (Rhizon: its JetStream ingress) and completes when the command was
	// applied. Only targets that implement IngressTarget run it.
	OpIngress
	// OpSaga starts a multi-step flow across entities and completes when
	// the flow has finished. Only targets that implement SagaTarget run it.
	OpSaga
	// OpWasm sends one command to an actor the target runs as a
	// WebAssembly module deployed at run time (Rhizon: the example counter
	// of examples/wasm/counter): OpCommand's work through the WASM
	// runtime. Only targets that implement WasmTarget run it.
	OpWasm
)

func (k OpKind) String() string {
	switch k {
	case OpOCC:
		return "occ"
	case OpIngress:
		return "ingress"
	case OpSaga:
		return "saga"
	case OpWasm:
		return "wasm"
	}
	return "command"
}

// Workload is what the runner sends: which operation, on which entities,
// with which payload size.
type Workload struct {
	// Name is the workload's name in reports: w1-occ, w1-command, hot,
	// hot-occ, ingress, saga or wasm-counter.
	Name string
	// Op is the operation each step performs.
	Op OpKind
	// Entities is how many distinct entities the operations spread over
	// (saga: how many inventories and, as many, payment accounts the
	// orders, each a new entity, go through).
	Entities int
	// ZipfS > 1 picks entities from a Zipf distribution with this exponent
	// (entity 0 hottest); 0 picks them uniformly.
	ZipfS float64
	// PayloadBytes is the approximate size of each update's JSON document.
	PayloadBytes int
	// EntityPrefix starts every entity id, so that runs with different
	// prefixes do not share entities.
	EntityPrefix string
}

// Defaults of the workloads (issue 4: 10,000 entities, ~200-byte updates,
// Zipf s = 1.1 for the hot set).
const (
	DefaultEntities     = 10_000
	DefaultPayloadBytes = 200
	DefaultZipfS        = 1.1
	DefaultEntityPrefix = "bench-"
	// DefaultSagaEntities is the saga's default number of inventories (and
	// of payment accounts): a few per shard, so that orders meet on them as
	// a shop's orders meet on its warehouses.
	DefaultSagaEntities = 64
)

// WorkloadNames lists the workloads NewWorkload knows.
var WorkloadNames = []string{"w1-occ", "w1-command", "hot", "hot-occ", "ingress", "saga", "wasm-counter"}

// NewWorkload returns the named workload with the default payload size and
// prefix over the given number of entities (0: DefaultEntities, or
// DefaultSagaEntities for saga).
//
//   - w1-occ: read version + conditional update, uniform over the entities.
//   - w1-command: one command per operation, uniform.
//   - hot: one command per operation on Zipf(1.1)-distributed entities, so
//     a few entities take most of the load: it shows what per-entity
//     serialization costs (commands to one entity are decided one after
//     another), without the conflict storm an optimistic update would hit.
//   - hot-occ: w1-occ on the same Zipf(1.1) entities: that conflict storm,
//     for systems whose only conditional write is optimistic (the peers).
//   - ingress: one command per operation, published to the target's queue
//     (Rhizon: the entity's shard's JetStream ingress subject), done when
//     it was applied; uniform.
//   - saga: one order per operation (a new entity) through an inventory
//     and a payment account picked uniformly from Entities of each, done
//     when the order is completed: three cross-shard hops (Rhizon: through
//     the outbox relay and JetStream).
//   - wasm-counter: w1-command's counter increment, decided by the same
//     counter compiled to WebAssembly (examples/wasm/counter), deployed to
//     the target at setup: what the WASM runtime costs end to end; uniform.
func NewWorkload(name string, entities int) (Workload, error) {
	if entities == 0 {
		entities = DefaultEntities
		if name == "saga" {
			entities = DefaultSagaEntities
		}
	}
	w := Workload{Name: name, Entities: entities, PayloadBytes: DefaultPayloadBytes, EntityPrefix: DefaultEntityPrefix}
	switch name {
	case "w1-occ":
		w.Op = OpOCC
	case "w1-command":
		w.Op = OpCommand
	case "hot":
		w.Op, w.ZipfS = OpCommand, DefaultZipfS
	case "hot-occ":
		w.Op, w.ZipfS = OpOCC, DefaultZipfS
	case "ingress":
		w.Op = OpIngress
	case "saga":
		w.Op = OpSaga
	case "wasm-counter":
		w.Op = OpWasm
	default:
		return Workload{}, fmt.Errorf("bench: unknown workload %q (known: %s)", name, strings.Join(WorkloadNames, ", "))
	}
	return w, w.Validate()
}

// Validate checks the workload's parameters.
func (w Workload) Validate() error {
	switch {
	case w.Entities < 1:
		return fmt.Errorf("bench: workload %s: entities must be >= 1, got %d", w.Name, w.Entities)
	case w.ZipfS != 0 && w.ZipfS <= 1:
		// math/rand/v2's Zipf needs s > 1.
		return fmt.Errorf("bench: workload %s: zipf exponent must be > 1, got %g", w.Name, w.ZipfS)
	case w.PayloadBytes < 0 || w.PayloadBytes > 512<<10:
		return fmt.Errorf("bench: workload %s: payload of %d bytes out of range", w.Name, w.PayloadBytes)
	}
	return nil
}

// Entity returns the id of entity i (0 <= i < Entities).
func (w Workload) Entity(i int) string { return w.EntityPrefix + strconv.Itoa(i) }

// SagaInventory and SagaPayment return the ids of the saga's inventory and
// payment account i (0 <= i < Entities).
func (w Workload) SagaInventory(i int) string { return w.EntityPrefix + "inv-" + strconv.Itoa(i) }

// SagaPayment: see SagaInventory.
func (w Workload) SagaPayment(i int) string { return w.EntityPrefix + "pay-" + strconv.Itoa(i) }

// picker chooses the entity of each operation. One per goroutine: the
// sources of math/rand/v2 are not safe for concurrent use, and sharing one
// behind a lock would serialize the workers.
type picker func() int

func (w Workload) newPicker(seed1, seed2 uint64) picker {
	r := rand.New(rand.NewPCG(seed1, seed2))
	if w.ZipfS > 1 && w.Entities > 1 {
		z := rand.NewZipf(r, w.ZipfS, 1, uint64(w.Entities-1))
		return func() int { return int(z.Uint64()) }
	}
	n := w.Entities
	return func() int { return r.IntN(n) }
}

// Payload returns the JSON document of update seq: an object of about
// PayloadBytes bytes that differs from one update to the next, so that
// every update really changes the document.
func (w Workload) Payload(seq uint64) []byte {
	b := make([]byte, 0, w.PayloadBytes+32)
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"pad":"`...)
	for len(b) < w.PayloadBytes-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}
