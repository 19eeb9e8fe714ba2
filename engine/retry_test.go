package engine_test

import (
	"bytes"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
)

// TestPromise_ExactlyOnce_SameCommandIDIsAReplayNotADuplicate: a command that
// comes back with the idempotency key AND the command id it was applied under
// is another attempt of the same submission (a forward retried after a lost
// answer, a leader change, a redelivery): it gets the original result as a
// normal answer. A different command id under the same key is another
// submission: duplicate, with the original result. Rejections stored under a
// key behave the same way.
func TestPromise_ExactlyOnce_SameCommandIDIsAReplayNotADuplicate(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	c1 := addr("counter", "c1")
	first := r.apply(engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{
		cmd(c1, "add", "k1", map[string]int{"amount": 5}),
		withVersion(cmd(c1, "add", "k2", map[string]int{"amount": 1}), 7), // conflict, stored
	}})
	if first[0].Status != actor.StatusAccepted || first[0].Version != 1 || first[1].Reason != actor.ReasonConflict {
		t.Fatalf("first: %+v", first)
	}

	other := func(c actor.Command) actor.Command { c.ID = "someone-else"; return c }
	// A later entry, and the same entry after the original (a.results path).
	again := r.apply(engine.Entry{Index: 2, At: 1001, Commands: []actor.Command{
		cmd(c1, "add", "k1", map[string]int{"amount": 5}),
		other(cmd(c1, "add", "k1", map[string]int{"amount": 5})),
		withVersion(cmd(c1, "add", "k2", map[string]int{"amount": 1}), 7),
		other(withVersion(cmd(c1, "add", "k2", map[string]int{"amount": 1}), 7)),
		cmd(c1, "add", "k3", map[string]int{"amount": 2}),
		cmd(c1, "add", "k3", map[string]int{"amount": 2}),
		other(cmd(c1, "add", "k3", map[string]int{"amount": 2})),
	}})
	check := func(name string, got, orig actor.Result, dup bool) {
		t.Helper()
		if got.Duplicate != dup || got.Replay == dup {
			t.Errorf("%s: duplicate %v replay %v, want duplicate %v replay %v", name, got.Duplicate, got.Replay, dup, !dup)
		}
		got.Duplicate, got.Replay = false, false
		if a, b := encodeResults(t, []actor.Result{orig}), encodeResults(t, []actor.Result{got}); !bytes.Equal(a[0], b[0]) {
			t.Errorf("%s: not the original result:\n got  %+v\n want %+v", name, got, orig)
		}
	}
	check("same id, later entry", again[0], first[0], false)
	check("other id, later entry", again[1], first[0], true)
	check("same id, stored conflict", again[2], first[1], false)
	check("other id, stored conflict", again[3], first[1], true)
	if again[4].Status != actor.StatusAccepted || again[4].Version != 2 || again[4].Replay || again[4].Duplicate {
		t.Fatalf("k3 first attempt: %+v", again[4])
	}
	check("same id, same entry", again[5], again[4], false)
	check("other id, same entry", again[6], again[4], true)

	if ent, _ := r.store.Entity(c1); ent.Version != 2 {
		t.Fatalf("entity at version %d after replays and duplicates, want 2", ent.Version)
	}
}
