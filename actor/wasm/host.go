package wasm

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/rhizon/rhizon/actor"
)

// The host side of the ABI (README "WebAssembly actors"). Two host modules:
// "rhizon", the actor context, and a deterministic subset of
// "wasi_snapshot_preview1" that the Go runtime needs to start. Nothing in
// either reads the node's clock, randomness, files or network: the clock is
// the entry's logical time (and a counter), random bytes come from the
// entry's seeded generator, stdout and stderr are kept for trap messages, and
// every file descriptor call fails with EBADF.

const (
	hostModule = "rhizon"
	wasiModule = "wasi_snapshot_preview1"
)

// WASI errno values.
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoInval   = 28
)

// allowedImports is every function a module may import; anything else
// (path_open, sock_*, fd_seek, ...) is refused at load.
var allowedImports = map[string][]string{
	hostModule: {"cancel_timer", "emit", "emit_versioned", "now", "output", "rand", "reject", "reply", "send", "set_timer", "upcasted", "version"},
	wasiModule: {"args_get", "args_sizes_get", "clock_time_get", "environ_get", "environ_sizes_get",
		"fd_close", "fd_fdstat_get", "fd_fdstat_set_flags", "fd_prestat_dir_name", "fd_prestat_get",
		"fd_read", "fd_write", "poll_oneoff", "proc_exit", "random_get", "sched_yield"},
}

// checkImports refuses a module that imports anything outside allowedImports
// or imports a memory, table or global from the host.
func checkImports(m wazero.CompiledModule) error {
	for _, f := range m.ImportedFunctions() {
		mod, name, _ := f.Import()
		if !slices.Contains(allowedImports[mod], name) {
			what := "host access"
			switch {
			case mod == wasiModule && (strings.HasPrefix(name, "path_") || strings.HasPrefix(name, "fd_")):
				what = "the filesystem"
			case mod == wasiModule && strings.HasPrefix(name, "sock_"):
				what = "the network"
			case strings.Contains(name, "thread"):
				what = "threads"
			}
			return fmt.Errorf("module imports %s.%s: actors may not use %s (WebAssembly actors run deterministically: no filesystem, network, threads, wall clock or entropy); a module may import only rhizon.{%s} and %s.{%s}",
				mod, name, what, strings.Join(allowedImports[hostModule], ","), wasiModule, strings.Join(allowedImports[wasiModule], ","))
		}
	}
	for _, mem := range m.ImportedMemories() {
		mod, name, _ := mem.Import()
		return fmt.Errorf("module imports memory %s.%s: a module must define its own memory", mod, name)
	}
	return nil
}

type ctxKey struct{}

// inst returns the instance a host call belongs to (each instance calls with
// a context that carries it).
func inst(ctx context.Context) *instance { return ctx.Value(ctxKey{}).(*instance) }

// trapf aborts the guest call: wazero turns the panic into the call's error.
func trapf(format string, args ...any) { panic(fmt.Errorf(format, args...)) }

func read(mod api.Module, ptr, n uint64) []byte {
	b, ok := mod.Memory().Read(uint32(ptr), uint32(n))
	if !ok {
		trapf("host call read %d bytes at %d outside the module's memory", n, ptr)
	}
	return slices.Clone(b)
}

func readString(mod api.Module, ptr, n uint64) string { return string(read(mod, ptr, n)) }

func (in *instance) emit(ev actor.NewEvent) {
	in.actorCtx()
	if len(in.call.events) >= actor.MaxEventsPerCommand {
		trapf("Decide emitted more than %d events", actor.MaxEventsPerCommand)
	}
	in.call.events = append(in.call.events, ev)
}

func (in *instance) actorCtx() *actor.Context {
	if in.call.actx == nil {
		trapf("context call outside Decide")
	}
	return in.call.actx
}

type hostFn struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
	fn      api.GoModuleFunc
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

func params(n int) []api.ValueType { return slices.Repeat([]api.ValueType{i32}, n) }

var rhizonFns = []hostFn{
	{"now", nil, []api.ValueType{i64}, func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = uint64(inst(ctx).actorCtx().Now())
	}},
	{"rand", nil, []api.ValueType{i64}, func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = inst(ctx).actorCtx().Rand()
	}},
	{"version", nil, []api.ValueType{i64}, func(ctx context.Context, _ api.Module, s []uint64) {
		s[0] = inst(ctx).actorCtx().Version()
	}},
	{"emit", params(4), nil, func(ctx context.Context, m api.Module, s []uint64) {
		inst(ctx).emit(actor.NewEvent{Name: readString(m, s[0], s[1]), Payload: read(m, s[2], s[3])})
	}},
	// emit with a schema version (0 and 1 both mean 1); "emit" stays for
	// modules built before versions existed.
	{"emit_versioned", params(5), nil, func(ctx context.Context, m api.Module, s []uint64) {
		inst(ctx).emit(actor.NewEvent{Name: readString(m, s[0], s[1]), SchemaVersion: uint32(s[2]), Payload: read(m, s[3], s[4])})
	}},
	// upcasted is rhizon_upcast's answer: the event's type, version and
	// payload in their newer shape.
	{"upcasted", params(5), nil, func(ctx context.Context, m api.Module, s []uint64) {
		in := inst(ctx)
		if !in.call.upcasting {
			trapf("upcasted called outside rhizon_upcast")
		}
		if s[4] > actor.MaxPayloadBytes {
			trapf("upcast payload of %d bytes; the limit is %d", s[4], actor.MaxPayloadBytes)
		}
		in.call.up = &actor.Event{Type: readString(m, s[0], s[1]), SchemaVersion: uint32(s[2]), Payload: read(m, s[3], s[4])}
	}},
	{"reject", params(5), nil, func(ctx context.Context, m api.Module, s []uint64) {
		in := inst(ctx)
		code, msg := readString(m, s[1], s[2]), readString(m, s[3], s[4])
		if s[0] != 0 {
			in.call.rejection = actor.Invalid("%s", msg)
			return
		}
		if code == "" || actor.ValidateID("rejection code", code) != nil {
			code = actor.CodeError
		}
		in.call.rejection = actor.Reject(code, "%s", msg)
	}},
	{"send", params(8), nil, func(ctx context.Context, m api.Module, s []uint64) {
		c := inst(ctx).actorCtx()
		to := actor.Address{ActorType: readString(m, s[0], s[1]), EntityID: readString(m, s[2], s[3])}
		c.Send(to, readString(m, s[4], s[5]), read(m, s[6], s[7]))
	}},
	{"set_timer", []api.ValueType{i32, i32, i64, i32, i32}, nil, func(ctx context.Context, m api.Module, s []uint64) {
		inst(ctx).actorCtx().SetTimer(readString(m, s[0], s[1]), int64(s[2]), read(m, s[3], s[4]))
	}},
	{"cancel_timer", params(2), nil, func(ctx context.Context, m api.Module, s []uint64) {
		inst(ctx).actorCtx().CancelTimer(readString(m, s[0], s[1]))
	}},
	{"reply", params(2), nil, func(ctx context.Context, m api.Module, s []uint64) {
		inst(ctx).actorCtx().Reply(read(m, s[0], s[1]))
	}},
	{"output", params(2), nil, func(ctx context.Context, m api.Module, s []uint64) {
		in := inst(ctx)
		if s[1] > actor.MaxStateBytes {
			trapf("output of %d bytes; the limit is %d", s[1], actor.MaxStateBytes)
		}
		in.call.output = read(m, s[0], s[1])
	}},
}

func errno(s []uint64, e uint64) { s[0] = e }

func put64(m api.Module, ptr uint64, v uint64) bool {
	return m.Memory().WriteUint64Le(uint32(ptr), v)
}

func put32(m api.Module, ptr uint64, v uint32) bool {
	return m.Memory().WriteUint32Le(uint32(ptr), v)
}

var wasiFns = []hostFn{
	{"args_get", params(2), params(1), func(_ context.Context, _ api.Module, s []uint64) { errno(s, errnoSuccess) }},
	{"environ_get", params(2), params(1), func(_ context.Context, _ api.Module, s []uint64) { errno(s, errnoSuccess) }},
	{"args_sizes_get", params(2), params(1), zeroSizes},
	{"environ_sizes_get", params(2), params(1), zeroSizes},
	{"clock_time_get", []api.ValueType{i32, i64, i32}, params(1), func(ctx context.Context, m api.Module, s []uint64) {
		in := inst(ctx)
		var t uint64
		switch s[0] {
		case 0: // realtime: the entry's logical time
			if in.call.actx != nil {
				t = uint64(in.call.actx.Now()) * 1e6
			}
		case 1: // monotonic: advances by 1µs per reading
			in.mono += 1000
			t = in.mono
		default:
			errno(s, errnoInval)
			return
		}
		if !put64(m, s[2], t) {
			errno(s, errnoInval)
			return
		}
		errno(s, errnoSuccess)
	}},
	{"random_get", params(2), params(1), func(ctx context.Context, m api.Module, s []uint64) {
		in := inst(ctx)
		buf := make([]byte, s[1])
		for i := 0; i < len(buf); i += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], in.random())
			copy(buf[i:], w[:])
		}
		if !m.Memory().Write(uint32(s[0]), buf) {
			errno(s, errnoInval)
			return
		}
		errno(s, errnoSuccess)
	}},
	{"fd_write", params(4), params(1), func(ctx context.Context, m api.Module, s []uint64) {
		in := inst(ctx)
		if s[0] != 1 && s[0] != 2 {
			errno(s, errnoBadf)
			return
		}
		var total uint32
		for i := range uint32(s[2]) {
			iov := read(m, s[1]+uint64(i)*8, 8)
			p, n := binary.LittleEndian.Uint32(iov), binary.LittleEndian.Uint32(iov[4:])
			if room := maxLog - len(in.log); room > 0 {
				in.log = append(in.log, read(m, uint64(p), uint64(min(n, uint32(room))))...)
			}
			total += n
		}
		if !put32(m, s[3], total) {
			errno(s, errnoInval)
			return
		}
		errno(s, errnoSuccess)
	}},
	{"fd_fdstat_get", params(2), params(1), func(_ context.Context, m api.Module, s []uint64) {
		if s[0] > 2 {
			errno(s, errnoBadf)
			return
		}
		// A character device with no rights: enough for the Go runtime's
		// standard streams.
		if !m.Memory().Write(uint32(s[1]), append([]byte{2}, make([]byte, 23)...)) {
			errno(s, errnoInval)
			return
		}
		errno(s, errnoSuccess)
	}},
	{"fd_read", params(4), params(1), badf},
	{"fd_close", params(1), params(1), badf},
	{"fd_fdstat_set_flags", params(2), params(1), badf},
	{"fd_prestat_get", params(2), params(1), badf},
	{"fd_prestat_dir_name", params(3), params(1), badf},
	{"poll_oneoff", params(4), params(1), func(_ context.Context, m api.Module, s []uint64) {
		// Nothing to wait for: report no events; the runtime re-reads the
		// (counting) monotonic clock and goes on.
		put32(m, s[3], 0)
		errno(s, errnoSuccess)
	}},
	{"sched_yield", nil, params(1), func(_ context.Context, _ api.Module, s []uint64) { errno(s, errnoSuccess) }},
	{"proc_exit", params(1), nil, func(_ context.Context, _ api.Module, s []uint64) {
		panic(exitError(uint32(s[0])))
	}},
}

// maxLog bounds what a module's stdout and stderr keep (for trap messages).
const maxLog = 4096

type exitError uint32

func (e exitError) Error() string { return fmt.Sprintf("module exited with code %d", uint32(e)) }

func zeroSizes(_ context.Context, m api.Module, s []uint64) {
	if !put32(m, s[0], 0) || !put32(m, s[1], 0) {
		errno(s, errnoInval)
		return
	}
	errno(s, errnoSuccess)
}

func badf(_ context.Context, _ api.Module, s []uint64) { errno(s, errnoBadf) }

func instantiateHost(ctx context.Context, rt wazero.Runtime) error {
	for _, h := range []struct {
		name string
		fns  []hostFn
	}{{hostModule, rhizonFns}, {wasiModule, wasiFns}} {
		b := rt.NewHostModuleBuilder(h.name)
		for _, f := range h.fns {
			b = b.NewFunctionBuilder().WithGoModuleFunction(maskI32(f), f.params, f.results).Export(f.name)
		}
		if _, err := b.Instantiate(ctx); err != nil {
			return fmt.Errorf("host module %s: %w", h.name, err)
		}
	}
	return nil
}

// maskI32 clears the upper halves of f's i32 parameters: wazero leaves
// whatever the register held there.
func maskI32(f hostFn) api.GoModuleFunc {
	var i32s []int
	for i, t := range f.params {
		if t == i32 {
			i32s = append(i32s, i)
		}
	}
	if len(i32s) == 0 {
		return f.fn
	}
	return func(ctx context.Context, m api.Module, s []uint64) {
		for _, i := range i32s {
			s[i] &= 0xffffffff
		}
		f.fn(ctx, m, s)
	}
}
