// Package wasm runs actors compiled to WebAssembly (with actor/wasm/sdk) as
// actor.Behaviors, inside the shard's single-threaded deterministic apply,
// on wazero (pure Go). Determinism is by construction:
//
//   - The module may import only the "rhizon" context calls and a
//     deterministic subset of WASI (see host.go); a module importing the
//     filesystem, sockets or threads is refused at load.
//   - Work is metered by fuel, counted by code instrumented into the module
//     (instrument.go), not by the wall clock; memory is capped by
//     Config.MemoryPages. Running out of either is the rejection
//     actor_budget_exceeded, a trap actor_trap: the same on every replica.
//   - An instance keeps state across calls (the Go runtime's heap, its
//     garbage collector), which could make fuel and memory use depend on a
//     replica's history. So the instance is restored to the snapshot taken
//     after the module's initialisation at the start of every log entry and
//     after every trap: what a call sees is a function of the entry alone.
//
// Modules are compiled once per process, cached by content hash.
package wasm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/rhizon/rhizon/actor"
)

// Config bounds every call into a module.
type Config struct {
	// Fuel is the budget of one Decide or Evolve call, in instructions:
	// each function entry is charged the instructions of its body outside
	// loops, each loop iteration those of the loop outside nested loops (an
	// upper bound of what runs until the next charge). Default DefaultFuel.
	Fuel int64
	// MemoryPages caps the module's linear memory, in 64 KiB pages.
	// Default DefaultMemoryPages.
	MemoryPages uint32
}

// Defaults of Config.
const (
	DefaultFuel        = 500_000_000
	DefaultMemoryPages = 1024 // 64 MiB
)

func (c Config) withDefaults() Config {
	if c.Fuel <= 0 {
		c.Fuel = DefaultFuel
	}
	if c.MemoryPages == 0 {
		c.MemoryPages = DefaultMemoryPages
	}
	return c
}

// Result codes of WebAssembly actors (also in actor/codes.go and api/outcome).
const (
	CodeBudgetExceeded = actor.CodeBudgetExceeded
	CodeTrap           = actor.CodeTrap
)

// compiled is a module compiled for one memory limit, shared by every
// Behavior loaded from the same bytes.
type compiled struct {
	rt      wazero.Runtime
	mod     wazero.CompiledModule
	globals []string // the exported mutable globals, snapshotted with memory
	// upcasts: the module exports rhizon_upcast and has not answered that
	// it has no upcaster (see Behavior.Upcast).
	upcasts atomic.Bool

	once  sync.Once
	snap  *snapshot
	verbs []string
	err   error
}

var (
	cacheMu  sync.Mutex
	runtimes = map[uint32]wazero.Runtime{}
	modules  = map[string]*compiled{}
	ccache   = wazero.NewCompilationCache()
)

// compile returns the cached compilation of wasm for the memory limit.
func compile(ctx context.Context, wasm []byte, pages uint32) (*compiled, error) {
	sum := sha256.Sum256(wasm)
	key := fmt.Sprintf("%x/%d", sum, pages)
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if c, ok := modules[key]; ok {
		return c, nil
	}
	rt, ok := runtimes[pages]
	if !ok {
		rt = wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
			WithMemoryLimitPages(pages).WithCompilationCache(ccache).
			WithCoreFeatures(api.CoreFeaturesV2))
		if err := instantiateHost(ctx, rt); err != nil {
			return nil, err
		}
		runtimes[pages] = rt
	}
	metered, globals, err := instrument(wasm)
	if err != nil {
		return nil, fmt.Errorf("wasm: cannot meter the module: %w", err)
	}
	mod, err := rt.CompileModule(ctx, metered)
	if err != nil {
		return nil, fmt.Errorf("wasm: compile: %w", err)
	}
	if err := checkImports(mod); err != nil {
		_ = mod.Close(ctx)
		return nil, fmt.Errorf("wasm: refused: %w", err)
	}
	for _, name := range []string{"_initialize", "rhizon_buffer", "rhizon_decide", "rhizon_evolve", "rhizon_verbs"} {
		if _, ok := mod.ExportedFunctions()[name]; !ok {
			_ = mod.Close(ctx)
			return nil, fmt.Errorf("wasm: refused: the module does not export %s; build it with actor/wasm/sdk and GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared", name)
		}
	}
	c := &compiled{rt: rt, mod: mod, globals: globals}
	_, up := mod.ExportedFunctions()[upcastExport]
	c.upcasts.Store(up)
	modules[key] = c
	return c, nil
}

// Behavior is a WebAssembly actor type.
type Behavior struct {
	typ, revision string
	cfg           Config
	c             *compiled

	mu      sync.Mutex
	byShard map[uint32][]*instance
	up      upcaster
}

var (
	_ actor.Behavior  = (*Behavior)(nil)
	_ actor.Versioned = (*Behavior)(nil)
)

// Load compiles (or takes from the cache) the module and returns it as the
// behaviour of actorType at revision. Every replica of a shard in one process
// needs its own Behavior (a node never holds two replicas of one shard).
func Load(ctx context.Context, actorType, revision string, wasm []byte, cfg Config) (*Behavior, error) {
	if err := actor.ValidateID("actor type", actorType); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c, err := compile(ctx, wasm, cfg.MemoryPages)
	if err != nil {
		return nil, err
	}
	b := &Behavior{typ: actorType, revision: revision, cfg: cfg, c: c, byShard: map[uint32][]*instance{}}
	c.once.Do(func() { c.snap, c.verbs, c.err = b.initial(ctx) })
	if c.err != nil {
		return nil, c.err
	}
	return b, nil
}

// Type implements actor.Behavior.
func (b *Behavior) Type() string { return b.typ }

// Verbs implements actor.Behavior: what the module's rhizon_verbs lists.
func (b *Behavior) Verbs() []string { return b.c.verbs }

// Version implements actor.Versioned.
func (b *Behavior) Version() string { return b.revision }

// initial instantiates the module once to take the snapshot every instance
// starts each entry from, and to read its verbs.
func (b *Behavior) initial(ctx context.Context) (*snapshot, []string, error) {
	in, err := b.instantiate(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer in.close()
	// A first input buffer, so that most calls need not ask for one.
	if err := in.ensureBuffer(64 << 10); err != nil {
		return nil, nil, fmt.Errorf("wasm: rhizon_buffer: %w", err)
	}
	in.fuel.Set(uint64(initFuel))
	if _, err := in.verbs.Call(in.ctx); err != nil {
		return nil, nil, fmt.Errorf("wasm: rhizon_verbs: %w", err)
	}
	var verbs []string
	for v := range strings.SplitSeq(string(in.call.output), "\n") {
		if v == "" {
			continue
		}
		if err := actor.ValidateID("verb", v); err != nil {
			return nil, nil, fmt.Errorf("wasm: the module's verb %q: %w", v, err)
		}
		verbs = append(verbs, v)
	}
	slices.Sort(verbs)
	in.call = callState{}
	return in.take(), slices.Compact(verbs), nil
}

// Decide implements actor.Behavior.
func (b *Behavior) Decide(ctx *actor.Context, state []byte, cmd *actor.Command) ([]actor.NewEvent, error) {
	shard, index := ctx.Entry()
	in, err := b.acquire(shard, index)
	if err != nil {
		return nil, err
	}
	defer in.mu.Unlock()
	in.call = callState{actx: ctx}
	defer func() { in.call = callState{} }()
	res, err := in.run(in.decide, b.cfg.Fuel, state, cmd.Type, cmd.Payload)
	if err != nil {
		return nil, err
	}
	if res != 0 {
		if in.call.rejection == nil {
			return nil, actor.Reject(CodeTrap, "rhizon_decide returned %d without a rejection", res)
		}
		return nil, in.call.rejection
	}
	return in.call.events, nil
}

// Evolve implements actor.Behavior.
func (b *Behavior) Evolve(state []byte, ev *actor.Event) ([]byte, error) {
	in, err := b.acquire(ev.Shard, ev.Index)
	if err != nil {
		return nil, err
	}
	defer in.mu.Unlock()
	in.call = callState{}
	defer func() { in.call = callState{} }()
	res, err := in.run(in.evolve, b.cfg.Fuel, state, ev.Type, ev.Payload)
	if err != nil {
		return nil, err
	}
	if res != 0 {
		if r, ok := in.call.rejection.(*actor.Rejection); ok {
			return nil, errors.New(r.Message)
		}
		return nil, fmt.Errorf("rhizon_evolve returned %d", res)
	}
	return in.call.output, nil
}

// acquire returns the instance for the entry (shard, index), locked: the one
// already serving it, or one restored to the snapshot. It takes over the
// shard's instance with the greatest lower index (the entry it served is
// over: a shard applies entries in order) and otherwise adds one, so that a
// replay of the shard beside the live replica keeps its own.
func (b *Behavior) acquire(shard uint32, index uint64) (*instance, error) {
	for {
		in, restore, retry, err := b.tryAcquire(shard, index)
		if err != nil || retry {
			if err != nil {
				return nil, err
			}
			continue
		}
		// Restore outside the Behavior's lock: other shards go on meanwhile.
		if restore {
			if err := in.restore(b.c.snap); err != nil {
				in.dirty = true
				in.mu.Unlock()
				return nil, err
			}
		}
		return in, nil
	}
}

// tryAcquire is one attempt of acquire: the instance, locked and claimed
// for the entry, and whether it must be restored first; retry is true when
// the instance it waited for was closed meanwhile.
func (b *Behavior) tryAcquire(shard uint32, index uint64) (in *instance, restore, retry bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	list := b.byShard[shard]
	var take *instance
	for _, in := range list {
		if in.index == index {
			take = in
			break
		}
		if in.index < index && (take == nil || in.index > take.index) {
			take = in
		}
	}
	switch {
	case take != nil && take.index == index:
		// This entry's instance: wait for the call holding it (another
		// applier of the same entry is not expected; this only orders).
		if !take.mu.TryLock() {
			b.mu.Unlock()
			take.mu.Lock()
			b.mu.Lock()
		}
		if take.closed {
			take.mu.Unlock()
			return nil, false, true, nil
		}
	case take != nil && take.mu.TryLock():
	default:
		in, err := b.instantiate(context.Background())
		if err != nil {
			return nil, false, false, err
		}
		in.mu.Lock()
		in.index = ^uint64(0) // force the restore below
		list = append(list, in)
		if len(list) > 4 { // drop the oldest idle one (a replay's, say)
			slices.SortFunc(list, func(x, y *instance) int { return cmpU64(x.index, y.index) })
			if old := list[0]; old.mu.TryLock() {
				old.close()
				old.closed = true
				old.mu.Unlock()
				list = list[1:]
			}
		}
		b.byShard[shard] = list
		take = in
	}
	restore = take.index != index || take.dirty
	take.index = index // index is read and written under b.mu only
	return take, restore, false, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Close releases the behaviour's instances (the compiled module stays cached).
func (b *Behavior) Close() {
	b.mu.Lock()
	var all []*instance
	for _, list := range b.byShard {
		all = append(all, list...)
	}
	b.byShard = map[uint32][]*instance{}
	b.mu.Unlock()
	b.up.mu.Lock()
	if b.up.in != nil {
		all = append(all, b.up.in)
		b.up.in = nil
	}
	b.up.mu.Unlock()
	for _, in := range all {
		in.mu.Lock()
		in.close()
		in.closed = true
		in.mu.Unlock()
	}
}

// classify turns a failed call into the deterministic rejection.
func (in *instance) classify(err error) error {
	in.dirty = true
	if int64(in.fuel.Get()) < 0 {
		return actor.Reject(CodeBudgetExceeded, "the call used more than its fuel budget of %d", in.fuelBudget)
	}
	msg := err.Error()
	var exit exitError
	if errors.As(err, &exit) {
		msg = exit.Error()
	}
	msg, _, _ = strings.Cut(msg, "\n")
	if log := firstLine(in.log, "panic:", "fatal error:"); log != "" {
		msg += ": " + log
	}
	if bytes.Contains(in.log, []byte("out of memory")) {
		return actor.Reject(CodeBudgetExceeded, "the module ran out of memory (limit %d pages of 64 KiB): %s", in.pages, msg)
	}
	return actor.Reject(CodeTrap, "%s", msg)
}

func firstLine(log []byte, prefixes ...string) string {
	for line := range strings.SplitSeq(string(log), "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				return line
			}
		}
	}
	return ""
}
