package engine_test

import (
	"bytes"
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
)

// TestCache_WarmColdAndTinyCacheReplicasAgree applies random command
// sequences over every built-in actor to three replicas: the default cache,
// no cache (over memstore), and a cache of two entries (constant eviction) that also restarts
// (so goes cold) at random entries. Results and state hashes must be
// byte-identical after every entry: the cache may change only speed.
func TestCache_WarmColdAndTinyCacheReplicasAgree(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		reps := []*replica{
			newReplica(t, builtin.Registry()),
			newMemReplica(t, builtin.Registry(), engine.WithEntityCache(0, 0)),
			newReplica(t, builtin.Registry(), engine.WithEntityCache(2, 1<<20)),
		}
		for _, r := range reps {
			defer r.close()
		}
		var sent []modelCmd
		at := int64(1_000_000)
		n := 0
		entries := rapid.IntRange(1, 30).Draw(rt, "entries")
		for idx := uint64(1); idx <= uint64(entries); idx++ {
			at += rapid.Int64Range(0, 300).Draw(rt, "dt")
			ent := engine.Entry{Index: idx, At: at}
			for range rapid.IntRange(0, 6).Draw(rt, "batch") {
				n++
				c := genCommand(rt, n, sent)
				sent = append(sent, c)
				ent.Commands = append(ent.Commands, c.cmd)
			}
			if rapid.IntRange(0, 5).Draw(rt, "restart") == 0 {
				reps[2].restart()
			}
			want := encodeResults(t, reps[0].apply(ent))
			for ri, r := range reps[1:] {
				got := encodeResults(t, r.apply(ent))
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						rt.Fatalf("entry %d command %d: replica %d differs from the warm one", idx, i, ri+1)
					}
				}
				if r.eng.Meta() != reps[0].eng.Meta() {
					rt.Fatalf("entry %d: replica %d state hash differs from the warm one", idx, ri+1)
				}
			}
		}
	})
}

// TestCache_ReloadAfterRestoreForgetsCachedEntities restores an older
// snapshot under a warm engine: after Reload the engine must see the restored
// records, not the newer ones it cached, and end where a replica that never
// went past the snapshot ends.
func TestCache_ReloadAfterRestoreForgetsCachedEntities(t *testing.T) {
	c := addr("counter", "c")
	add := func(index uint64, key string) engine.Entry {
		return engine.Entry{Index: index, At: int64(1000 + index), Commands: []actor.Command{
			cmd(c, "add", key, map[string]int{"amount": 1})}}
	}
	r := newReplica(t, builtin.Registry())
	ref := newReplica(t, builtin.Registry())
	for i := uint64(1); i <= 3; i++ {
		r.apply(add(i, fmt.Sprint("a", i)))
		ref.apply(add(i, fmt.Sprint("a", i)))
	}
	snap, err := r.store.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	for i := uint64(4); i <= 6; i++ {
		if res := r.apply(add(i, fmt.Sprint("a", i))); res[0].Version != i {
			t.Fatalf("entry %d: version %d", i, res[0].Version)
		}
	}
	// The leader's log diverged from what this replica applied after 3.
	if err := r.store.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if err := r.eng.Reload(); err != nil {
		t.Fatal(err)
	}
	for i := uint64(4); i <= 6; i++ {
		got := r.apply(add(i, fmt.Sprint("b", i)))
		want := ref.apply(add(i, fmt.Sprint("b", i)))
		if got[0].Version != i || !bytes.Equal(encodeResults(t, got)[0], encodeResults(t, want)[0]) {
			t.Fatalf("entry %d after restore: %+v, want %+v", i, got[0], want[0])
		}
	}
	if r.eng.Meta() != ref.eng.Meta() {
		t.Fatal("state hash after restore and reload differs from a replica that never cached the newer state")
	}
}

// TestTimers_FireExactlyWhenDueAcrossRestart checks that skipping the due
// index when nothing can be due never delays a timer: ticks before the due
// time fire nothing, the first entry at the due time fires it, also when the
// replica restarted in between (the in-memory bound starts over).
func TestTimers_FireExactlyWhenDueAcrossRestart(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprint("restart=", restart), func(t *testing.T) {
			r := newReplica(t, builtin.Registry())
			l := addr("lock", "L")
			r.apply(engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{lockCmd(l, "acquire", "k1", "w1", 500)}})
			idx := uint64(1)
			tick := func(at int64) int {
				t.Helper()
				idx++
				out, err := r.eng.Apply(&engine.Entry{Index: idx, At: at})
				if err != nil {
					t.Fatal(err)
				}
				return out.TimersFired
			}
			for _, at := range []int64{1001, 1200, 1499} {
				if n := tick(at); n != 0 {
					t.Fatalf("tick at %d fired %d timers; due at 1500", at, n)
				}
			}
			if restart {
				r.restart()
			}
			if n := tick(1499); n != 0 {
				t.Fatalf("tick at 1499 after restart=%v fired %d", restart, n)
			}
			if n := tick(1500); n != 1 {
				t.Fatalf("tick at 1500 fired %d timers, want 1", n)
			}
			if n := tick(5000); n != 0 {
				t.Fatalf("tick at 5000 fired %d timers, want 0 (already fired)", n)
			}
			// A timer set by a later entry, due before anything seen so far
			// was, still fires on time.
			idx++
			r.apply(engine.Entry{Index: idx, At: 5001, Commands: []actor.Command{lockCmd(l, "acquire", "k2", "w2", 10)}})
			if n := tick(5010); n != 0 {
				t.Fatalf("tick at 5010 fired %d", n)
			}
			if n := tick(5011); n != 1 {
				t.Fatalf("tick at 5011 fired %d timers, want 1", n)
			}
		})
	}
}

// scribbler breaks the Behavior contract: it changes the state it is given
// in place, in Decide and in Evolve. The engine cannot stop that, but a warm
// cache must not turn it into a divergence from a cold replica.
type scribbler struct{}

func (scribbler) Type() string    { return "scribble" }
func (scribbler) Verbs() []string { return []string{"go", "peek"} }
func (scribbler) Decide(_ *actor.Context, state []byte, c *actor.Command) ([]actor.NewEvent, error) {
	if len(state) > 0 {
		state[0]++
	}
	if c.Verb() == "peek" {
		return nil, actor.Reject("peeked", "state %q", state)
	}
	return []actor.NewEvent{{Name: "went", Payload: append([]byte(nil), state...)}}, nil
}
func (scribbler) Evolve(state []byte, _ *actor.Event) ([]byte, error) {
	if len(state) == 0 {
		return []byte("aa"), nil
	}
	state[len(state)-1]++
	return state, nil
}

func TestCache_ActorMutatingItsStateCannotSplitWarmFromCold(t *testing.T) {
	reg, err := actor.NewRegistry(scribbler{})
	if err != nil {
		t.Fatal(err)
	}
	warm := newReplica(t, reg)
	cold := newReplica(t, reg, engine.WithEntityCache(0, 0))
	s := addr("scribble", "s")
	n := 0
	for idx := uint64(1); idx <= 10; idx++ {
		ent := engine.Entry{Index: idx, At: int64(idx)}
		for _, verb := range [][]string{{"peek"}, {"go", "peek"}, {"peek", "go"}}[idx%3] {
			n++
			ent.Commands = append(ent.Commands, cmd(s, verb, fmt.Sprint("k", n), nil))
		}
		w, c := encodeResults(t, warm.apply(ent)), encodeResults(t, cold.apply(ent))
		for i := range w {
			if !bytes.Equal(w[i], c[i]) {
				t.Fatalf("entry %d command %d: warm and cold replicas differ", idx, i)
			}
		}
		if warm.eng.Meta() != cold.eng.Meta() {
			t.Fatalf("entry %d: state hashes differ", idx)
		}
	}
}
