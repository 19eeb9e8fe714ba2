package wasm

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/rhizon/rhizon/actor"
)

// instance is one instantiation of a module. Its mutex is held for a call;
// index is the log entry it serves (see Behavior.acquire).
type instance struct {
	mu     sync.Mutex
	owner  *Behavior
	index  uint64
	dirty  bool // a call trapped: restore before the next one
	closed bool // dropped by its Behavior

	ctx     context.Context // carries the instance to the host calls
	mod     api.Module
	mem     api.Memory
	fuel    api.MutableGlobal
	globals []api.MutableGlobal // in export-name order
	decide  api.Function
	evolve  api.Function
	buffer  api.Function
	verbs   api.Function
	upcast  api.Function // nil when the module does not export rhizon_upcast
	stack   []uint64

	fuelBudget int64
	pages      uint32

	// Host-side state that belongs to the instance (snapshotted with it).
	mono   uint64 // the monotonic clock the module reads
	rnd    uint64 // the generator behind random_get
	bufPtr uint32 // the module's input buffer (rhizon_buffer)
	bufCap uint32

	call callState
	log  []byte // the module's stdout and stderr, bounded by maxLog
}

// callState is what one call collects through the host functions.
type callState struct {
	actx      *actor.Context
	events    []actor.NewEvent
	rejection error
	output    []byte
	upcasting bool         // in rhizon_upcast: only upcasted and reject apply
	up        *actor.Event // what upcasted handed back
}

// snapshot is an instance's whole state after initialisation.
type snapshot struct {
	mem     []byte
	globals []uint64
	mono    uint64
	rnd     uint64
	bufPtr  uint32
	bufCap  uint32
}

func (b *Behavior) instantiate(ctx context.Context) (*instance, error) {
	in := &instance{owner: b, fuelBudget: b.cfg.Fuel, pages: b.cfg.MemoryPages, rnd: 0x5248495a4f4e} // "RHIZON"
	in.ctx = context.WithValue(context.Background(), ctxKey{}, in)
	mod, err := b.c.rt.InstantiateModule(in.ctx, b.c.mod, wazero.NewModuleConfig().
		WithName("").WithStartFunctions("_initialize"))
	if err != nil {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return nil, fmt.Errorf("wasm: instantiate %s: %s (module output: %q)", b.typ, msg, in.log)
	}
	in.mod, in.mem = mod, mod.Memory()
	in.fuel = mod.ExportedGlobal(fuelExport).(api.MutableGlobal)
	for _, n := range b.c.globals {
		g, ok := mod.ExportedGlobal(n).(api.MutableGlobal)
		if !ok {
			return nil, fmt.Errorf("wasm: global %s is not mutable", n)
		}
		in.globals = append(in.globals, g)
	}
	in.decide = mod.ExportedFunction("rhizon_decide")
	in.evolve = mod.ExportedFunction("rhizon_evolve")
	in.buffer = mod.ExportedFunction("rhizon_buffer")
	in.verbs = mod.ExportedFunction("rhizon_verbs")
	in.upcast = mod.ExportedFunction(upcastExport)
	in.stack = make([]uint64, 3)
	if in.mem == nil {
		return nil, fmt.Errorf("wasm: the module of %s has no memory", b.typ)
	}
	return in, nil
}

func (in *instance) close() { _ = in.mod.Close(context.Background()) }

const pageSize = 64 << 10

// take snapshots the instance.
func (in *instance) take() *snapshot {
	view, _ := in.mem.Read(0, in.mem.Size())
	s := &snapshot{mem: append([]byte(nil), view...), mono: in.mono, rnd: in.rnd, bufPtr: in.bufPtr, bufCap: in.bufCap}
	for _, g := range in.globals {
		s.globals = append(s.globals, g.Get())
	}
	return s
}

// restore puts the instance back to s. Linear memory cannot shrink, and the
// Go runtime would grow a larger one further than a fresh instance would, so
// an instance whose memory grew is replaced by a fresh one.
func (in *instance) restore(s *snapshot) error {
	if in.mem.Size() > uint32(len(s.mem)) {
		in.close()
		if err := in.reinstantiate(); err != nil {
			return err
		}
	}
	// A fresh instance's memory is smaller when the snapshot's grew after
	// the start functions (the first input buffer).
	if size := in.mem.Size(); size < uint32(len(s.mem)) {
		if _, ok := in.mem.Grow((uint32(len(s.mem)) - size) / pageSize); !ok {
			return fmt.Errorf("wasm: cannot grow the instance's memory to its snapshot's %d bytes", len(s.mem))
		}
	}
	if !in.mem.Write(0, s.mem) || len(in.globals) != len(s.globals) {
		return fmt.Errorf("wasm: cannot restore the instance's snapshot")
	}
	for i, g := range in.globals {
		g.Set(s.globals[i])
	}
	in.mono, in.rnd, in.bufPtr, in.bufCap = s.mono, s.rnd, s.bufPtr, s.bufCap
	in.log, in.dirty = in.log[:0], false
	return nil
}

// reinstantiate replaces the module instance in place (keeping the mutex).
func (in *instance) reinstantiate() error {
	fresh, err := in.owner.instantiate(context.Background())
	if err != nil {
		return err
	}
	in.ctx = context.WithValue(context.Background(), ctxKey{}, in)
	in.mod, in.mem, in.fuel, in.globals = fresh.mod, fresh.mem, fresh.fuel, fresh.globals
	in.decide, in.evolve, in.buffer, in.verbs, in.upcast = fresh.decide, fresh.evolve, fresh.buffer, fresh.verbs, fresh.upcast
	return nil
}

func (in *instance) random() uint64 {
	in.rnd += 0x9e3779b97f4a7c15
	z := in.rnd
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// ensureBuffer makes the module's input buffer hold at least n bytes.
func (in *instance) ensureBuffer(n uint32) error {
	if in.bufCap >= n && in.bufCap > 0 {
		return nil
	}
	in.fuel.Set(uint64(initFuel))
	in.stack[0] = uint64(n)
	if err := in.buffer.CallWithStack(in.ctx, in.stack); err != nil {
		return err
	}
	in.bufPtr, in.bufCap = uint32(in.stack[0]), n
	return nil
}

// run calls fn (rhizon_decide or rhizon_evolve) with the three inputs laid
// out in the module's buffer, under the fuel budget.
func (in *instance) run(fn api.Function, fuel int64, state []byte, typ string, payload []byte) (uint32, error) {
	n := uint64(len(state)) + uint64(len(typ)) + uint64(len(payload))
	if n > 1<<31 {
		return 0, actor.Reject(CodeBudgetExceeded, "inputs of %d bytes", n)
	}
	if err := in.ensureBuffer(uint32(n)); err != nil {
		return 0, in.classify(err)
	}
	p := in.bufPtr
	if !in.mem.Write(p, state) || !in.mem.WriteString(p+uint32(len(state)), typ) ||
		!in.mem.Write(p+uint32(len(state)+len(typ)), payload) {
		in.dirty = true
		return 0, actor.Reject(CodeTrap, "the module's input buffer at %d is outside its memory", p)
	}
	in.fuel.Set(uint64(fuel))
	in.stack[0], in.stack[1], in.stack[2] = uint64(len(state)), uint64(len(typ)), uint64(len(payload))
	if err := fn.CallWithStack(in.ctx, in.stack); err != nil {
		return 0, in.classify(err)
	}
	return uint32(in.stack[0]), nil
}
