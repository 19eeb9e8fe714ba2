package wasm

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rhizon/rhizon/actor"
)

// upcastExport is the optional export that makes a module an
// actor.Upcaster: rhizon_upcast(type_len, payload_len, schema_version) ->
// result, the event's type and payload laid out in the input buffer one
// after the other. The module answers with the host call upcasted (result
// 0), a rejection (1: the upcast failed), or result 2: it has no upcaster
// (an SDK module that registered none), after which the host stops asking.
const upcastExport = "rhizon_upcast"

// Results of rhizon_upcast.
const (
	upcastOK       = 0
	upcastRejected = 1
	upcastNone     = 2
)

var _ actor.Upcaster = (*Behavior)(nil)

// upcaster is a Behavior's instance for Upcast, apart from the shards' (an
// upcast is a read: History and Watch call it on gateway goroutines while
// the shards apply).
type upcaster struct {
	mu sync.Mutex
	in *instance
}

// Upcast implements actor.Upcaster by calling the module's rhizon_upcast,
// when it exports one and registered an upcaster; otherwise the event is
// unchanged. Each call starts from the instance's initial snapshot, under
// the fuel budget and memory limit of Decide, so its outcome is a function
// of its input alone; a trap or an exhausted budget is an error (the
// gateway answers Internal naming the event), never a crash.
func (b *Behavior) Upcast(eventType string, v uint32, payload []byte) (string, uint32, []byte, error) {
	if !b.c.upcasts.Load() {
		return eventType, v, payload, nil
	}
	u := &b.up
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.in == nil {
		in, err := b.instantiate(context.Background())
		if err != nil {
			return "", 0, nil, err
		}
		in.dirty = true
		u.in = in
	}
	in := u.in
	// Always from the snapshot: what the previous upcast left in the heap
	// would make fuel and memory use depend on the calls before.
	if err := in.restore(b.c.snap); err != nil {
		in.dirty = true
		return "", 0, nil, err
	}
	in.call = callState{upcasting: true}
	defer func() { in.call = callState{} }()
	res, err := in.runUpcast(b.cfg.Fuel, eventType, v, payload)
	if err != nil {
		return "", 0, nil, err
	}
	switch res {
	case upcastNone:
		b.c.upcasts.Store(false)
		return eventType, v, payload, nil
	case upcastRejected:
		if r, ok := in.call.rejection.(*actor.Rejection); ok {
			return "", 0, nil, errors.New(r.Message)
		}
		return "", 0, nil, fmt.Errorf("rhizon_upcast failed without a message")
	case upcastOK:
		if in.call.up == nil {
			return "", 0, nil, actor.Reject(CodeTrap, "rhizon_upcast returned without calling upcasted")
		}
		return in.call.up.Type, in.call.up.SchemaVersion, in.call.up.Payload, nil
	}
	return "", 0, nil, actor.Reject(CodeTrap, "rhizon_upcast returned %d", res)
}

// runUpcast calls rhizon_upcast with the type and payload in the buffer.
func (in *instance) runUpcast(fuel int64, typ string, v uint32, payload []byte) (uint32, error) {
	n := uint64(len(typ)) + uint64(len(payload))
	if n > 1<<31 {
		return 0, actor.Reject(CodeBudgetExceeded, "inputs of %d bytes", n)
	}
	if err := in.ensureBuffer(uint32(n)); err != nil {
		return 0, in.classify(err)
	}
	p := in.bufPtr
	if !in.mem.WriteString(p, typ) || !in.mem.Write(p+uint32(len(typ)), payload) {
		in.dirty = true
		return 0, actor.Reject(CodeTrap, "the module's input buffer at %d is outside its memory", p)
	}
	in.fuel.Set(uint64(fuel))
	in.stack[0], in.stack[1], in.stack[2] = uint64(len(typ)), uint64(len(payload)), uint64(v)
	if err := in.upcast.CallWithStack(in.ctx, in.stack); err != nil {
		return 0, in.classify(err)
	}
	return uint32(in.stack[0]), nil
}
