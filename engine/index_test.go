package engine_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
)

// scan reads one index of the replica's store: "id" or "id=value" per entry.
func (r *replica) scan(q actor.IndexQuery) ([]string, uint64) {
	r.t.Helper()
	if q.Limit == 0 {
		q.Limit = 1000
	}
	var out []string
	add := func(id string, v []byte) {
		if v == nil {
			out = append(out, id)
			return
		}
		j, err := actor.DecodeIndexValue(v)
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, id+"="+string(j))
	}
	if r.mem != nil {
		items, n, _, err := r.mem.ScanIndex(q)
		if err != nil {
			r.t.Fatal(err)
		}
		for _, it := range items {
			add(it.ID, it.Value)
		}
		return out, n
	}
	items, n, _, err := r.store.ScanIndex(q)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, it := range items {
		add(it.ID, it.Value)
	}
	return out, n
}

func userRegistry(t *testing.T) *actor.Registry {
	t.Helper()
	reg, err := builtin.RegistryWith([]builtin.DocumentSpec{{Name: "user", Indexes: []string{"email", "age"}}})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestEngine_DocumentIndexesFollowWrites: create, update, patch and delete
// keep the list and the field indexes equal to the documents, in the same
// entry, on Badger and on memstore alike, and a restart keeps them.
func TestEngine_DocumentIndexesFollowWrites(t *testing.T) {
	for _, kind := range []string{"badger", "memstore"} {
		t.Run(kind, func(t *testing.T) {
			reg := userRegistry(t)
			r := newReplica(t, reg)
			if kind == "memstore" {
				r = newMemReplica(t, reg)
			}
			list := actor.IndexQuery{Tenant: "a", Workspace: "w", ActorType: "user"}
			byAge := list
			byAge.Field = "age"
			byEmail := list
			byEmail.Field = "email"
			doc := func(email string, age int) map[string]any {
				return map[string]any{"doc": map[string]any{"email": email, "age": age, "nested": map[string]int{"x": 1}}}
			}
			idx := uint64(0)
			step := func(cmds ...actor.Command) {
				idx++
				for _, res := range r.apply(engine.Entry{Index: idx, At: int64(idx) * 1000, Commands: cmds}) {
					if res.Status != actor.StatusAccepted {
						t.Fatalf("entry %d: %+v", idx, res)
					}
				}
			}
			step(cmd(addr("user", "u2"), "create", "1", doc("b@x", 40)),
				cmd(addr("user", "u1"), "create", "2", doc("a@x", 30)),
				cmd(addr("user", "u3"), "create", "3", doc("c@x", 30)))
			// another type, tenant and workspace stay out of the scope
			other := actor.Address{Tenant: "b", Workspace: "w", ActorType: "user", EntityID: "u0"}
			oc := cmd(other, "create", "4", doc("z@x", 1))
			oc.Security = userB
			step(oc, cmd(addr("kv", "u0"), "create", "5", doc("k@x", 2)))

			if got, n := r.scan(list); !slices.Equal(got, []string{"u1", "u2", "u3"}) || n != 3 {
				t.Fatalf("list = %v (count %d)", got, n)
			}
			if got, _ := r.scan(byAge); !slices.Equal(got, []string{"u1=30", "u3=30", "u2=40"}) {
				t.Fatalf("by age = %v", got)
			}
			// update moves u1's email; patch removes u3's age; delete drops u2
			step(cmd(addr("user", "u1"), "update", "6", doc("d@x", 30)),
				cmd(addr("user", "u3"), "patch", "7", map[string]any{"patch": map[string]any{"age": nil}}),
				cmd(addr("user", "u2"), "delete", "8", nil))
			check := func() {
				if got, n := r.scan(list); !slices.Equal(got, []string{"u1", "u3"}) || n != 2 {
					t.Fatalf("list after writes = %v (count %d)", got, n)
				}
				if got, _ := r.scan(byAge); !slices.Equal(got, []string{"u1=30"}) {
					t.Fatalf("by age after writes = %v", got)
				}
				if got, _ := r.scan(byEmail); !slices.Equal(got, []string{`u3="c@x"`, `u1="d@x"`}) {
					t.Fatalf("by email after writes = %v", got)
				}
			}
			check()
			r.restart()
			check()
			// recreate after delete, and two writes of one entity in one entry
			step(cmd(addr("user", "u2"), "create", "9", doc("e@x", 50)),
				cmd(addr("user", "u2"), "patch", "10", map[string]any{"patch": map[string]any{"age": 51}}))
			if got, _ := r.scan(byAge); !slices.Equal(got, []string{"u1=30", "u2=51"}) {
				t.Fatalf("by age after recreate = %v", got)
			}
			// range: age >= 31, and a page after the first entry
			ge := byAge
			ge.Lo, _ = actor.EncodeIndexValue(json.RawMessage("31"))
			if got, n := r.scan(ge); !slices.Equal(got, []string{"u2=51"}) || n != 1 {
				t.Fatalf("age >= 31 = %v (count %d)", got, n)
			}
			v30, _ := actor.EncodeIndexValue(json.RawMessage("30"))
			page := byAge
			page.After = actor.IndexTail(v30, "u1")
			if got, n := r.scan(page); !slices.Equal(got, []string{"u2=51"}) || n != 2 {
				t.Fatalf("page after u1 = %v (count %d)", got, n)
			}
			kv := list
			kv.ActorType = "kv"
			if got, _ := r.scan(kv); !slices.Equal(got, []string{"u0"}) {
				t.Fatalf("kv list = %v", got)
			}
		})
	}
}

// TestEngine_IndexesDoNotChangeTheStateHash: indexes are derived from the
// states, so a kv log hashes alike with and without declared document types.
func TestEngine_IndexesDoNotChangeTheStateHash(t *testing.T) {
	a, b := newMemReplica(t, builtin.Registry()), newReplica(t, userRegistry(t))
	for i := range 5 {
		c := cmd(addr("kv", fmt.Sprint("d", i)), "create", fmt.Sprint("k", i), map[string]any{"doc": map[string]int{"n": i}})
		e := engine.Entry{Index: uint64(i + 1), At: int64(i+1) * 1000, Commands: []actor.Command{c}}
		a.apply(e)
		b.apply(e)
	}
	if a.eng.Meta().Hash != b.eng.Meta().Hash {
		t.Fatal("state hash differs")
	}
}

// TestStore_EnsureIndexesRebuildsForANewDeclaration: documents written
// while user had no index get one when the node starts declaring age (the
// store rebuilds its indexes from the states), and a second start with the
// same declaration rebuilds nothing.
func TestStore_EnsureIndexesRebuildsForANewDeclaration(t *testing.T) {
	plain, err := builtin.RegistryWith([]builtin.DocumentSpec{{Name: "user"}})
	if err != nil {
		t.Fatal(err)
	}
	r := newReplica(t, plain)
	for i, age := range []int{40, 30, 35} {
		c := cmd(addr("user", fmt.Sprint("u", i)), "create", fmt.Sprint("k", i), map[string]any{"doc": map[string]int{"age": age}})
		r.apply(engine.Entry{Index: uint64(i + 1), At: int64(i+1) * 1000, Commands: []actor.Command{c}})
	}
	if rebuilt, err := r.store.EnsureIndexes(plain); err != nil || !rebuilt {
		t.Fatalf("first declaration: rebuilt %v, %v", rebuilt, err)
	}
	byAge := actor.IndexQuery{Tenant: "a", Workspace: "w", ActorType: "user", Field: "age"}
	if got, _ := r.scan(byAge); len(got) != 0 {
		t.Fatalf("age index without a declaration: %v", got)
	}
	r.reg = userRegistry(t)
	r.restart()
	if rebuilt, err := r.store.EnsureIndexes(r.reg); err != nil || !rebuilt {
		t.Fatalf("new declaration: rebuilt %v, %v", rebuilt, err)
	}
	if got, _ := r.scan(byAge); !slices.Equal(got, []string{"u1=30", "u2=35", "u0=40"}) {
		t.Fatalf("age index after rebuild: %v", got)
	}
	list := byAge
	list.Field = actor.ListField
	if got, n := r.scan(list); !slices.Equal(got, []string{"u0", "u1", "u2"}) || n != 3 {
		t.Fatalf("list after rebuild: %v", got)
	}
	if rebuilt, err := r.store.EnsureIndexes(r.reg); err != nil || rebuilt {
		t.Fatalf("same declaration again: rebuilt %v, %v", rebuilt, err)
	}
	// Writes after the rebuild keep the rebuilt index right.
	r.apply(engine.Entry{Index: 4, At: 4000, Commands: []actor.Command{cmd(addr("user", "u1"), "delete", "k9", nil)}})
	if got, _ := r.scan(byAge); !slices.Equal(got, []string{"u2=35", "u0=40"}) {
		t.Fatalf("age index after a delete: %v", got)
	}
}
