package engine_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/upgradetest"
	"github.com/rhizon/rhizon/engine"
)

func upgradeRegistry(t testing.TB, spec string) *actor.Registry {
	t.Helper()
	reg, err := actor.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	if err := upgradetest.Register(reg, spec); err != nil {
		t.Fatal(err)
	}
	return reg
}

func addedBy(t testing.TB, r actor.Result) upgradetest.Added {
	t.Helper()
	if r.Status != actor.StatusAccepted || len(r.Events) != 1 {
		t.Fatalf("result %+v, want accepted with one event", r)
	}
	var a upgradetest.Added
	if err := json.Unmarshal(r.Events[0].Payload, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// mixedLog is a history across a switch-over: entries 1-2 carry no revision
// (written before revisions existed: the base, 1), 3 names revision 1, 4-5
// revision 2.
func mixedLog() []engine.Entry {
	a := addr(upgradetest.Type, "e1")
	add := func(key string) []actor.Command {
		return []actor.Command{cmd(a, "add", key, map[string]int{"amount": 5})}
	}
	r1, r2 := map[string]string{"upgrade": "1"}, map[string]string{"upgrade": "2"}
	return []engine.Entry{
		{Index: 1, At: 100, Commands: add("k1")},
		{Index: 2, At: 101, Commands: add("k2")},
		{Index: 3, At: 102, Commands: add("k3"), Revisions: r1},
		{Index: 4, At: 103, Commands: add("k4"), Revisions: r2},
		{Index: 5, At: 104, Commands: add("k5"), Revisions: r2},
	}
}

// Each entry is decided by the revision it records, and an entry without one
// by the base revision: a replay of mixed history reaches the same state
// hash as the replica that applied it live.
func TestEngine_MixedRevisionHistoryReplaysIdentically(t *testing.T) {
	live := newReplica(t, upgradeRegistry(t, "upgrade@1,2"))
	var by []string
	var total int64
	for _, ent := range mixedLog() {
		rs := live.apply(ent)
		a := addedBy(t, rs[0])
		by, total = append(by, a.By), a.Total
	}
	if want := []string{"1", "1", "1", "2", "2"}; !equalStrings(by, want) {
		t.Fatalf("decided by %v, want %v", by, want)
	}
	if total != 5+5+5+10+10 {
		t.Fatalf("total %d, want 35", total)
	}
	replay := newMemReplica(t, upgradeRegistry(t, "upgrade@1,2"))
	for _, ent := range mixedLog() {
		replay.apply(ent)
	}
	if live.eng.Meta() != replay.eng.Meta() {
		t.Fatalf("replay meta %+v, live %+v", replay.eng.Meta(), live.eng.Meta())
	}
}

// A node without the revision an entry names refuses it whole, writing
// nothing, and applies it (to the same state as a node that always had the
// revision) once it runs with a registry that has it.
func TestEngine_MissingRevisionRefusesEntryAndResumesWithIt(t *testing.T) {
	ref := newMemReplica(t, upgradeRegistry(t, "upgrade@1,2"))
	old := newReplica(t, upgradeRegistry(t, "upgrade@1"))
	log := mixedLog()
	for _, ent := range log[:3] {
		ref.apply(ent)
		old.apply(ent)
	}
	before := old.eng.Meta()
	ent := log[3]
	_, err := old.eng.Apply(&ent)
	var mr *engine.MissingRevisionError
	if !errors.Is(err, engine.ErrMissingRevision) || !errors.As(err, &mr) {
		t.Fatalf("apply of a revision-2 entry on a revision-1 node: %v, want ErrMissingRevision", err)
	}
	if mr.ActorType != "upgrade" || mr.Revision != "2" || mr.Index != 4 {
		t.Fatalf("missing %+v", mr)
	}
	if want := "shard 7 needs revision 2 of actor upgrade"; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Fatalf("message %q, want it to start with %q", err, want)
	}
	if old.eng.Meta() != before {
		t.Fatalf("refused entry moved the meta: %+v -> %+v", before, old.eng.Meta())
	}
	old.restart()
	if old.eng.Meta() != before {
		t.Fatalf("refused entry reached the store: %+v -> %+v", before, old.eng.Meta())
	}
	// The "new binary": same store, a registry with revision 2.
	old.reg = upgradeRegistry(t, "upgrade@1,2")
	old.restart()
	for _, ent := range log[3:] {
		old.apply(ent)
		ref.apply(ent)
	}
	if old.eng.Meta() != ref.eng.Meta() {
		t.Fatalf("after resuming: meta %+v, reference %+v", old.eng.Meta(), ref.eng.Meta())
	}
}

func TestRegistry_RevisionsAreAdditive(t *testing.T) {
	reg := upgradeRegistry(t, "upgrade@1,2")
	if b, ok := reg.Lookup("upgrade"); !ok || actor.Revision(b) != "1" {
		t.Fatalf("Lookup gives %v, want the base revision 1", b)
	}
	if b, ok := reg.LookupRevision("upgrade", "2"); !ok || actor.Revision(b) != "2" {
		t.Fatal("revision 2 missing")
	}
	if _, ok := reg.LookupRevision("upgrade", "3"); ok {
		t.Fatal("revision 3 found")
	}
	if got := reg.Revisions("upgrade"); !equalStrings(got, []string{"1", "2"}) {
		t.Fatalf("Revisions %v", got)
	}
	b, _ := upgradetest.Behavior("2")
	if err := reg.AddRevision(b); err == nil {
		t.Fatal("a revision registered twice was accepted")
	}
	if err := reg.Register(b); err == nil {
		t.Fatal("Register of an existing type was accepted")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
