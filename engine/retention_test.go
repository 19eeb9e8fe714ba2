package engine_test

import (
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
)

// A resent key within the tenant's window is a duplicate; past the window
// (by the entries' logical time, never a clock) it is a new submission. A
// tenant without a window keeps its records forever.
func TestRetention_IdempotencyWindowByLogicalTime(t *testing.T) {
	for _, mem := range []bool{false, true} {
		t.Run(fmt.Sprint("mem=", mem), func(t *testing.T) {
			r := newReplica(t, builtin.Registry())
			if mem {
				r = newMemReplica(t, builtin.Registry())
			}
			win := map[string]int64{"a": 5000}
			c := addr("counter", "c1")
			send := func(idx uint64, at int64, id string, ret map[string]int64) actor.Result {
				cm := cmd(c, "add", "k1", map[string]int{"amount": 1})
				cm.ID = id
				return r.apply(engine.Entry{Index: idx, At: at, Retention: ret, Commands: []actor.Command{cm}})[0]
			}
			if res := send(1, 1000, "x1", win); res.Status != actor.StatusAccepted || res.Version != 1 {
				t.Fatalf("first: %+v", res)
			}
			if res := send(2, 5999, "x2", win); !res.Duplicate || res.Version != 1 {
				t.Fatalf("inside the window: want the original result, got %+v", res)
			}
			if res := send(3, 6000, "x3", win); res.Duplicate || res.Status != actor.StatusAccepted || res.Version != 2 {
				t.Fatalf("past the window: want a new submission, got %+v", res)
			}
			// The same log without a window: the record written at 6000
			// carries its time but no window applies, so it stays.
			if res := send(4, 100000, "x4", nil); !res.Duplicate || res.Version != 2 {
				t.Fatalf("no window: want the original result, got %+v", res)
			}
		})
	}
}

// Results written before any window applied carry no time and never expire.
func TestRetention_UnstampedResultsKept(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	c := addr("counter", "c1")
	r.apply(engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{cmd(c, "add", "k1", map[string]int{"amount": 1})}})
	cm := cmd(c, "add", "k1", map[string]int{"amount": 1})
	cm.ID = "other"
	res := r.apply(engine.Entry{Index: 2, At: 1 << 40, Retention: map[string]int64{"a": 1}, Commands: []actor.Command{cm}})[0]
	if !res.Duplicate {
		t.Fatalf("want duplicate, got %+v", res)
	}
}

// Sweep entries delete expired records, slice by slice, alike on the Badger
// store and the in-memory one (replay's), with equal state hashes; records
// of tenants without a window and young records stay.
func TestRetention_SweepDeletesExpiredAlike(t *testing.T) {
	reg := builtin.Registry()
	bad, mem := newReplica(t, reg), newMemReplica(t, reg)
	both := func(ent engine.Entry) {
		t.Helper()
		bad.apply(ent)
		mem.apply(ent)
		if bad.eng.Meta().Hash != mem.eng.Meta().Hash {
			t.Fatalf("entry %d: state hashes differ", ent.Index)
		}
	}
	win := map[string]int64{"a": 1000}
	idx := uint64(0)
	var cmds []actor.Command
	for i := range 50 {
		cmds = append(cmds, cmd(addr("counter", fmt.Sprint("e", i%7)), "add", fmt.Sprint("old-", i), map[string]int{"amount": 1}))
	}
	// Tenant b has no window: its record stays.
	other := actor.Address{Tenant: "b", Workspace: "w", ActorType: "counter", EntityID: "x"}
	ob := cmd(other, "add", "kb", map[string]int{"amount": 1})
	ob.Security = userB
	cmds = append(cmds, ob)
	idx++
	both(engine.Entry{Index: idx, At: 1000, Retention: win, Commands: cmds})
	idx++
	both(engine.Entry{Index: idx, At: 1500, Retention: win, Commands: []actor.Command{cmd(addr("counter", "young"), "add", "young", map[string]int{"amount": 1})}})

	// Sweep in slices of 8 rows, following the cursor a leader would.
	from := []byte(nil)
	swept := 0
	for {
		next, err := bad.store.ResultKeyAfter(from, 8)
		if err != nil {
			t.Fatal(err)
		}
		idx++
		ent := engine.Entry{Index: idx, At: 2200, Retention: win, Sweep: &engine.Sweep{From: from, Limit: 8}}
		out, err := bad.eng.Apply(&ent)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mem.eng.Apply(&ent); err != nil {
			t.Fatal(err)
		}
		if bad.eng.Meta().Hash != mem.eng.Meta().Hash {
			t.Fatalf("sweep entry %d: state hashes differ", idx)
		}
		swept += out.ResultsSwept
		if next == nil {
			break
		}
		from = next
	}
	if swept != 50 {
		t.Fatalf("swept %d records, want the 50 expired ones", swept)
	}
	for i := range 50 {
		if _, ok, _ := bad.store.Result(addr("counter", fmt.Sprint("e", i%7)), fmt.Sprint("old-", i)); ok {
			t.Fatalf("record old-%d survived the sweep", i)
		}
	}
	for _, k := range []struct {
		a   actor.Address
		key string
	}{{addr("counter", "young"), "young"}, {other, "kb"}} {
		if _, ok, _ := bad.store.Result(k.a, k.key); !ok {
			t.Fatalf("record %s was swept", k.key)
		}
		if _, ok, _ := mem.mem.Result(k.a, k.key); !ok {
			t.Fatalf("memstore: record %s was swept", k.key)
		}
	}
	// A restart re-reads the same state; a second pass deletes nothing.
	bad.restart()
	idx++
	out, err := bad.eng.Apply(&engine.Entry{Index: idx, At: 2300, Retention: win, Sweep: &engine.Sweep{Limit: 4096}})
	if err != nil || out.ResultsSwept != 0 {
		t.Fatalf("second pass: swept %d, err %v", out.ResultsSwept, err)
	}
}
