package engine_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
)

// History sweeps delete a tenant's history records older than its window
// and at or below the sweep's Through (the leader's snapshot index), alike
// on Badger and the in-memory store with equal state hashes; each trimmed
// entity gets a trim mark; other tenants, young records and records past
// Through stay; a restart and a second pass change nothing more.
func TestHistoryRetention_SweepTrimsAlike(t *testing.T) {
	reg := builtin.Registry()
	bad, mem := newReplica(t, reg), newMemReplica(t, reg)
	both := func(ent engine.Entry) engine.Applied {
		t.Helper()
		out, err := bad.eng.Apply(&ent)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mem.eng.Apply(&ent); err != nil {
			t.Fatal(err)
		}
		if bad.eng.Meta().Hash != mem.eng.Meta().Hash {
			t.Fatalf("entry %d: state hashes differ", ent.Index)
		}
		return out
	}
	hist := map[string]int64{"a": 2000}
	other := actor.Address{Tenant: "b", Workspace: "w", ActorType: "counter", EntityID: "x"}
	add := func(a actor.Address, key string) actor.Command {
		c := cmd(a, "add", key, map[string]int{"amount": 1})
		if a.Tenant == "b" {
			c.Security = userB
		}
		return c
	}
	var cmds []actor.Command
	for i := range 5 {
		cmds = append(cmds, add(addr("counter", fmt.Sprint("e", i)), fmt.Sprint("k1-", i)))
	}
	cmds = append(cmds, add(other, "b1"))
	both(engine.Entry{Index: 1, At: 1000, HistoryRetention: hist, Commands: cmds})
	cmds = nil
	for i := range 5 {
		cmds = append(cmds, add(addr("counter", fmt.Sprint("e", i)), fmt.Sprint("k2-", i)))
	}
	both(engine.Entry{Index: 2, At: 1500, HistoryRetention: hist, Commands: cmds})
	both(engine.Entry{Index: 3, At: 5000, HistoryRetention: hist, Commands: []actor.Command{add(addr("counter", "e0"), "k3")}})

	pass := func(idx uint64, through uint64) (uint64, int) {
		swept := 0
		var from []byte
		for {
			next, err := bad.store.HistoryKeyAfter(from, 3)
			if err != nil {
				t.Fatal(err)
			}
			idx++
			out := both(engine.Entry{Index: idx, At: 5000, HistoryRetention: hist,
				HistorySweep: &engine.HistorySweep{From: from, Limit: 3, Through: through}})
			swept += out.HistorySwept
			if next == nil {
				return idx, swept
			}
			from = next
		}
	}
	// Through 1: the records of entry 2 are old enough but not yet
	// snapshotted by the leader, so they stay.
	idx, swept := pass(3, 1)
	if swept != 5 {
		t.Fatalf("through 1: swept %d, want the 5 records of entry 1", swept)
	}
	for i := range 5 {
		a := addr("counter", fmt.Sprint("e", i))
		recs, _, _, err := bad.store.History(a, engine.Position{}, 100, true)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 || recs[0].Pos.Index != 2 {
			t.Fatalf("%s: history %+v, want it to start at entry 2", a, recs)
		}
		for _, tr := range []func(actor.Address) (engine.Position, error){bad.store.HistoryTrimmed, mem.mem.HistoryTrimmed} {
			if p, _ := tr(a); p.Index != 1 {
				t.Fatalf("%s: trim mark %+v, want entry 1", a, p)
			}
		}
	}
	if p, _ := bad.store.HistoryTrimmed(other); p != (engine.Position{}) {
		t.Fatalf("tenant b has no window but got trim mark %+v", p)
	}
	if recs, _, _, _ := bad.store.History(other, engine.Position{}, 100, true); len(recs) != 1 {
		t.Fatalf("tenant b history %+v, want its one record", recs)
	}
	bad.restart()
	idx, swept = pass(idx, 3)
	if swept != 5 {
		t.Fatalf("through 3: swept %d, want the 5 records of entry 2 (entry 3 is young)", swept)
	}
	if recs := mem.mem.History(addr("counter", "e0"), engine.Position{}, 0, true); len(recs) != 1 || recs[0].Pos.Index != 3 {
		t.Fatalf("e0 history %+v, want only entry 3's record", recs)
	}
	if p, _ := bad.store.HistoryTrimmed(addr("counter", "e0")); p.Index != 2 {
		t.Fatalf("e0 trim mark %+v, want entry 2", p)
	}
	if idx, swept = pass(idx, 3); swept != 0 {
		t.Fatalf("a second pass swept %d", swept)
	}

	// The swept commands' results still hold their events (Badger stores a
	// result as references to its events' records, and a sweep writes it
	// out in full first): resubmitted, they get the original results, alike
	// on both stores.
	again := engine.Entry{Index: idx + 1, At: 5000, HistoryRetention: hist,
		Commands: []actor.Command{add(addr("counter", "e1"), "k1-1"), add(addr("counter", "e1"), "k2-1")}}
	outB, err := bad.eng.Apply(&again)
	if err != nil {
		t.Fatal(err)
	}
	outM, err := mem.eng.Apply(&again)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range outB.Results {
		if !r.Duplicate && !r.Replay || len(r.Events) != 1 || r.Events[0].Index != uint64(i+1) {
			t.Fatalf("resubmitted %s: %+v, want the original result with its event of entry %d", again.Commands[i].IdempotencyKey, r, i+1)
		}
		if !reflect.DeepEqual(r, outM.Results[i]) {
			t.Fatalf("resubmitted %s: Badger %+v, memstore %+v", again.Commands[i].IdempotencyKey, r, outM.Results[i])
		}
	}
	if bad.eng.Meta().Hash != mem.eng.Meta().Hash {
		t.Fatal("state hashes differ after the resubmissions")
	}
}
