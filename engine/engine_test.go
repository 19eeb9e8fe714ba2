package engine_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/engine/memstore"
	"github.com/rhizon/rhizon/storage"
)

// testStoreOptions size Badger for a test's few kilobytes: the property
// tests open hundreds of stores, and at the production defaults (64 MiB
// memtables, 16 MiB block cache, 64 MiB value-log files) allocating and
// mapping them was most of their time. The code paths are the production
// ones.
var testStoreOptions = storage.Options{
	MemTableSize: 8 << 20, BlockCacheSize: 1 << 20, IndexCacheSize: 1 << 20,
	ValueLogFileSize: 4 << 20, GCInterval: -1,
}

// replica is one engine over a real Badger store in its own directory, or
// over an in-memory store (newMemReplica).
type replica struct {
	t     testing.TB
	dir   string
	db    *storage.DB
	store *storage.ShardStore
	mem   *memstore.Store
	fired int // timers the last entry fired
	eng   *engine.Engine
	reg   *actor.Registry
	opts  []engine.Option
	done  bool
}

func newReplica(t testing.TB, reg *actor.Registry, opts ...engine.Option) *replica {
	t.Helper()
	r := &replica{t: t, dir: t.TempDir(), reg: reg, opts: opts}
	r.open()
	t.Cleanup(r.close)
	return r
}

// newMemReplica is a replica over memstore: property tests compare it with
// the Badger ones, which checks memstore (replay's scratch store) against the
// production store, and opens half as many databases.
func newMemReplica(t testing.TB, reg *actor.Registry, opts ...engine.Option) *replica {
	t.Helper()
	r := &replica{t: t, reg: reg, opts: opts, mem: memstore.New()}
	r.open()
	return r
}

// close closes the store now (property tests open many replicas).
func (r *replica) close() {
	if !r.done {
		r.done = true
		if r.db != nil {
			r.db.Close()
		}
	}
}

func (r *replica) open() {
	r.t.Helper()
	if r.mem != nil {
		var err error
		if r.eng, err = engine.New(7, r.reg, r.mem, r.opts...); err != nil {
			r.t.Fatal(err)
		}
		return
	}
	db, err := storage.Open(r.dir, r.storeOptions())
	if err != nil {
		r.t.Fatal(err)
	}
	r.db, r.store = db, db.Shard(7)
	if r.eng, err = engine.New(7, r.reg, r.store, r.opts...); err != nil {
		r.t.Fatal(err)
	}
}

// storeOptions: tests take testStoreOptions; benchmarks take the production
// defaults, since 8 MiB memtables flush and compact inside a benchmark's
// window (the engine's ApplyCounter measured 25-30% slower with them).
func (r *replica) storeOptions() storage.Options {
	if _, bench := r.t.(*testing.B); bench {
		return storage.Options{}
	}
	return testStoreOptions
}

// restart closes and reopens the store, as a process restart would (a
// memory replica keeps its store and starts a new engine over it).
func (r *replica) restart() {
	r.t.Helper()
	if r.mem != nil {
		r.open()
		return
	}
	if err := r.db.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.open()
}

func (r *replica) apply(ent engine.Entry) []actor.Result {
	r.t.Helper()
	out, err := r.eng.Apply(&ent)
	if err != nil {
		r.t.Fatalf("apply %d: %v", ent.Index, err)
	}
	r.fired = out.TimersFired
	return out.Results
}

func (r *replica) history(addr actor.Address, rejections bool) []storage.HistoryRecord {
	r.t.Helper()
	if r.mem != nil {
		var out []storage.HistoryRecord
		for _, h := range r.mem.History(addr, engine.Position{}, 1000, rejections) {
			out = append(out, storage.HistoryRecord(h))
		}
		return out
	}
	recs, _, _, err := r.store.History(addr, engine.Position{}, 1000, rejections)
	if err != nil {
		r.t.Fatal(err)
	}
	return recs
}

var (
	userA = actor.Security{Principal: actor.Principal{ID: "alice", Type: actor.PrincipalUser},
		Scopes: []actor.Scope{{Tenant: "a", Workspace: "*"}}}
	userB = actor.Security{Principal: actor.Principal{ID: "bob", Type: actor.PrincipalUser},
		Scopes: []actor.Scope{{Tenant: "b", Workspace: "w"}}}
)

func addr(typ, id string) actor.Address {
	return actor.Address{Tenant: "a", Workspace: "w", ActorType: typ, EntityID: id}
}

func cmd(a actor.Address, verb, key string, payload any) actor.Command {
	var p []byte
	switch v := payload.(type) {
	case nil:
		p = []byte("{}")
	case string:
		p = []byte(v)
	default:
		p = actor.MustJSON(v)
	}
	return actor.Command{ID: "c-" + key, Type: actor.CommandType(a.ActorType, verb), Address: a,
		Payload: p, IdempotencyKey: key, Security: userA}
}

func withVersion(c actor.Command, v uint64) actor.Command { c.ExpectedVersion = &v; return c }

func encodeResults(t testing.TB, rs []actor.Result) [][]byte {
	out := make([][]byte, len(rs))
	for i := range rs {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(recordv1.FromResult(&rs[i]))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

func TestPromise_ExactlyOnce_DuplicateReturnsOriginalResult(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	c1 := addr("counter", "c1")
	first := r.apply(engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{cmd(c1, "add", "k1", map[string]int{"amount": 5})}})
	// The same key again from another submission (another command id), in
	// a later entry and within the same entry.
	other := func(c actor.Command) actor.Command { c.ID += "-other"; return c }
	again := r.apply(engine.Entry{Index: 2, At: 1001, Commands: []actor.Command{
		other(cmd(c1, "add", "k1", map[string]int{"amount": 5})),
		cmd(c1, "add", "k2", map[string]int{"amount": 1}),
		other(cmd(c1, "add", "k2", map[string]int{"amount": 1})),
	}})
	if first[0].Status != actor.StatusAccepted || first[0].Version != 1 {
		t.Fatalf("first: %+v", first[0])
	}
	for i, dup := range []actor.Result{again[0], again[2]} {
		if !dup.Duplicate {
			t.Fatalf("dup %d not flagged: %+v", i, dup)
		}
	}
	orig, dup := first[0], again[0]
	dup.Duplicate = false
	if a, b := encodeResults(t, []actor.Result{orig}), encodeResults(t, []actor.Result{dup}); !bytes.Equal(a[0], b[0]) {
		t.Fatalf("duplicate result differs from the original:\n%+v\n%+v", orig, dup)
	}
	ent, _ := r.store.Entity(c1)
	if ent.Version != 2 || !bytes.Contains(ent.State, []byte(`"value":6`)) {
		t.Fatalf("state after duplicates: v%d %s (want v2 value 6)", ent.Version, ent.State)
	}
	if n := len(r.history(c1, true)); n != 2 {
		t.Fatalf("history has %d records, want 2 events", n)
	}
}

// spy records whether Decide ran.
type spy struct {
	actor.Behavior
	calls *int
}

func (s spy) Decide(ctx *actor.Context, st []byte, c *actor.Command) ([]actor.NewEvent, error) {
	*s.calls++
	return s.Behavior.Decide(ctx, st, c)
}

func TestPromise_OCC_StaleVersionIsConflictAndActorNotCalled(t *testing.T) {
	calls := 0
	b, _ := builtin.Registry().Lookup("counter")
	reg, err := actor.NewRegistry(spy{Behavior: b, calls: &calls})
	if err != nil {
		t.Fatal(err)
	}
	r := newReplica(t, reg)
	c1 := addr("counter", "c1")
	r.apply(engine.Entry{Index: 1, At: 10, Commands: []actor.Command{
		withVersion(cmd(c1, "add", "k1", map[string]int{"amount": 1}), 0),
		withVersion(cmd(c1, "add", "k2", map[string]int{"amount": 1}), 1),
	}})
	if calls != 2 {
		t.Fatalf("actor called %d times, want 2", calls)
	}
	res := r.apply(engine.Entry{Index: 2, At: 11, Commands: []actor.Command{
		withVersion(cmd(c1, "add", "k3", map[string]int{"amount": 1}), 1),
	}})
	if calls != 2 {
		t.Fatal("actor was called for a stale expected_version")
	}
	got := res[0]
	if got.Status != actor.StatusRejected || got.Reason != actor.ReasonConflict || got.Version != 2 {
		t.Fatalf("want conflict at version 2, got %+v", got)
	}
	recs := r.history(c1, true)
	last := recs[len(recs)-1]
	if last.Kind != engine.HistoryRejection {
		t.Fatalf("conflict not in audit history: %+v", recs)
	}
	var rj recordv1.Rejection
	if err := proto.Unmarshal(last.Data, &rj); err != nil {
		t.Fatal(err)
	}
	if rj.Reason != recordv1.Reason_REASON_CONFLICT || rj.GetExpectedVersion() != 1 || rj.ActualVersion != 2 || rj.GetPrincipal().GetId() != "alice" {
		t.Fatalf("audit record: %+v", &rj)
	}
	if n := len(r.history(c1, false)); n != 2 {
		t.Fatalf("events-only history has %d records, want 2", n)
	}
	// The retry of the conflicting key returns the conflict, not a new decision.
	again := r.apply(engine.Entry{Index: 3, At: 12, Commands: []actor.Command{
		withVersion(cmd(c1, "add", "k3", map[string]int{"amount": 1}), 2),
	}})
	if !again[0].Replay || again[0].Reason != actor.ReasonConflict {
		t.Fatalf("retry of a conflicted key: %+v", again[0])
	}
}

// Violations go to the offender's bounded audit stream, never into the
// victim's history: repeats of one key within a window update one record
// and its count, new records are rate-limited per principal, the stream keeps
// its latest AuditRecords, and the attacker's key does not poison the
// owner's use of it.
func TestPromise_Isolation_ViolationAuditedBoundedCoalesced(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	c1 := addr("counter", "c1")
	audit := engine.AuditAddress("bob", 7, 0)
	evil := func(key string) actor.Command {
		c := cmd(c1, "add", key, map[string]int{"amount": 100})
		c.Security = userB
		return c
	}
	idx := uint64(0)
	apply := func(at int64, cmds ...actor.Command) engine.Applied {
		idx++
		out, err := r.eng.Apply(&engine.Entry{Index: idx, At: at, Commands: cmds})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := apply(10, evil("k1"), evil("k1"), evil("k1"))
	if out.Results[0].Reason != actor.ReasonViolation || out.Violations != 3 || out.ViolationsCoalesced != 2 {
		t.Fatalf("cross-tenant commands: %+v", out)
	}
	if recs := r.history(c1, true); len(recs) != 0 {
		t.Fatalf("violations written into the victim's history: %d records", len(recs))
	}
	recs := r.history(audit, true)
	if len(recs) != 1 || recs[0].Kind != engine.HistoryRejection {
		t.Fatalf("audit stream: %+v", recs)
	}
	var rj recordv1.Rejection
	_ = proto.Unmarshal(recs[0].Data, &rj)
	if rj.Type != engine.ViolationEventType || rj.GetPrincipal().GetId() != "bob" || rj.GetAddress().GetEntityId() != "c1" ||
		!strings.Contains(rj.Message, "3 attempts") {
		t.Fatalf("audit record: %+v", &rj)
	}
	if ent, _ := r.store.Entity(c1); ent.Version != 0 {
		t.Fatalf("violation changed state: %+v", ent)
	}
	// A flood of distinct keys in one window: rate-limited.
	var flood []actor.Command
	for i := range 100 {
		flood = append(flood, evil(fmt.Sprintf("f%d", i)))
	}
	out = apply(20, flood...)
	if want := 100 - (engine.AuditNewPerWindow - 1); out.ViolationsSuppressed != want {
		t.Fatalf("suppressed %d of 100, want %d", out.ViolationsSuppressed, want)
	}
	if n := len(r.history(audit, true)); n != engine.AuditNewPerWindow {
		t.Fatalf("audit stream has %d records after the flood, want %d", n, engine.AuditNewPerWindow)
	}
	// Many windows: the stream keeps its latest AuditRecords.
	for w := int64(1); w <= 10; w++ {
		apply(w*engine.AuditWindowMs, flood[:30]...)
	}
	if n := len(r.history(audit, true)); n != engine.AuditRecords {
		t.Fatalf("audit stream has %d records after many windows, want %d", n, engine.AuditRecords)
	}
	// The attacker's key must not poison the owner's use of it.
	ok := apply(11*engine.AuditWindowMs, cmd(c1, "add", "k1", map[string]int{"amount": 1}))
	if ok.Results[0].Status != actor.StatusAccepted || ok.Results[0].Duplicate {
		t.Fatalf("owner's command after a violation with the same key: %+v", ok.Results[0])
	}
}

// courier sends a command into whatever tenant its payload names.
var courier = actor.Define(actor.Definition[struct{}]{
	Name: "courier",
	Commands: map[string]actor.Handler[struct{}]{
		"send": func(ctx *actor.Context, _ *struct{}, c *actor.Command) ([]actor.NewEvent, error) {
			var p struct{ Tenant string }
			if err := actor.DecodePayload(c, &p); err != nil {
				return nil, err
			}
			ctx.Send(actor.Address{Tenant: p.Tenant, ActorType: "counter", EntityID: "x"}, "cmd.counter.add", []byte(`{"amount":1}`))
			return []actor.NewEvent{{Name: "sent"}}, nil
		},
	},
	Apply: func(*struct{}, *actor.Event) error { return nil },
})

func TestPromise_Isolation_ActorCannotSendOutsideItsScope(t *testing.T) {
	reg, _ := actor.NewRegistry(append(builtin.All(), courier)...)
	r := newReplica(t, reg)
	a := addr("courier", "q")
	res := r.apply(engine.Entry{Index: 1, At: 10, Commands: []actor.Command{
		cmd(a, "send", "k1", `{"Tenant":"b"}`),
		cmd(a, "send", "k2", `{"Tenant":""}`),
	}})
	if res[0].Reason != actor.ReasonViolation {
		t.Fatalf("send into tenant b: %+v", res[0])
	}
	if res[1].Status != actor.StatusAccepted || res[1].Version != 1 {
		t.Fatalf("send within scope: %+v", res[1])
	}
	rows, err := r.store.Outbox(engine.Position{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	// The violation's audit record (published, not delivered), then one
	// event of the accepted command and its one Send.
	if len(rows) != 3 || rows[0].Data[0] != engine.OutboxRejection || rows[1].Data[0] != engine.OutboxEvent || rows[2].Data[0] != engine.OutboxCommand {
		t.Fatalf("outbox has %d rows, want a violation, an event and a command", len(rows))
	}
	var out recordv1.Command
	if err := proto.Unmarshal(rows[2].Data[1:], &out); err != nil {
		t.Fatal(err)
	}
	if out.Address.Tenant != "a" || out.Address.Workspace != "w" || out.IdempotencyKey == "" || out.CausationId != "c-k2" {
		t.Fatalf("outbox command: %+v", &out)
	}
}

func TestEngine_SkipsEntriesAppliedBeforeRestart(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	c1 := addr("counter", "c1")
	e1 := engine.Entry{Index: 5, At: 10, Commands: []actor.Command{cmd(c1, "add", "k1", map[string]int{"amount": 2})}}
	r.apply(e1)
	before := r.eng.Meta()
	r.restart()
	if r.eng.Meta() != before {
		t.Fatalf("meta after restart %+v, want %+v", r.eng.Meta(), before)
	}
	if res := r.apply(e1); res != nil {
		t.Fatalf("re-applied entry returned %+v", res)
	}
	ent, _ := r.store.Entity(c1)
	if ent.Version != 1 || r.eng.Meta() != before {
		t.Fatalf("re-apply changed state: %+v", ent)
	}
}

func TestEngine_LogicalTimeNeverGoesBack(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	c1 := addr("counter", "c1")
	r.apply(engine.Entry{Index: 1, At: 5000, Commands: []actor.Command{cmd(c1, "add", "k1", map[string]int{"amount": 1})}})
	res := r.apply(engine.Entry{Index: 2, At: 4000, Commands: []actor.Command{cmd(c1, "add", "k2", map[string]int{"amount": 1})}})
	if res[0].Events[0].At != 5000 {
		t.Fatalf("event at %d after a leader stamped an earlier time; want 5000", res[0].Events[0].At)
	}
}

func TestEngine_InvalidCommandsLeaveNoTrace(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	c1 := addr("counter", "c1")
	bad := []actor.Command{
		cmd(c1, "add", "k1", `{"amount":"five"}`),                         // payload of the wrong type
		cmd(addr("nosuch", "x"), "add", "k2", nil),                        // unknown actor type
		cmd(c1, "explode", "k3", nil),                                     // unknown verb
		func() actor.Command { c := cmd(c1, "add", "", nil); return c }(), // no key
	}
	res := r.apply(engine.Entry{Index: 1, At: 1, Commands: bad})
	for i, got := range res {
		if got.Status != actor.StatusRejected || got.Reason != actor.ReasonInvalid || got.Message == "" {
			t.Errorf("bad command %d: %+v", i, got)
		}
	}
	if recs := r.history(c1, true); len(recs) != 0 {
		t.Fatalf("invalid commands left %d history records", len(recs))
	}
	// Nothing was deduplicated: a corrected command with the same key applies.
	ok := r.apply(engine.Entry{Index: 2, At: 2, Commands: []actor.Command{cmd(c1, "add", "k1", map[string]int{"amount": 5})}})
	if ok[0].Status != actor.StatusAccepted {
		t.Fatalf("corrected command: %+v", ok[0])
	}
}

func lockCmd(a actor.Address, verb, key, owner string, ttl int64) actor.Command {
	return cmd(a, verb, key, map[string]any{"owner": owner, "ttl_ms": ttl})
}

func TestPromise_Determinism_LockLeaseExpiresThroughTicksIdenticallyOnReplay(t *testing.T) {
	l := addr("lock", "L")
	log := []engine.Entry{
		{Index: 1, At: 1000, Commands: []actor.Command{lockCmd(l, "acquire", "k1", "w1", 500)}},
		{Index: 2, At: 1200}, // tick: not due
		{Index: 3, At: 1300, Commands: []actor.Command{lockCmd(l, "acquire", "k2", "w2", 500)}}, // denied
		{Index: 4, At: 1500}, // tick: due at 1500
		{Index: 5, At: 1501, Commands: []actor.Command{lockCmd(l, "acquire", "k3", "w2", 500)}}, // free now
	}
	var hashes [][32]byte
	var types [][]string
	for run := 0; run < 2; run++ {
		r := newReplica(t, builtin.Registry())
		var results [][]actor.Result
		for _, e := range log {
			results = append(results, r.apply(e))
		}
		if got := results[2][0]; got.Status != actor.StatusRejected || got.Code != "held" {
			t.Fatalf("acquire while held: %+v", got)
		}
		if got := results[4][0]; got.Status != actor.StatusAccepted {
			t.Fatalf("acquire after expiry: %+v", got)
		}
		var ts []string
		for _, rec := range r.history(l, false) {
			var ev recordv1.Event
			_ = proto.Unmarshal(rec.Data, &ev)
			ts = append(ts, fmt.Sprintf("%s@%d", ev.Type, ev.At))
		}
		types = append(types, ts)
		hashes = append(hashes, r.eng.Meta().Hash)
	}
	want := []string{"evt.lock.acquired@1000", "evt.lock.expired@1500", "evt.lock.acquired@1501"}
	if fmt.Sprint(types[0]) != fmt.Sprint(want) {
		t.Fatalf("lock history %v, want %v", types[0], want)
	}
	if fmt.Sprint(types[0]) != fmt.Sprint(types[1]) || hashes[0] != hashes[1] {
		t.Fatalf("replay differs: %v vs %v", types, hashes)
	}
}

func TestEngine_ActorPanicIsARejectionNotACrash(t *testing.T) {
	boom := actor.Define(actor.Definition[struct{}]{
		Name: "boom",
		Commands: map[string]actor.Handler[struct{}]{
			"go": func(*actor.Context, *struct{}, *actor.Command) ([]actor.NewEvent, error) { panic("kaboom") },
		},
		Apply: func(*struct{}, *actor.Event) error { return nil },
	})
	reg, _ := actor.NewRegistry(boom)
	r := newReplica(t, reg)
	res := r.apply(engine.Entry{Index: 1, At: 1, Commands: []actor.Command{cmd(addr("boom", "b"), "go", "k", nil)}})
	if res[0].Status != actor.StatusRejected || res[0].Code != "actor_panic" {
		t.Fatalf("panicking actor: %+v", res[0])
	}
}

func TestEngine_KVGetRepliesWithDocument(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	d := addr("kv", "doc1")
	res := r.apply(engine.Entry{Index: 1, At: 1, Commands: []actor.Command{
		cmd(d, "create", "k1", `{"doc":{"b":1,"a":{"x":true}}}`),
		cmd(d, "patch", "k2", `{"patch":{"a":{"y":2},"b":null}}`),
		cmd(d, "get", "k3", nil),
	}})
	var doc map[string]any
	if err := json.Unmarshal(res[2].Reply, &doc); err != nil {
		t.Fatalf("reply %q: %v", res[2].Reply, err)
	}
	if fmt.Sprint(doc) != "map[a:map[x:true y:2]]" {
		t.Fatalf("document after patch: %v", doc)
	}
}

// The relay's progress is part of the log: an entry with Relayed deletes the
// published rows on every replica, so outboxes and state hashes stay equal,
// and rows written after that position stay for the next leader's relay.
func TestEngine_RelayedDeletesPublishedOutboxRowsOnEveryReplica(t *testing.T) {
	a, b := newReplica(t, builtin.Registry()), newReplica(t, builtin.Registry())
	c1, c2 := addr("counter", "c1"), addr("counter", "c2")
	entries := []engine.Entry{
		{Index: 1, At: 10, Commands: []actor.Command{cmd(c1, "add", "k1", map[string]int{"amount": 1}), cmd(c2, "add", "k2", map[string]int{"amount": 1})}},
		{Index: 2, At: 11, Commands: []actor.Command{cmd(c1, "add", "k3", map[string]int{"amount": 1})}},
		{Index: 3, At: 12, Relayed: engine.Position{Index: 1, Ordinal: 2}, Commands: []actor.Command{cmd(c2, "add", "k4", map[string]int{"amount": 1})}},
	}
	for _, r := range []*replica{a, b} {
		for _, e := range entries {
			r.apply(e)
		}
	}
	if a.eng.Meta() != b.eng.Meta() {
		t.Fatalf("replicas diverged: %x vs %x", a.eng.Meta().Hash, b.eng.Meta().Hash)
	}
	rows, err := a.store.Outbox(engine.Position{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []engine.Position
	for _, r := range rows {
		if r.Data[0] != engine.OutboxEvent {
			t.Fatalf("row %v kind %q, want an event", r.Pos, r.Data[0])
		}
		got = append(got, r.Pos)
	}
	want := []engine.Position{{Index: 2, Ordinal: 1}, {Index: 3, Ordinal: 1}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outbox after relayed 1/2 = %v, want %v", got, want)
	}
	var ev recordv1.Event
	if err := proto.Unmarshal(rows[1].Data[1:], &ev); err != nil || ev.Address.EntityId != "c2" || ev.Version != 2 {
		t.Fatalf("outbox event = %v, %v", &ev, err)
	}

	// A second relay entry deletes from where the first ended; a replica
	// restarted in between (no hint in memory) scans from the start and
	// ends identical.
	e4 := engine.Entry{Index: 4, At: 13, Relayed: engine.Position{Index: 3, Ordinal: 1}, Commands: []actor.Command{cmd(c1, "add", "k5", map[string]int{"amount": 1})}}
	b.restart()
	a.apply(e4)
	b.apply(e4)
	if a.eng.Meta() != b.eng.Meta() {
		t.Fatalf("replicas diverged after the second relay entry")
	}
	for _, r := range []*replica{a, b} {
		rows, err := r.store.Outbox(engine.Position{}, 100)
		if err != nil || len(rows) != 1 || rows[0].Pos != (engine.Position{Index: 4, Ordinal: 1}) {
			t.Fatalf("outbox after relayed 3/1: %v, %v; want only the row of entry 4", rows, err)
		}
	}

	// A replica that skipped the relay entry would not match: the delete is in the hash.
	c := newReplica(t, builtin.Registry())
	c.apply(entries[0])
	c.apply(entries[1])
	e3 := entries[2]
	e3.Relayed = engine.Position{}
	c.apply(e3)
	if c.eng.Meta().Hash == a.eng.Meta().Hash {
		t.Fatal("state hash does not cover the relay's deletes")
	}
}

// A Send is delivered as a command the engine accepts: its sender is a valid
// principal even for the longest actor types and entity ids.
func TestEngine_SendsCarryAValidSenderPrincipal(t *testing.T) {
	reg, _ := actor.NewRegistry(append(builtin.All(), courier)...)
	r := newReplica(t, reg)
	long := strings.Repeat("x", actor.MaxIDLen)
	for i, id := range []string{"q", long} {
		r.apply(engine.Entry{Index: uint64(i + 1), At: 10, Commands: []actor.Command{cmd(addr("courier", id), "send", "k", `{"Tenant":""}`)}})
	}
	rows, err := r.store.Outbox(engine.Position{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, row := range rows {
		if row.Data[0] != engine.OutboxCommand {
			continue
		}
		var c recordv1.Command
		if err := proto.Unmarshal(row.Data[1:], &c); err != nil {
			t.Fatal(err)
		}
		ac := c.ToActor()
		if err := ac.Validate(); err != nil {
			t.Fatalf("outbox command from %s is invalid: %v", ac.Security.Principal.ID, err)
		}
		seen[ac.Security.Principal.ID] = true
	}
	if len(seen) != 2 || !seen["actor:courier:q"] {
		t.Fatalf("senders %v, want actor:courier:q and a distinct shortened one", seen)
	}
}
