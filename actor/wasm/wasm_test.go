package wasm_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/actor/wasm"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/engine/memstore"
	"github.com/rhizon/rhizon/storage"
)

var user = actor.Security{
	Principal: actor.Principal{ID: "u1", Type: actor.PrincipalUser},
	Scopes:    []actor.Scope{{Tenant: "t1", Workspace: "w1"}},
}

func addr(typ, id string) actor.Address {
	return actor.Address{Tenant: "t1", Workspace: "w1", ActorType: typ, EntityID: id}
}

var storeOptions = storage.Options{
	MemTableSize: 8 << 20, BlockCacheSize: 1 << 20, IndexCacheSize: 1 << 20,
	ValueLogFileSize: 4 << 20, GCInterval: -1,
}

// replica is one engine over real Badger (or memstore when dir is "").
type replica struct {
	eng *engine.Engine
	db  *storage.DB
}

func newReplica(tb testing.TB, reg *actor.Registry, badger bool) *replica {
	tb.Helper()
	r := &replica{}
	var st engine.Store = memstore.New()
	if badger {
		db, err := storage.Open(tb.TempDir(), storeOptions)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = db.Close() })
		r.db, st = db, db.Shard(3)
	}
	eng, err := engine.New(3, reg, st)
	if err != nil {
		tb.Fatal(err)
	}
	r.eng = eng
	return r
}

func (r *replica) apply(tb testing.TB, e engine.Entry) []actor.Result {
	tb.Helper()
	out, err := r.eng.Apply(&e)
	if err != nil {
		tb.Fatalf("apply %d: %v", e.Index, err)
	}
	return out.Results
}

func load(tb testing.TB, typ string, module []byte, cfg wasm.Config) *wasm.Behavior {
	tb.Helper()
	return loadRevCfg(tb, typ, builtin.Revision, module, cfg)
}

func loadRev(tb testing.TB, typ, rev string, module []byte) *wasm.Behavior {
	tb.Helper()
	return loadRevCfg(tb, typ, rev, module, wasm.Config{})
}

func loadRevCfg(tb testing.TB, typ, rev string, module []byte, cfg wasm.Config) *wasm.Behavior {
	tb.Helper()
	b, err := wasm.Load(context.Background(), typ, rev, module, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	return b
}

func registry(tb testing.TB, bs ...actor.Behavior) *actor.Registry {
	tb.Helper()
	reg, err := actor.NewRegistry(bs...)
	if err != nil {
		tb.Fatal(err)
	}
	return reg
}

func cmd(typ, id, verb, payload string, n int) actor.Command {
	return actor.Command{ID: fmt.Sprint("c", n), Type: actor.CommandType(typ, verb), Address: addr(typ, id),
		Payload: []byte(payload), IdempotencyKey: fmt.Sprint("k", n), Security: user}
}

// counterEntries is a log of counter commands: adds over several entities,
// negative amounts, overflow, and malformed payloads.
func counterEntries() []engine.Entry {
	var out []engine.Entry
	n := 0
	payloads := []string{`{"amount":1}`, `{"amount":-3}`, `{"amount":0}`, `{}`, ``, `{"amount": 7}`,
		fmt.Sprintf(`{"amount":%d}`, int64(math.MaxInt64)), `{"amount":"x"}`, `{"amount":2,"extra":1}`,
		`[1]`, `{"amount":1} {}`, `{"amount":`, `{"amount":+1}`, ` {"amount" : 4} `}
	for i := range 12 {
		e := engine.Entry{Index: uint64(i + 1), At: int64(1_700_000_000_000 + i*10)}
		for j := range 20 {
			n++
			verb := "add"
			if j == 19 {
				verb = "sub" // no such verb
			}
			e.Commands = append(e.Commands, cmd("counter", fmt.Sprint("c", j%5), verb, payloads[(i+j)%len(payloads)], n))
		}
		out = append(out, e)
	}
	return out
}

// TestCounterMatchesNative runs the same log through the built-in counter
// and the WASM counter (examples/wasm/counter), over Badger and memstore:
// same results (events, codes, messages) and the same state hash.
func TestCounterMatchesNative(t *testing.T) {
	module := counterModule(t)
	for _, badger := range []bool{true, false} {
		native := newReplica(t, registry(t, builtin.Counter()), badger)
		wasmR := newReplica(t, registry(t, load(t, "counter", module, wasm.Config{})), badger)
		accepted, rejected := 0, 0
		for _, e := range counterEntries() {
			want, got := native.apply(t, e), wasmR.apply(t, e)
			for i := range want {
				if want[i].Reason == actor.ReasonInvalid {
					// The native counter validates before reading the entity
					// (actor.Validator), so its invalid results carry version
					// 0; nothing of them is stored or hashed.
					got[i].Version = want[i].Version
				}
				w, g := fmt.Sprintf("%+v", want[i]), fmt.Sprintf("%+v", got[i])
				if w != g {
					t.Fatalf("entry %d command %d (%s):\nnative %s\nwasm   %s", e.Index, i, e.Commands[i].Payload, w, g)
				}
				if want[i].Status == actor.StatusAccepted {
					accepted++
				} else {
					rejected++
				}
			}
		}
		if accepted == 0 || rejected == 0 {
			t.Fatalf("the log should accept and reject: %d accepted, %d rejected", accepted, rejected)
		}
		if native.eng.Meta().Hash != wasmR.eng.Meta().Hash {
			t.Fatalf("badger=%v: state hash native %x, wasm %x", badger, native.eng.Meta().Hash, wasmR.eng.Meta().Hash)
		}
	}
}

func probeModule(tb testing.TB) []byte { return buildModule(tb, "./testdata/misbehave") }

func resultOf(tb testing.TB, res []actor.Result, i int) actor.Result {
	tb.Helper()
	if i >= len(res) {
		tb.Fatalf("no result %d", i)
	}
	return res[i]
}

// TestBudgetExceeded: an endless loop is rejected with actor_budget_exceeded
// and the shard goes on applying.
func TestBudgetExceeded(t *testing.T) {
	r := newReplica(t, registry(t, load(t, "probe", probeModule(t), wasm.Config{Fuel: 50_000_000})), true)
	res := r.apply(t, engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{
		cmd("probe", "p1", "spin", "", 1), cmd("probe", "p1", "now", "", 2),
	}})
	if got := resultOf(t, res, 0); got.Code != actor.CodeBudgetExceeded || got.Reason != actor.ReasonBusiness {
		t.Fatalf("spin: %+v", got)
	}
	if got := resultOf(t, res, 1); got.Status != actor.StatusAccepted {
		t.Fatalf("the command after the spin: %+v", got)
	}
}

// TestMemoryLimit: a call that holds more memory than MemoryPages allows is
// rejected with actor_budget_exceeded.
func TestMemoryLimit(t *testing.T) {
	r := newReplica(t, registry(t, load(t, "probe", probeModule(t), wasm.Config{MemoryPages: 512})), true)
	res := r.apply(t, engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{
		cmd("probe", "p1", "alloc", "", 1), cmd("probe", "p1", "now", "", 2),
	}})
	got := resultOf(t, res, 0)
	if got.Code != actor.CodeBudgetExceeded || !strings.Contains(got.Message, "out of memory") {
		t.Fatalf("alloc: %+v", got)
	}
	if got := resultOf(t, res, 1); got.Status != actor.StatusAccepted {
		t.Fatalf("the command after the alloc: %+v", got)
	}
}

// TestTrap: a Go panic in the module is actor_trap, with the panic's text.
func TestTrap(t *testing.T) {
	r := newReplica(t, registry(t, load(t, "probe", probeModule(t), wasm.Config{})), true)
	res := r.apply(t, engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{
		cmd("probe", "p1", "panic", "", 1), cmd("probe", "p1", "now", "", 2),
	}})
	got := resultOf(t, res, 0)
	if got.Code != actor.CodeTrap || !strings.Contains(got.Message, "index out of range") {
		t.Fatalf("panic: %+v", got)
	}
	if got := resultOf(t, res, 1); got.Status != actor.StatusAccepted {
		t.Fatalf("the command after the trap: %+v", got)
	}
}

// TestContext: the clock the module reads (time.Now) is the entry's logical
// time, Rand is the native context's sequence, and sends, timers and replies
// reach the engine.
func TestContext(t *testing.T) {
	r := newReplica(t, registry(t, load(t, "probe", probeModule(t), wasm.Config{})), true)
	res := r.apply(t, engine.Entry{Index: 4, At: 1_700_000_000_123, Commands: []actor.Command{
		cmd("probe", "p1", "now", "", 1), cmd("probe", "p1", "effects", "", 2),
	}})
	now := resultOf(t, res, 0)
	if now.Status != actor.StatusAccepted || len(now.Events) != 1 {
		t.Fatalf("now: %+v", now)
	}
	native := actor.NewContext(addr("probe", "p1"), user, 0, 3<<48^4<<12^1, 0).Rand()
	if want := fmt.Sprintf("1700000000123 1700000000123 %d", native); string(now.Events[0].Payload) != want {
		t.Fatalf("now payload %s, want %s", now.Events[0].Payload, want)
	}
	eff := resultOf(t, res, 1)
	if eff.Status != actor.StatusAccepted || string(eff.Reply) != `{"version":1}` {
		t.Fatalf("effects: %+v", eff)
	}
}

// TestRefusedAtLoad: a module that reads files (imports path_open) or opens
// sockets is refused when it is loaded, saying why.
func TestRefusedAtLoad(t *testing.T) {
	_, err := wasm.Load(context.Background(), "reader", "1", buildModule(t, "./testdata/fileread"), wasm.Config{})
	if err == nil || !strings.Contains(err.Error(), "filesystem") {
		t.Fatalf("fileread module: %v", err)
	}
	_, err = wasm.Load(context.Background(), "net", "1", importing("wasi_snapshot_preview1", "sock_accept"), wasm.Config{})
	if err == nil || !strings.Contains(err.Error(), "network") {
		t.Fatalf("socket module: %v", err)
	}
	_, err = wasm.Load(context.Background(), "junk", "1", []byte("not wasm"), wasm.Config{})
	if err == nil || !strings.Contains(err.Error(), "not a WebAssembly") {
		t.Fatalf("junk: %v", err)
	}
}

// importing is a minimal module importing one function () -> ().
func importing(module, name string) []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = append(b, 1, 4, 1, 0x60, 0, 0) // type section: one func type () -> ()
	imp := []byte{1, byte(len(module))}
	imp = append(imp, module...)
	imp = append(imp, byte(len(name)))
	imp = append(imp, name...)
	imp = append(imp, 0, 0)
	b = append(b, 2, byte(len(imp)))
	b = append(b, imp...)
	return append(b, 10, 1, 0) // empty code section
}

// TestDeterminism: three replicas, each with its own Behavior, apply a log
// mixing accepted commands, traps and budget overruns; a fourth starts half
// way (fresh instances, as after a restart). All reach the same hash, and
// the results agree command by command.
func TestDeterminism(t *testing.T) {
	counter, probe := counterModule(t), probeModule(t)
	newR := func() *replica {
		return newReplica(t, registry(t, load(t, "counter", counter, wasm.Config{}),
			load(t, "probe", probe, wasm.Config{Fuel: 50_000_000})), true)
	}
	rs := []*replica{newR(), newR(), newR()}
	entries := counterEntries()
	n := 10_000
	for i := range entries {
		for _, verb := range []string{"count", "spin", "now", "count", "panic", "effects", "count"} {
			n++
			entries[i].Commands = append(entries[i].Commands, cmd("probe", fmt.Sprint("p", i%3), verb, "", n))
		}
	}
	var late *replica
	for i, e := range entries {
		if i == len(entries)/2 {
			// A replica that restarts: a fresh Behavior over the same store.
			late = &replica{db: rs[2].db}
			eng, err := engine.New(3, registry(t, load(t, "counter", counter, wasm.Config{}),
				load(t, "probe", probe, wasm.Config{Fuel: 50_000_000})), rs[2].db.Shard(3))
			if err != nil {
				t.Fatal(err)
			}
			late.eng = eng
			rs[2] = late
		}
		var first string
		for k, r := range rs {
			got := fmt.Sprintf("%+v", r.apply(t, e))
			if k == 0 {
				first = got
			} else if got != first {
				t.Fatalf("entry %d: replica %d differs:\n%s\n%s", e.Index, k, first, got)
			}
		}
	}
	// The module's global counted the calls of each entry only: the
	// instance starts every entry from its snapshot, so replicas that
	// started at different entries agree.
	for k, r := range rs {
		last := r.apply(t, engine.Entry{Index: 99, At: 1_800_000_000_000, Commands: []actor.Command{
			cmd("probe", "p9", "count", "", 90_001), cmd("probe", "p9", "count", "", 90_002)}})
		if got := string(last[1].Events[0].Payload); got != "2" {
			t.Fatalf("replica %d: second call of an entry counted %s, want 2", k, got)
		}
	}
	for k, r := range rs[1:] {
		if r.eng.Meta().Hash != rs[0].eng.Meta().Hash {
			t.Fatalf("replica %d hash %x, replica 0 %x", k+1, r.eng.Meta().Hash, rs[0].eng.Meta().Hash)
		}
	}
}
