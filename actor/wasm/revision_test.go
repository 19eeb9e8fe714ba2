package wasm_test

import (
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/wasm"
	"github.com/rhizon/rhizon/engine"
)

// TestRevisionRollout: a WASM type with two revisions (two modules) on three
// replicas, a log of full entries that switches from revision 1 to 2 half
// way (entries record the revision they were decided with, as the shard
// leader stamps them after rhizon actor activate), one replica joining with
// fresh instances after the switch and a memstore replay of the whole log:
// every replica and the replay reach the same hash, and the commands after
// the switch were decided by revision 2.
func TestRevisionRollout(t *testing.T) {
	v1, v2 := counterModule(t), buildModule(t, "./testdata/counter2")
	reg := func() *actor.Registry {
		r := registry(t)
		for _, b := range []actor.Behavior{load(t, "wc", v1, wasm.Config{}), loadRev(t, "wc", "3", v2)} {
			if err := r.AddRevision(b); err != nil {
				t.Fatal(err)
			}
		}
		return r
	}
	rs := []*replica{newReplica(t, reg(), true), newReplica(t, reg(), true), newReplica(t, reg(), true)}
	var log []engine.Entry
	n := 0
	for i := range 10 {
		e := engine.Entry{Index: uint64(i + 1), At: int64(1000 + i)}
		if i >= 5 {
			e.Revisions = map[string]string{"wc": "3"}
		}
		for j := range 64 {
			n++
			e.Commands = append(e.Commands, cmd("wc", fmt.Sprint("e", j%16), "add", `{"amount":1}`, n))
		}
		log = append(log, e)
	}
	for i, e := range log {
		if i == 7 {
			// A replica whose node restarted: new Behaviors over its store.
			eng, err := engine.New(3, reg(), rs[2].db.Shard(3))
			if err != nil {
				t.Fatal(err)
			}
			rs[2] = &replica{eng: eng, db: rs[2].db}
		}
		var first string
		for k, r := range rs {
			res := r.apply(t, e)
			if i == 9 && k == 0 {
				if got := string(res[63].Events[0].Payload); got != `{"amount":2,"value":60}` {
					// per entity: 5 entries x 4 adds of 1, then 5 x 4 adds of 2
					t.Fatalf("last event %s", got)
				}
			}
			got := fmt.Sprintf("%+v", res)
			if k == 0 {
				first = got
			} else if got != first {
				t.Fatalf("entry %d: replica %d differs", e.Index, k)
			}
		}
	}
	replayed := newReplica(t, reg(), false)
	for _, e := range log {
		replayed.apply(t, e)
	}
	for k, r := range append(rs[1:], replayed) {
		if r.eng.Meta().Hash != rs[0].eng.Meta().Hash {
			t.Fatalf("replica %d hash %x, replica 0 %x", k+1, r.eng.Meta().Hash, rs[0].eng.Meta().Hash)
		}
	}
}
